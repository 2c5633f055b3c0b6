"""The console scripts, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
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
