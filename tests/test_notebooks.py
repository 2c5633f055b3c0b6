"""The notebooks: paired with their scripts, free of library code, and run on tiny settings.

Each notebook ``notebooks/NN_name.ipynb`` is paired with the jupytext percent script
``NN_name.py`` (``jupytext --sync notebooks/NN_name.py`` after editing either), is stored
without outputs, and is executed here by nbmake with ``MORPHO_NOTEBOOK_TINY=1``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SCRIPTS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
# A notebook may define small display helpers, never library code (STYLE.md, habit 8).
MAX_HELPER_LINES = 20
# What the notebooks import beyond morpho's own dependencies (the "notebooks" extra).
NOTEBOOK_PACKAGES = ("ipykernel", "statmorph", "photutils", "skimage")
# Left behind by distributed runs of other tests; a child process must not inherit them.
DISTRIBUTED_VARIABLES = (
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_every_notebook_has_its_script():
    notebooks = sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))
    assert len(SCRIPTS) >= 4
    assert notebooks == [path.stem for path in SCRIPTS], (
        "every notebooks/NN_name.ipynb needs its jupytext script NN_name.py and back: "
        "run `jupytext --set-formats ipynb,py:percent notebooks/NN_name.py`"
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_pair_is_in_sync_and_has_no_outputs(script):
    notebook = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert _cells(notebook) == _cells(jupytext.read(script)), (
        f"{script.name} and its .ipynb differ: run `jupytext --sync {script.relative_to(ROOT)}`"
    )
    with_outputs = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not with_outputs, (
        f"{script.with_suffix('.ipynb').name} is stored with outputs in cells {with_outputs}: "
        "clear them (`jupyter nbconvert --clear-output --inplace`) before committing"
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_notebook_defines_no_library_code(script):
    source = script.read_text(encoding="utf-8")
    tree = ast.parse(source)
    classes = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert not classes, f"{script.name} defines classes {classes}: move them into morpho"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_HELPER_LINES, (
                f"{script.name}: {node.name}() has {lines} lines; a notebook keeps only small "
                f"display helpers (<= {MAX_HELPER_LINES} lines): move it into morpho"
            )
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert any(module and module.startswith("morpho") for module in modules)
    assert 'os.environ.get("MORPHO_NOTEBOOK_TINY") == "1"' in source


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_notebook_runs_on_tiny_settings(script, tmp_path):
    """nbmake executes the notebook in a fresh kernel; its files go under ``tmp_path``."""
    missing = [name for name in NOTEBOOK_PACKAGES if importlib.util.find_spec(name) is None]
    assert not missing, f"the notebooks need {missing}: pip install -e '.[test,notebooks]'"
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    env.update(MORPHO_NOTEBOOK_TINY="1", TMPDIR=str(tmp_path))
    command = [sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=600"]
    command += ["-p", "no:cacheprovider", "-q", str(script.with_suffix(".ipynb"))]
    run = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert run.returncode == 0, f"{script.with_suffix('.ipynb').name} failed:\n{run.stdout[-6000:]}"
