"""Taxonomy pictures are written, and the galaxies they show are chosen as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from morpho.taxonomy import Taxonomy
from morpho.taxonomy.plots import (
    plot_cluster_mosaic,
    plot_map,
    plot_outlier_mosaic,
    plot_tree,
    strongest_outliers,
    typical_members,
)
from morpho.taxonomy.tree import TREE_COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, figure: Figure) -> None:
    assert isinstance(figure, Figure)
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert path.stat().st_size > 5_000


def _hand_fitted(labels, probabilities, scores, tree=None) -> Taxonomy:
    """A taxonomy with hand-set fitted attributes (no UMAP, no HDBSCAN)."""
    taxonomy = Taxonomy()
    taxonomy.labels_ = np.asarray(labels)
    taxonomy.probabilities_ = np.asarray(probabilities, dtype=float)
    taxonomy.outlier_scores_ = np.asarray(scores, dtype=float)
    taxonomy.n_clusters_ = int(taxonomy.labels_.max()) + 1
    taxonomy.tree_ = tree
    return taxonomy


def test_typical_members_and_strongest_outliers() -> None:
    taxonomy = _hand_fitted(
        labels=[0, 0, 0, 1, 1, -1, 1],
        probabilities=[1.0, 1.0, 0.5, 0.9, 1.0, 0.0, 0.2],
        scores=[0.2, 0.1, 0.0, 0.3, 0.0, 0.9, 0.3],
    )
    typical = typical_members(taxonomy, 2)
    assert list(typical) == [0, 1]
    assert typical[0].tolist() == [1, 0]  # equal probability: lower outlier score first
    assert typical[1].tolist() == [4, 3]
    assert typical_members(taxonomy, 10)[1].tolist() == [4, 3, 6]
    assert strongest_outliers(taxonomy, 3).tolist() == [5, 3, 6]  # tie: index order
    with pytest.raises(ValueError, match=r"k must be a non-negative integer .*got -2"):
        strongest_outliers(taxonomy, -2)
    with pytest.raises(ValueError, match=r"k must be a non-negative integer .*got 2\.5"):
        typical_members(taxonomy, 2.5)


def test_map(fitted, tmp_path) -> None:
    path = tmp_path / "map.png"
    _assert_png(path, plot_map(fitted, path))


@pytest.mark.parametrize("height", ["lambda", "depth"])
def test_tree(fitted, tmp_path, height) -> None:
    path = tmp_path / "tree.png"
    _assert_png(path, plot_tree(fitted, path, height=height))


def test_tree_without_clusters(tmp_path) -> None:
    empty = pd.DataFrame(columns=TREE_COLUMNS)
    taxonomy = _hand_fitted([-1, -1], [0, 0], [1, 1], tree=empty)
    path = tmp_path / "empty.png"
    figure = plot_tree(taxonomy, path)
    assert "no clusters found" in [t.get_text() for t in figure.axes[0].texts]
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_tree_refuses_unknown_height(fitted, tmp_path) -> None:
    with pytest.raises(ValueError, match="height must be 'lambda' or 'depth', got 'age'"):
        plot_tree(fitted, tmp_path / "tree.png", height="age")


def test_mosaics(fitted, tmp_path) -> None:
    rng = np.random.default_rng(0)
    stamps = rng.normal(size=(12, 1, 24, 24)).astype(np.float32)
    typical = typical_members(fitted, 3)
    images = {label: stamps[: len(rows)] for label, rows in typical.items()}
    path = tmp_path / "members.png"
    _assert_png(path, plot_cluster_mosaic(images, path))
    outliers = strongest_outliers(fitted, 10)
    path = tmp_path / "outliers.png"
    figure = plot_outlier_mosaic(stamps[:10], fitted.outlier_scores_[outliers], path, per_row=4)
    _assert_png(path, figure)
    assert len(figure.axes) == 3 * 4


def test_outlier_mosaic_needs_one_score_per_image(tmp_path) -> None:
    with pytest.raises(ValueError, match="got 3 images but 2 scores"):
        plot_outlier_mosaic(np.zeros((3, 1, 8, 8)), [0.9, 0.8], tmp_path / "o.png")


def test_no_pyplot() -> None:
    """Importing the taxonomy's modules does not import pyplot (which picks a GUI backend)."""
    code = (
        "import sys, morpho.taxonomy.plots, morpho.taxonomy.io;"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
