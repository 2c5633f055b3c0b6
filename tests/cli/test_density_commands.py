"""morpho-score, morpho-sample and morpho-complete on a tiny PixelCNN trained once."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from morpho.cli.complete import complete
from morpho.cli.sample import sample
from morpho.cli.score import score
from morpho.cli.train import train
from morpho.config import config_dir
from morpho.data.errors import DataError
from morpho.density.anomaly import surprise_map
from morpho.density.completion import make_mask
from morpho.density.generate import draw_samples
from morpho.density.score import SCORE_COLUMNS, iter_scores, score_dataset
from morpho.models import PixelCNNModule, load_model
from morpho.nets import PixelCNN

pytestmark = pytest.mark.usefixtures("one_thread")

N_GALAXIES, SIZE = 40, 16
TINY_DATA = [
    f"data.prepare.n_galaxies={N_GALAXIES}",
    "data.prepare.workers=1",
    f"data.image_size={SIZE}",
    f"data.prepare.spec.image_size={SIZE}",
]


def _compose(config_name: str, overrides: list[str], run_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A PixelCNN trained one epoch on 40 simulated 16×16 galaxies (read-only files)."""
    root = tmp_path_factory.mktemp("density")
    overrides = [
        "experiment=density",
        f"paths.data_dir={root / 'data'}",
        *TINY_DATA,
        "data.batch_size=16",
        "model.net.channels=8",
        "model.net.n_blocks=1",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar=null",
        "test=false",
    ]
    train(_compose("train", overrides, root / "run"))
    return {"ckpt": root / "run" / "checkpoints" / "last.ckpt", "data": root / "data"}


def _run(config_name: str, trained: dict[str, Path], out: Path, *overrides: str):
    command = {"score": score, "sample": sample, "complete": complete}[config_name]
    data = [f"paths.data_dir={trained['data']}", *TINY_DATA] if config_name == "score" else []
    cfg = _compose(
        config_name,
        [f"ckpt_path={trained['ckpt']}", f"output_dir={out}", *data, *overrides],
        out / "hydra",
    )
    return command(cfg)


def _galaxy_file(trained, path: Path, *, index: int = 3) -> np.ndarray:
    """Write galaxy ``index`` of the training file as a 2-D FITS stamp; return it (H, W)."""
    import h5py

    (h5,) = trained["data"].glob("*.h5")
    with h5py.File(h5) as file:
        image = np.asarray(file["images"][index, 0], dtype=np.float32)
    fits.PrimaryHDU(image).writeto(path)
    return image


# morpho-score ---------------------------------------------------------------------------


def test_score_writes_one_finite_row_per_image_in_dataset_order(trained, tmp_path):
    written = _run("score", trained, tmp_path, "split=all", "tables=[s.parquet,s.ecsv]", "show=4")
    table = pd.read_parquet(written["s.parquet"])
    assert len(table) == N_GALAXIES
    assert table["id"].is_unique
    np.testing.assert_array_equal(table["index"], np.arange(N_GALAXIES))
    columns = [*SCORE_COLUMNS, "baseline_bits_per_dim", "likelihood_ratio"]
    assert np.isfinite(table[columns].to_numpy()).all()
    np.testing.assert_allclose(
        table["likelihood_ratio"], table["baseline_bits_per_dim"] - table["bits_per_dim"]
    )
    assert (table["clipped_fraction"] == 0).all()
    assert (tmp_path / "s.ecsv").is_file()
    assert (tmp_path / "anomalies.png").stat().st_size > 1000
    with pytest.raises(FileExistsError, match="overwrite=true"):
        _run("score", trained, tmp_path, "split=all", "tables=[s.parquet]")


def test_score_likelihoods_are_the_models_own(trained):
    model = load_model(trained["ckpt"], kind="pixelcnn")
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.normal(0.0, 6.0, size=(3, 1, SIZE, SIZE)).astype(np.float32))
    items = [{"image": image, "id": f"g{i}", "index": i} for i, image in enumerate(images)]
    table = score_dataset(model, items, batch_size=2, n_draws=4)
    expected = model.log_likelihood(images)
    np.testing.assert_allclose(table["log_likelihood"], expected["log_likelihood"], rtol=1e-5)
    np.testing.assert_allclose(table["bits_per_dim"], expected["bits_per_dim"], rtol=1e-5)
    # The surprise map's log-probabilities are the model's own.
    levels = model.quantizer.quantize(images).levels
    log_prob, _, _ = surprise_map(model, levels, n_draws=4, seed=5)
    torch.testing.assert_close(log_prob, model.pixel_log_prob(levels))
    # symmetry=dihedral: the mixture's likelihood; the anomaly scores do not change.
    mixture = score_dataset(model, items, batch_size=2, n_draws=4, symmetry="dihedral")
    expected = model.log_likelihood(images, symmetry="dihedral")
    np.testing.assert_allclose(mixture["log_likelihood"], expected["log_likelihood"], rtol=1e-5)
    assert not np.allclose(mixture["log_likelihood"], table["log_likelihood"])
    pd.testing.assert_series_equal(mixture["local"], table["local"])
    with pytest.raises(
        ValueError, match=r"symmetry must be None \(null in a config\) or 'dihedral'"
    ):
        score_dataset(model, items, symmetry="mirror")


