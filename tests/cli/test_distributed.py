"""Real two-process data-parallel training on CPU (gloo), as a user launches it.

Each training runs ``morpho-train trainer=ddp_cpu`` in a subprocess whose environment
holds none of the variables that describe a distributed job (``LOCAL_RANK``,
``MASTER_PORT``, ...; see :func:`_clean_env`): Lightning's ``ddp`` launcher starts rank 1
by re-running the command line, which inside pytest would be pytest itself, and leaves
those variables behind for the next test. Every run gets a free ``MASTER_PORT`` and runs
in its own process group, killed as a whole on timeout, so no rank outlives its test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits

from morpho.data.simulate import SimulationSpec, simulate_to_hdf5
from morpho.models import read_checkpoint
from morpho.sharding import part_paths

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
# Variables of a distributed job, which must not leak from this process into the runs.
DISTRIBUTED_VARS = (
    "LOCAL_RANK",
    "RANK",
    "GROUP_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)
DISTRIBUTED_PREFIXES = ("PL_", "TORCHELASTIC_", "SLURM_", "HYDRA_")
TIMEOUT_S = 240

COMMON = [
    "trainer=ddp_cpu",
    "callbacks=ddp_check",
    "callbacks.progress_bar=null",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "data.prepare=null",
    "data.image_size=32",
    "data.batch_size=8",
    "data.num_workers=0",
]
TINY_MODEL = {
    "autoencoder": [
        "data.label_key=null",
        "model.encoder.channels=[4,8]",
        "model.encoder.embedding_dim=4",
        "model.projector.hidden_dim=16",
        "model.projector.out_dim=16",
    ],
    "pixelcnn": ["experiment=density", "model.net.channels=8", "model.net.n_blocks=1"],
    "sersic": ["experiment=sersic", "model.encoder.channels=[4,8,16]", "model.head.in_dim=256"],
}


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory) -> Path:
    """48 single-Sérsic galaxies at 32×32 pixels with truth columns, for every model
    (read-only): 38 train, 5 val and 5 test galaxies, so 3 training steps per rank."""
    spec = SimulationSpec(mode="single_sersic", image_size=32, snr=(30.0, 200.0), r_e=(1.5, 5.0))
    path = tmp_path_factory.mktemp("ddp_data") / "galaxies.h5"
    return simulate_to_hdf5(path, n_galaxies=48, spec=spec, seed=1, workers=1, progress=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """This process's environment without any distributed-job variable, one thread per
    rank, a free MASTER_PORT, and the repository on PYTHONPATH (for ``tests.cli``)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in DISTRIBUTED_VARS and not key.startswith(DISTRIBUTED_PREFIXES)
    }
    env["MASTER_PORT"] = str(_free_port())
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``morpho-train *args`` in ``cwd``; fail the test (killing every rank) on timeout."""
    return _morpho("morpho-train", *args, cwd=cwd)


def _morpho(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command *args`` in ``cwd``; fail the test (killing every rank) on timeout."""
    exe = BIN / command
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install morpho (make install) before running the tests")
    with subprocess.Popen(
        [str(exe), *args],
        cwd=cwd,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{command} hung for {TIMEOUT_S} s:\n{stderr[-3000:]}")
    _assert_no_rank_left(proc.pid, command)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _assert_no_rank_left(group: int, command: str) -> None:
    """Fail if a process of ``group`` still runs a second after ``command`` ended."""
    for _ in range(10):
        if not _running_members(group):
            return
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
    pytest.fail(f"a rank was still running after {command} had ended")


def _running_members(group: int) -> list[int]:
    """Processes of process group ``group`` that run (zombies, which an init process
    may be slow to reap, do not count). Linux: read from /proc; elsewhere: none."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _digests(run: Path) -> list[str]:
    return [(run / f"weights_rank{r}.txt").read_text().strip() for r in (0, 1)]


@pytest.mark.parametrize("model", ["autoencoder", "pixelcnn", "sersic"])
def test_two_ranks_train_in_one_run_directory(model, galaxies, tmp_path):
    """Both ranks train and test (exit 0), end with identical weights and buffers, and
    share the one time-stamped run directory that Hydra made for rank 0; the checkpoint
    loads with ``weights_only=True``."""
    result = _train(*TINY_MODEL[model], *COMMON, f"data.source.path={galaxies}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, f"expected one run directory, found {runs}"
    run = runs[0]
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1 logged into rank 0's folder
    rank0, rank1 = _digests(run)
    assert len(rank0) == 64
    assert rank0 == rank1, "the ranks hold different weights after training"
    log = (run / "train.log").read_text()
    assert "Effective batch size 16 = 8 per device × 2 device(s) × 1 node(s)" in log
    columns = (run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert {"train/loss", "val/loss", "test/loss"} <= set(columns.split(","))
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["morpho"]["kind"] == model
    assert not list(tmp_path.glob("*.ckpt")), "no file may be written outside the run directory"
    if model == "sersic":
        _assert_ranges_cover_every_rank(run / "checkpoints" / "last.ckpt", galaxies, tmp_path)


def _assert_ranges_cover_every_rank(checkpoint: Path, galaxies: Path, tmp_path: Path) -> None:
    """The Sérsic model's training ranges (used to flag out-of-range inputs) span what
    both ranks saw: the same as one process that sees every training galaxy."""
    args = [a for a in COMMON if not a.startswith(("trainer=", "callbacks="))]
    single = _train(
        *TINY_MODEL["sersic"],
        *args,
        "trainer=cpu",
        "callbacks=default",
        "callbacks.progress_bar=null",
        f"data.source.path={galaxies}",
        "test=false",
        "hydra.run.dir=single",
        cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    ranges = [
        read_checkpoint(path)["state_dict"]["train_range"]
        for path in (checkpoint, tmp_path / "single" / "checkpoints" / "last.ckpt")
    ]
    assert torch.isfinite(ranges[0]).all()
    torch.testing.assert_close(ranges[0], ranges[1])


def test_a_sweep_runs_each_job_with_spawned_ranks(galaxies, tmp_path):
    """``-m`` with two learning rates and ``ddp_spawn``: exactly two runs, each with its
    checkpoint and equal digests of its two ranks."""
    result = _train(
        "-m",
        *TINY_MODEL["autoencoder"],
        *COMMON,
        "trainer.strategy=ddp_spawn",
        f"data.source.path={galaxies}",
        "test=false",
        "hydra.sweep.dir=sweep",
        "model.optimizer.lr=1e-3,2e-3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert runs == ["0", "1"]
    assert not (tmp_path / "outputs").exists()
    digests = []
    for run, lr in zip(runs, ("0.001", "0.002"), strict=True):
        folder = tmp_path / "sweep" / run
        assert f"model.optimizer.lr={lr}" in (folder / ".hydra" / "overrides.yaml").read_text()
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        rank0, rank1 = _digests(folder)
        assert rank0 == rank1
        digests.append(rank0)
    assert digests[0] != digests[1]


def test_a_sweep_with_the_rerunning_ddp_launcher_is_refused(galaxies, tmp_path):
    """With ``strategy=ddp`` every extra rank would re-run the whole sweep: refused."""
    result = _train(
        "-m",
        *TINY_MODEL["autoencoder"],
        *COMMON,
        f"data.source.path={galaxies}",
        "model.optimizer.lr=1e-3,2e-3",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "cannot use strategy=ddp on one machine" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "sweep").rglob("*.ckpt"))


@pytest.mark.parametrize("rank", [1, 0])
def test_a_failing_rank_ends_the_whole_job(rank, galaxies, tmp_path):
    """One rank raises in its second step; the job exits non-zero with that error, and
    no rank is left waiting for it (the test's timeout would catch a hang)."""
    result = _train(
        *TINY_MODEL["autoencoder"],
        *COMMON,
        f"data.source.path={galaxies}",
        "+callbacks.fail._target_=tests.cli.ddp_faults.FailOnRank",
        f"+callbacks.fail.rank={rank}",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert f"rank {rank} fails on purpose" in result.stderr


# Inference split across ranks ------------------------------------------------------------

INFERENCE = {
    "autoencoder": ("morpho-embed", "output={out}"),
    "pixelcnn": ("morpho-score", "output_dir={out}"),
}


@pytest.fixture(scope="module")
def checkpoints(galaxies, tmp_path_factory) -> dict[str, Path]:
    """An autoencoder and a PixelCNN trained one epoch in one process (read-only)."""
    root = tmp_path_factory.mktemp("inference_models")
    args = [a for a in COMMON if not a.startswith(("trainer=", "callbacks="))]
    paths = {}
    for model in INFERENCE:
        result = _train(
            *TINY_MODEL[model],
            *args,
            "trainer=cpu",
            "callbacks=default",
            "callbacks.progress_bar=null",
            f"data.source.path={galaxies}",
            "test=false",
            f"hydra.run.dir={model}",
            cwd=root,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        paths[model] = root / model / "checkpoints" / "last.ckpt"
    return paths


def _infer(model: str, trainer: str, data: list[str], ckpt: Path, out: Path, cwd: Path):
    command, output = INFERENCE[model]
    extra = ["n_draws=4", "baseline_images=20", "tables=[scores.parquet]"]
    return _morpho(
        command,
        f"ckpt_path={ckpt}",
        f"trainer={trainer}",
        *data,
        "data.image_size=32",
        "data.num_workers=0",
        "split=all",
        "batch_size=5",
        *(extra if model == "pixelcnn" else []),
        output.format(out=out),
        f"hydra.run.dir={out.name}_run",
        cwd=cwd,
    )


def _table(model: str, out: Path) -> pd.DataFrame:
    return pd.read_parquet(out if model == "autoencoder" else out / "scores.parquet")


@pytest.mark.parametrize(
    ("model", "strategy"),
    [("autoencoder", "ddp"), ("pixelcnn", "ddp"), ("autoencoder", "ddp_spawn")],
)
def test_two_ranks_write_the_table_of_one_process(model, strategy, galaxies, checkpoints, tmp_path):
    """48 galaxies in batches of 5 (10 batches: 25 and 23 galaxies per rank): the table
    that two ranks write equals the one-process table exactly, row for row; part files
    that a killed earlier run left are not joined, and none is left behind."""
    data = [f"data.source.path={galaxies}", "data.prepare=null"]
    if model == "autoencoder":
        data.append("data.label_key=null")
    tables = {}
    for trainer, name in (("cpu", "one"), ("ddp_cpu", "two")):
        out = tmp_path / (f"{name}.parquet" if model == "autoencoder" else name)
        table_path = out if model == "autoencoder" else out / "scores.parquet"
        for stale in part_paths(table_path, 2) if trainer == "ddp_cpu" else []:
            stale.parent.mkdir(parents=True, exist_ok=True)  # as a killed run leaves them
            pd.DataFrame({"id": ["stale"]}).to_parquet(stale)
        spawn = [f"trainer.strategy={strategy}"] if trainer == "ddp_cpu" else []
        result = _infer(model, trainer, [*data, *spawn], checkpoints[model], out, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        tables[name] = _table(model, out)
    assert len(tables["one"]) == 48
    np.testing.assert_array_equal(tables["two"]["index"], np.arange(48))
    pd.testing.assert_frame_equal(tables["two"], tables["one"], check_exact=True)
    assert not list(tmp_path.rglob("*.parts")), "part files were left behind"
    command = INFERENCE[model][0].removeprefix("morpho-")
    run = tmp_path / ("two.parquet_run" if model == "autoencoder" else "two_run")
    log = (run / f"{command}.log").read_text()
    assert "48 galaxies" in log
    assert "on 2 rank(s)" in log
    if strategy == "ddp":  # rank 1 re-ran the command, logging into the same folder
        assert (run / "train_ddp_process_1.log").is_file()


def _stamp_folder(galaxies: Path, folder: Path, *, bad: str) -> Path:
    """Twelve galaxies of ``galaxies`` as FITS stamps ``g00`` ... ``g11``, and a corrupt
    file named ``bad`` (sorted first, it falls in rank 0's share; last, in rank 1's)."""
    folder.mkdir()
    with h5py.File(galaxies) as h5:
        images = np.asarray(h5["images"][:12], dtype=np.float32)
    for i, image in enumerate(images):
        fits.PrimaryHDU(image[0]).writeto(folder / f"g{i:02d}.fits")
    (folder / bad).write_bytes(b"SIMPLE  = this is not a FITS file")
    return folder


@pytest.mark.parametrize(("bad", "rank"), [("a_bad.fits", 0), ("z_bad.fits", 1)])
def test_a_failing_inference_rank_ends_the_whole_job(bad, rank, galaxies, checkpoints, tmp_path):
    """A corrupt stamp in one rank's share: the job exits non-zero naming the file, no rank
    is left waiting at the barrier, and no table is written."""
    folder = _stamp_folder(galaxies, tmp_path / "stamps", bad=bad)
    data = ["data=fits", f"data.source.path={folder}"]
    out = tmp_path / "embeddings.parquet"
    result = _infer("autoencoder", "ddp_cpu", data, checkpoints["autoencoder"], out, tmp_path)
    assert result.returncode != 0
    assert bad in result.stderr, result.stderr[-3000:]
    assert not out.exists()
