"""The package as users get it: the wheel carries the configs, and metadata is valid."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_citation_file_is_valid_cff():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "version", "license"):
        assert citation[key], key


@pytest.mark.slow
def test_configs_work_from_a_regular_wheel_install(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("morpho-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n for n in names if n.startswith("morpho/conf/") and n.endswith(".yaml")}
    in_repo = {
        f"morpho/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert shipped == in_repo
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # a wheel is a zip of the installed tree
    probe = (
        "import morpho, morpho.config as c;"
        "from hydra import compose, initialize_config_dir;"
        "initialize_config_dir(config_dir=c.config_dir(), version_base='1.3');"
        "cfg = compose('inspect');"
        "print(morpho.__file__); print(c.config_dir()); print(cfg.data.image_size)"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    module_file, conf, image_size = run.stdout.split()
    assert module_file.startswith(str(site))
    assert conf == str(site / "morpho" / "conf")
    assert image_size == "64"