def test_a_galaxys_scores_do_not_depend_on_its_batch(trained):
    """The Monte-Carlo draws are seeded per galaxy (by ``seed`` and ``index``): scored in
    batches of 2 or of 5, or alone, a galaxy gets the same anomaly scores; another seed
    gives other draws."""
    model = load_model(trained["ckpt"], kind="pixelcnn")
    images = torch.from_numpy(
        np.random.default_rng(1).normal(0.0, 6.0, size=(5, 1, SIZE, SIZE)).astype(np.float32)
    )
    items = [{"image": image, "id": f"g{i}", "index": 10 + i} for i, image in enumerate(images)]
    columns = ["typicality", "local"]
    pairs = score_dataset(model, items, batch_size=2, n_draws=4)[columns]
    whole = score_dataset(model, items, batch_size=5, n_draws=4)[columns]
    alone = score_dataset(model, items[3:4], batch_size=1, n_draws=4)[columns]
    np.testing.assert_allclose(pairs, whole, rtol=1e-5, atol=1e-5)  # float32 network
    np.testing.assert_allclose(alone.iloc[0], whole.iloc[3], rtol=1e-5, atol=1e-5)
    other = score_dataset(model, items, batch_size=5, n_draws=4, seed=1)[columns]
    assert not np.allclose(other, whole, rtol=1e-3)


def test_score_reports_clipped_images(trained, caplog):
    model = load_model(trained["ckpt"], kind="pixelcnn")
    images = torch.zeros(3, 1, SIZE, SIZE)
    images[1, 0, 0, :4] = 1e6  # above the top level (65505 ADU): 4 of 256 pixels clipped
    items = [{"image": image, "id": f"g{i}", "index": i} for i, image in enumerate(images)]
    with caplog.at_level(logging.WARNING, logger="morpho.density.score"):
        table = score_dataset(model, items, batch_size=3, n_draws=2)
    np.testing.assert_allclose(table["clipped_fraction"], [0.0, 4 / 256, 0.0])
    assert "1 of 3 images have pixels outside the quantisation range" in caplog.text
    two_bands = [{"image": torch.zeros(2, SIZE, SIZE), "id": "g", "index": 0}]
    with pytest.raises(DataError, match="2 band"):
        next(iter_scores(model, two_bands))


# morpho-sample --------------------------------------------------------------------------


def test_sample_writes_the_requested_cube_deterministically(trained, tmp_path):
    first = _run("sample", trained, tmp_path / "a", "n=5", "batch_size=3", "seed=7")
    again = _run("sample", trained, tmp_path / "b", "n=5", "batch_size=3", "seed=7")
    other = _run("sample", trained, tmp_path / "c", "n=5", "batch_size=3", "seed=8")
    with fits.open(first["samples.fits"]) as hdul:
        cube, header = hdul[0].data, hdul[0].header
    assert cube.shape == (5, 1, SIZE, SIZE)
    assert cube.dtype == np.dtype(">f4")
    np.testing.assert_array_equal(cube, fits.getdata(again["samples.fits"]))
    assert not np.array_equal(cube, fits.getdata(other["samples.fits"]))
    assert header["SEED"] == 7
    assert header["LABEL"] == -1
    assert header["CACHED"] is True
    assert Path(header["CKPT"]) == trained["ckpt"].resolve()
    assert header["MORPHVER"]
    assert (header["QOFFSET"], header["QSTEP"], header["QNLEVELS"]) == (-30.0, 1.0, 65536)
    levels = (cube - header["QOFFSET"]) / header["QSTEP"]
    np.testing.assert_array_equal(levels, np.round(levels))
    assert first["samples.png"].stat().st_size > 1000


