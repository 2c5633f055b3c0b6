"""The console scripts, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest

BIN = Path(sys.executable).parent


def _run(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = BIN / command
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install morpho (make install) before running the tests")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_simulate_then_inspect(tmp_path):
    sim = _run(
        "morpho-simulate",
        "n_galaxies=8",
        "workers=1",
        "output=galaxies.h5",
        "simulation.image_size=24",
        "progress=false",
        cwd=tmp_path,
    )
    assert sim.returncode == 0, sim.stderr
    with h5py.File(tmp_path / "galaxies.h5") as h5:
        assert h5["images"].shape == (8, 1, 24, 24)
    assert list((tmp_path / "outputs" / "simulate").glob("*/.hydra/config.yaml"))
    out = _run(
        "morpho-inspect",
        "data.source.path=galaxies.h5",
        "data.prepare=null",
        "data.image_size=24",
        "output_dir=report",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["n_galaxies"] == 8
    assert summary["image_shape"] == [1, 24, 24]
    assert (tmp_path / "report" / "mosaic_by_class.png").stat().st_size > 1000


def test_user_errors_are_one_clear_line(tmp_path):
    bad_n = _run("morpho-simulate", "n_galaxies=0", "output=x.h5", cwd=tmp_path)
    assert bad_n.returncode == 2
    assert "morpho-simulate: error: n_galaxies must be a positive integer, got 0" in bad_n.stderr
    assert "Traceback" not in bad_n.stderr
    missing = _run("morpho-inspect", "data=fits", "data.source.path=no_such_folder", cwd=tmp_path)
    assert missing.returncode == 2
    assert "no_such_folder" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.slow
def test_train_embed_cluster_assign(tmp_path):
    tiny = [
        "paths.data_dir=data",
        "data.prepare.n_galaxies=120",
        "data.prepare.workers=1",
        "data.image_size=32",
        "data.prepare.spec.image_size=32",
    ]
    trained = _run(
        "morpho-train",
        *tiny,
        "trainer.max_epochs=1",
        "model.encoder.channels=[4,8]",
        "model.encoder.embedding_dim=4",
        "callbacks.progress_bar=null",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    embedded = _run(
        "morpho-embed", *tiny, f"ckpt_path={checkpoint}", "output=emb.parquet", cwd=tmp_path
    )
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "emb.parquet")
    assert len(table) == 120
    assert table["id"].is_unique
    clustered = _run(
        "morpho-cluster",
        *tiny,
        "embeddings=emb.parquet",
        "output_dir=tax",
        "taxonomy.min_cluster_size=10",
        "taxonomy.n_neighbors=10",
        cwd=tmp_path,
    )
    assert clustered.returncode == 0, clustered.stderr[-3000:]
    taxonomy = pd.read_parquet(tmp_path / "tax" / "taxonomy.parquet")
    assert len(taxonomy) == 120
    assert {"id", "cluster", "probability", "outlier_score", "map_x", "map_y", "parent"} <= set(
        taxonomy.columns
    )
    for picture in ("map.png", "tree.png", "typical_members.png", "outliers.png"):
        assert (tmp_path / "tax" / picture).stat().st_size > 1000, picture
    assigned = _run(
        "morpho-assign",
        "taxonomy_path=tax/taxonomy.morpho",
        "embeddings=emb.parquet",
        "output=assigned.parquet",
        cwd=tmp_path,
    )
    assert assigned.returncode == 0, assigned.stderr[-3000:]
    again = pd.read_parquet(tmp_path / "assigned.parquet")
    confident = taxonomy["probability"].to_numpy() > 0.9
    agree = again["cluster"].to_numpy()[confident] == taxonomy["cluster"].to_numpy()[confident]
    assert agree.mean() > 0.9


def test_embedding_a_wrong_kind_of_checkpoint_is_refused(tmp_path):
    import torch

    torch.save({"state_dict": {}, "morpho": {"kind": "pixelcnn"}}, tmp_path / "p.ckpt")
    run = _run("morpho-embed", "ckpt_path=p.ckpt", cwd=tmp_path)
    assert run.returncode == 2
    assert "holds a morpho 'pixelcnn' model, but a 'autoencoder' model is needed" in run.stderr


@pytest.mark.slow
def test_train_sersic_then_fit(tmp_path):
    tiny = [
        "paths.data_dir=data",
        "data.prepare.n_galaxies=80",
        "data.prepare.workers=1",
        "data.image_size=32",
        "data.prepare.spec.image_size=32",
        "data.prepare.spec.r_e=[1.5,5.0]",
    ]
    trained = _run(
        "morpho-train",
        "experiment=sersic",
        *tiny,
        "data.num_workers=0",
        "trainer.max_epochs=2",
        "model.encoder.channels=[4,8,16]",
        "model.head.in_dim=256",
        "callbacks.progress_bar=null",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    from morpho.models import read_checkpoint

    assert read_checkpoint(checkpoint)["epoch"] == 1  # the final epoch, whatever val/loss did
    fitted = _run(
        "morpho-fit",
        *tiny,
        f"ckpt_path={checkpoint}",
        "output_dir=fit",
        "show=3",
        "zeropoint=25",
        "tables=[sersic.parquet,sersic.ecsv,sersic.fits]",
        cwd=tmp_path,
    )
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "fit" / "sersic.parquet")
    assert len(table) == 80
    assert table["id"].is_unique
    assert {"flux", "r_e_pix", "r_e_arcsec", "n", "q", "pa_deg", "mag", "out_of_range"} <= set(
        table.columns
    )
    from astropy.table import Table

    ecsv = Table.read(tmp_path / "fit" / "sersic.ecsv")
    assert str(ecsv["r_e_arcsec"].unit) == "arcsec"
    assert len(ecsv) == 80
    assert len(Table.read(tmp_path / "fit" / "sersic.fits")) == 80
    for picture in ("residuals.png", "predicted_vs_true.png"):
        assert (tmp_path / "fit" / picture).stat().st_size > 1000, picture
    # One PSF image for every galaxy, from a FITS file; a file that is not normalised
    # is refused, naming the file.
    import numpy as np
    from astropy.io import fits

    from morpho.sersic import gaussian_psf

    fits.PrimaryHDU(gaussian_psf(4.0, size=25)).writeto(tmp_path / "psf.fits")
    with_psf = _run(
        "morpho-fit",
        *tiny,
        f"ckpt_path={checkpoint}",
        "psf_file=psf.fits",
        "split=test",
        "output_dir=fit_psf",
        "refine_steps=1",
        cwd=tmp_path,
    )
    assert with_psf.returncode == 0, with_psf.stderr[-3000:]
    refined = pd.read_parquet(tmp_path / "fit_psf" / "sersic.parquet")
    assert len(refined) == 8
    assert refined["refined"].dtype == bool
    # The refinement with the PSFs the simulation stored, galaxy by galaxy.
    stored = _run(
        "morpho-fit",
        *tiny,
        f"ckpt_path={checkpoint}",
        "split=test",
        "output_dir=fit_stored",
        "refine_steps=1",
        "gain=1.0",
        cwd=tmp_path,
    )
    assert stored.returncode == 0, stored.stderr[-3000:]
    assert "refined" in pd.read_parquet(tmp_path / "fit_stored" / "sersic.parquet")
    fits.PrimaryHDU(np.full((5, 5), 0.1)).writeto(tmp_path / "bad_psf.fits")
    bad = _run(
        "morpho-fit", *tiny, f"ckpt_path={checkpoint}", "psf_file=bad_psf.fits", cwd=tmp_path
    )
    assert bad.returncode == 2
    assert "bad_psf.fits" in bad.stderr
    assert "Traceback" not in bad.stderr
    # An autoencoder checkpoint is not a Sérsic model.
    import torch

    torch.save({"state_dict": {}, "morpho": {"kind": "autoencoder"}}, tmp_path / "ae.ckpt")
    wrong = _run("morpho-fit", *tiny, "ckpt_path=ae.ckpt", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "holds a morpho 'autoencoder' model, but a 'sersic' model is needed" in wrong.stderr


def test_stored_psfs_are_checked_naming_the_file_and_row():
    """morpho-fit's refinement reads the simulator's per-galaxy PSFs; a broken one is
    refused with the file, the dataset and its row (not after a silent failed step)."""
    from types import SimpleNamespace

    import numpy as np

    from morpho.cli.fit import _stored_psfs
    from morpho.data.errors import DataError
    from morpho.sersic import gaussian_psf

    psfs = np.stack([gaussian_psf(3.0 + i / 4, size=11) for i in range(6)])[:, None]
    source = SimpleNamespace(path=Path("galaxies.h5"), read_array=lambda key, rows: psfs[rows])
    dm = SimpleNamespace(source=source)
    rows = np.array([4, 1, 4])
    np.testing.assert_allclose(_stored_psfs(dm, rows), psfs[rows, 0])
    psfs[4, 0, 5, 5] = np.nan
    with pytest.raises(DataError, match=r"galaxies.h5: dataset 'psf' \(PSF 4\): .*NaN"):
        _stored_psfs(dm, rows)
