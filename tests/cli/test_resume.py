"""Training survives being killed: SIGKILL mid-epoch, then ``ckpt_path=last`` resumes.

Also: the same seed and data on the CPU give the same weights, embeddings and clusters, twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from morpho.data import GalaxyDataset
from morpho.data.errors import DataError
from morpho.data.sources import HDF5Source
from morpho.models import load_model
from morpho.models.checkpoint import read_checkpoint
from morpho.taxonomy import Taxonomy
from morpho.taxonomy.embed import embed_dataset

EPOCHS = 4


def _command(tmp_path: Path, simulated_file: Path, run: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "morpho.cli.train",
        f"data.source.path={simulated_file}",
        "data.prepare=null",
        "data.image_size=32",
        "data.batch_size=8",
        "model.encoder.channels=[8,16]",
        "model.encoder.embedding_dim=8",
        "model.projector=null",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.log_every_n_steps=1",
        "callbacks.progress_bar=null",
        "logger=csv",
        "test=false",
        f"hydra.run.dir={tmp_path / run}",
        *extra,
    ]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _saved_epoch(path: Path) -> int:
    """The epoch of a checkpoint being rewritten (-1 while it cannot be read yet)."""
    try:
        return int(read_checkpoint(path)["epoch"])
    except (DataError, FileNotFoundError):  # being written: not saved yet
        return -1


def _metrics(run_dir: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted(run_dir.glob("csv/*/metrics.csv"))]
    return pd.concat(frames, ignore_index=True)


def _train(tmp_path, simulated_file, run, *extra) -> subprocess.CompletedProcess:
    done = subprocess.run(
        _command(tmp_path, simulated_file, run, *extra),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path, simulated_file):
    reference = _train(tmp_path, simulated_file, "reference")
    assert reference.returncode == 0
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        _command(tmp_path, simulated_file, "killed"),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it with SIGKILL (no clean-up) a third of the way into its third epoch: the
    # epoch's length is measured between the first two epochs' checkpoints.
    seen: dict[int, float] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and 1 not in seen:
        if last.exists():
            seen.setdefault(_saved_epoch(last), time.monotonic())
        time.sleep(0.02)
    if 0 in seen and 1 in seen:
        time.sleep((seen[1] - seen[0]) / 3)
    assert process.poll() is None, "training ended before it could be killed: make it longer"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_at = read_checkpoint(last)["epoch"]
    assert killed_at < EPOCHS - 1  # it really was interrupted before the end

    _train(tmp_path, simulated_file, "killed", "ckpt_path=last")

    runs = sorted((tmp_path / "killed" / "csv").glob("version_*/metrics.csv"))
    resumed = pd.read_csv(runs[-1])  # the resumed run's log (the killed one's may be empty)
    uninterrupted = _metrics(tmp_path / "reference")
    # At most one epoch is lost: the resumed run starts with the epoch that was cut short,
    # right after the last saved one, and ends where an uninterrupted run ends.
    assert resumed["epoch"].min() == killed_at + 1
    assert read_checkpoint(last)["epoch"] == EPOCHS - 1
    val = resumed.dropna(subset=["val/loss"])
    final = val[val["epoch"] == EPOCHS - 1]["val/loss"].iloc[-1]
    expected = uninterrupted.dropna(subset=["val/loss"])["val/loss"].iloc[-1]
    # Within noise: the order of the batches after the restart may differ.
    assert final == pytest.approx(expected, rel=0.1)


@pytest.mark.slow
def test_same_seed_same_weights_embeddings_and_clusters(tmp_path, simulated_file):
    """Two trainings with the same seed and data: identical weights; the two models
    embed the 60 galaxies identically, and the taxonomies of those embeddings (seeded)
    give identical clusters, probabilities and maps."""
    for run in ("a", "b"):
        _train(tmp_path, simulated_file, run, "trainer.max_epochs=1")
    models = [load_model(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("a", "b")]
    a, b = (model.state_dict() for model in models)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    dataset = GalaxyDataset(HDF5Source(simulated_file), image_size=32)
    embeddings = [embed_dataset(model, dataset, batch_size=16)[2] for model in models]
    np.testing.assert_array_equal(embeddings[0], embeddings[1])
    assert np.unique(embeddings[0], axis=0).shape[0] == len(dataset)  # not all the same
    taxonomies = [
        Taxonomy(min_cluster_size=5, n_neighbors=10, random_state=0).fit(z) for z in embeddings
    ]
    for name in ("labels_", "probabilities_", "outlier_scores_", "embedding_2d_"):
        np.testing.assert_array_equal(getattr(taxonomies[0], name), getattr(taxonomies[1], name))


def test_resume_refuses_a_file_that_is_not_a_morpho_checkpoint(tmp_path, simulated_file):
    junk = tmp_path / "junk.ckpt"
    torch.save({"state_dict": {}}, junk)
    done = subprocess.run(
        _command(tmp_path, simulated_file, "junk", f"ckpt_path={junk}"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert f"{junk} is not a morpho checkpoint" in done.stderr
    assert "Traceback" not in done.stderr