def test_sample_refuses_a_bad_number_or_label(trained, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    run = subprocess.run(
        [str(Path(sys.executable).parent / "morpho-sample"), "ckpt_path=x.ckpt", "n=0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "morpho-sample: error: n must be a positive integer, got 0" in run.stderr
    assert "Traceback" not in run.stderr
    with pytest.raises(ValueError, match=r"n must be a positive integer, got 2\.5"):
        _run("sample", trained, tmp_path, "n=2.5")
    with pytest.raises(ValueError, match=r"unconditional model.*drop label"):
        _run("sample", trained, tmp_path, "n=2", "label=1")


def test_label_conditioned_sampling_needs_a_seen_label():
    net = PixelCNN(in_channels=1, channels=4, n_blocks=1, n_mix=2, n_classes=3)
    model = PixelCNNModule(net, condition="label").eval()
    model.image_shape.copy_(torch.tensor([1, 4, 4]))
    model.label_counts.copy_(torch.tensor([5, 0, 2]))
    assert draw_samples(model, 3, label=2, batch_size=2).shape == (3, 1, 4, 4)
    with pytest.raises(
        ValueError, match=r"never seen in training; this model knows labels \[0, 2\]"
    ):
        draw_samples(model, 1, label=1)
    with pytest.raises(ValueError, match=r"conditioned on labels: pass label=, one of \[0, 2\]"):
        draw_samples(model, 1)


# morpho-complete ------------------------------------------------------------------------


def test_complete_redraws_only_the_masked_pixels(trained, tmp_path):
    image = _galaxy_file(trained, tmp_path / "galaxy.fits")
    written = _run(
        "complete",
        trained,
        tmp_path / "out",
        "image=" + str(tmp_path / "galaxy.fits"),
        "mask.rows_from=10",
        "mask.columns=[2]",
        "n_samples=3",
    )
    with fits.open(written["completions.fits"]) as hdul:
        cube, header, mask = hdul[0].data, hdul[0].header, hdul["MASK"].data.astype(bool)
        np.testing.assert_array_equal(hdul["ORIGINAL"].data[0], image)
    expected = np.zeros((SIZE, SIZE), dtype=bool)
    expected[10:], expected[:, 2] = True, True
    np.testing.assert_array_equal(mask, expected)
    assert header["NMASKED"] == expected.sum()
    assert cube.shape == (3, 1, SIZE, SIZE)
    model = load_model(trained["ckpt"], kind="pixelcnn")
    quantised = model.quantizer.dequantize(model.quantizer.quantize(image[None, None]).levels)
    kept = np.broadcast_to(quantised.numpy()[0, 0], (3, SIZE, SIZE))
    np.testing.assert_array_equal(cube[:, 0][:, ~mask], kept[:, ~mask])
    assert (cube[:, 0][:, mask] != kept[:, mask]).mean() > 0.5
    assert not np.array_equal(cube[0], cube[1])
    assert written["completions.png"].stat().st_size > 1000


def test_complete_refuses_bad_images_and_masks(trained, tmp_path):
    _galaxy_file(trained, tmp_path / "galaxy.fits")
    image = "image=" + str(tmp_path / "galaxy.fits")
    fits.PrimaryHDU(np.ones((SIZE - 1, SIZE))).writeto(tmp_path / "short.fits")
    fits.PrimaryHDU(np.zeros((SIZE, SIZE))).writeto(tmp_path / "empty.fits")
    fits.PrimaryHDU(np.zeros((2, SIZE, SIZE), dtype=np.float32)).writeto(tmp_path / "gr.fits")
    fits.PrimaryHDU(np.zeros((20, 20), dtype=np.float32)).writeto(tmp_path / "big.fits")
    cases = [
        ([image, f"mask.file={tmp_path / 'short.fits'}"], r"short\.fits holds an array of shape"),
        ([image, f"mask.file={tmp_path / 'empty.fits'}"], "the mask selects no pixel"),
        ([image], "nothing to redraw: set mask.file, mask.rows_from or mask.columns"),
        ([image, "mask.rows_from=16"], r"mask.rows_from must be a row in \[0, 15\]"),
        (["image=" + str(tmp_path / "gr.fits"), "mask.rows_from=8"], "2 band"),
        (["image=" + str(tmp_path / "big.fits"), "mask.rows_from=8"], "20×20 pixels"),
        (["image=" + str(tmp_path / "none.fits"), "mask.rows_from=8"], "does not exist"),
        ([image, "mask.rows_from=8", "n_samples=0"], "n_samples must be a positive integer"),
    ]
    for overrides, message in cases:
        with pytest.raises((ValueError, OSError), match=message):
            _run("complete", trained, tmp_path / "out", *overrides)


def test_make_mask_is_the_union_of_its_parts():
    mask = make_mask((4, 5), rows_from=3, columns=[0, 4])
    expected = np.zeros((4, 5), dtype=bool)
    expected[3], expected[:, 0], expected[:, 4] = True, True, True
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(ValueError, match=r"mask.columns must be columns in \[0, 4\], got 5"):
        make_mask((4, 5), columns=[5])


# Any command ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["score", "sample", "complete"])
def test_a_checkpoint_of_another_kind_is_refused(name, tmp_path):
    torch.save({"state_dict": {}, "morpho": {"kind": "autoencoder"}}, tmp_path / "ae.ckpt")
    fake = {"ckpt": tmp_path / "ae.ckpt", "data": tmp_path / "data"}
    extra = {"complete": ["image=x.fits", "mask.rows_from=1"]}.get(name, [])
    with pytest.raises(DataError, match="holds a morpho 'autoencoder' model, but a 'pixelcnn'"):
        _run(name, fake, tmp_path / "out", *extra)
    assert not (tmp_path / "data").exists(), "nothing may be simulated before the check"
