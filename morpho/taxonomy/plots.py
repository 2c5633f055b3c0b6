"""Pictures of a taxonomy: the map, the tree, and mosaics of members and outliers.

Figures are :class:`matplotlib.figure.Figure` objects (never pyplot), saved
atomically with :func:`morpho.plotting.save_figure`; each function also returns
its figure.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.utils.validation import check_is_fitted

from morpho.plotting import save_figure, save_mosaic
from morpho.taxonomy.clusterer import Taxonomy

__all__ = [
    "plot_cluster_mosaic",
    "plot_map",
    "plot_outlier_mosaic",
    "plot_tree",
    "strongest_outliers",
    "typical_members",
]

NOISE_COLOUR = "0.75"


def cluster_colour(label: int) -> tuple[float, float, float, float]:
    """The colour of cluster ``label`` in every taxonomy picture (grey for noise)."""
    if label < 0:
        return (0.75, 0.75, 0.75, 1.0)
    return colormaps["tab20"](label % 20)


# Choosing the galaxies to show ------------------------------------------------------------


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer (galaxies to show), got {k!r}")


def typical_members(taxonomy: Taxonomy, k: int) -> dict[int, np.ndarray]:
    """The ``k`` most typical training galaxies of each cluster.

    Members are ranked by membership probability (highest first), ties broken
    by GLOSH outlier score (lowest first), then by index.

    Parameters
    ----------
    taxonomy : Taxonomy
        A fitted taxonomy.
    k : int
        Galaxies per cluster (fewer if a cluster is smaller).

    Returns
    -------
    dict
        For each cluster label, a (≤ k,) int array of row indices into the
        training set.

    Raises
    ------
    ValueError
        If ``k`` is negative.
    """
    check_is_fitted(taxonomy)
    _check_k(k)
    order = np.lexsort((taxonomy.outlier_scores_, -taxonomy.probabilities_))
    ranked = taxonomy.labels_[order]
    return {label: order[ranked == label][:k] for label in range(taxonomy.n_clusters_)}


def strongest_outliers(taxonomy: Taxonomy, k: int) -> np.ndarray:
    """Row indices of the ``k`` training galaxies with the highest outlier scores.

    Returns
    -------
    (k,) int
        Strongest first; ties in index order.

    Raises
    ------
    ValueError
        If ``k`` is negative.
    """
    check_is_fitted(taxonomy)
    _check_k(k)
    return np.argsort(-taxonomy.outlier_scores_, kind="stable")[:k]


# Map and tree ---------------------------------------------------------------------------


def plot_map(taxonomy: Taxonomy, path: str | os.PathLike, *, point_size: float = 3.0) -> Figure:
    """Save the 2-D map of the training galaxies, coloured by cluster.

    Noise is grey; each cluster's number sits at the median position of its members.

    Parameters
    ----------
    taxonomy : Taxonomy
        A fitted taxonomy.
    path : str or path-like
        Output image (PNG, PDF, SVG, ...).
    point_size : float
        Marker area in points².

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_is_fitted(taxonomy)
    xy = taxonomy.embedding_2d_[:, :2]
    labels = taxonomy.labels_
    figure = Figure(figsize=(7, 6))
    ax = figure.subplots()
    noise = labels < 0
    ax.scatter(*xy[noise].T, s=point_size, c=NOISE_COLOUR, linewidths=0, label="noise")
    for label in range(taxonomy.n_clusters_):
        members = xy[labels == label]
        ax.scatter(*members.T, s=point_size, color=cluster_colour(label), linewidths=0)
        x, y = np.median(members, axis=0)
        ax.text(x, y, str(label), ha="center", va="center", fontsize=10, weight="bold")
    ax.set_xlabel("map x")
    ax.set_ylabel("map y")
    ax.set_title(
        f"{taxonomy.n_clusters_} clusters, {noise.mean():.0%} noise ({len(labels)} galaxies)"
    )
    ax.set_aspect("equal", adjustable="datalim")
    save_figure(figure, path)
    return figure


def _node_positions(tree: pd.DataFrame) -> dict[int, float]:
    """x of every node: leaves at 0, 1, 2, ... in depth-first order, parents centred."""
    children: dict[int, list[int]] = {int(n): [] for n in tree["node"]}
    for node, parent in zip(tree["node"], tree["parent"], strict=True):
        if parent >= 0:
            children[int(parent)].append(int(node))
    x: dict[int, float] = {}
    n_leaves = 0
    stack = [(int(root), False) for root in tree.loc[tree["parent"] < 0, "node"][::-1]]
    while stack:
        node, children_placed = stack.pop()
        kids = children[node]
        if not kids:
            x[node] = float(n_leaves)
            n_leaves += 1
        elif children_placed:
            x[node] = float(np.mean([x[kid] for kid in kids]))
        else:
            stack.append((node, True))
            stack.extend((kid, False) for kid in reversed(kids))
    return x


def plot_tree(taxonomy: Taxonomy, path: str | os.PathLike, *, height: str = "lambda") -> Figure:
    """Save the taxonomy tree as a dendrogram.

    Each node is a vertical line starting at its birth; a horizontal line joins
    the children where the parent splits. Leaves are labelled with their
    cluster number and size.

    Parameters
    ----------
    taxonomy : Taxonomy
        A fitted taxonomy.
    path : str or path-like
        Output image.
    height : {"lambda", "depth"}
        Vertical axis: λ_birth (1 / distance, growing downwards) or depth in the tree.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``height`` is neither "lambda" nor "depth".
    """
    check_is_fitted(taxonomy)
    if height not in ("lambda", "depth"):
        raise ValueError(f"height must be 'lambda' or 'depth', got {height!r}")
    tree = taxonomy.tree_
    figure = Figure(figsize=(max(5.0, 0.6 * len(tree)), 5))
    ax = figure.subplots()
    if tree.empty:
        ax.text(0.5, 0.5, "no clusters found", ha="center", va="center", transform=ax.transAxes)
        save_figure(figure, path)
        return figure
    y = dict(
        zip(tree["node"], tree["lambda_birth" if height == "lambda" else "depth"], strict=True)
    )
    x = _node_positions(tree)
    stub = 0.08 * (max(y.values()) or 1.0)
    for row in tree.itertuples():
        kids = tree[tree["parent"] == row.node]
        end = kids["node"].map(y).min() if len(kids) else y[row.node] + stub
        colour = cluster_colour(row.label) if row.label >= 0 else "0.2"
        ax.plot([x[row.node]] * 2, [y[row.node], end], color=colour, lw=2)
        if len(kids):
            ax.plot([kids["node"].map(x).min(), kids["node"].map(x).max()], [end] * 2, "0.2")
        else:
            ax.annotate(
                f"{row.label}\nn={row.size}",
                (x[row.node], end),
                xytext=(0, -4),
                textcoords="offset points",
                ha="center",
                va="top",
            )
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_ylabel("λ at birth (1 / distance)" if height == "lambda" else "depth")
    ax.set_title(f"taxonomy tree: {taxonomy.n_clusters_} clusters")
    save_figure(figure, path)
    return figure


# Mosaics --------------------------------------------------------------------------------


def plot_cluster_mosaic(
    images_by_cluster: dict[int, np.ndarray], path: str | os.PathLike
) -> Figure:
    """Save a mosaic with one row of galaxy images per cluster.

    Parameters
    ----------
    images_by_cluster : dict of int to (k, C, H, W) float
        Images of each cluster's members (e.g. of :func:`typical_members`), flux units.
    path : str or path-like
        Output image.

    Returns
    -------
    matplotlib.figure.Figure
    """
    labels = sorted(images_by_cluster)
    return save_mosaic(
        [images_by_cluster[label] for label in labels],
        path,
        row_labels=[f"cluster {label}" for label in labels],
        title="typical members",
    )


def plot_outlier_mosaic(
    images: np.ndarray, scores: np.ndarray, path: str | os.PathLike, *, per_row: int = 8
) -> Figure:
    """Save a mosaic of outlier galaxies, ``per_row`` to a row, in the order given.

    Parameters
    ----------
    images : (k, C, H, W) float
        The galaxies (e.g. of :func:`strongest_outliers`), flux units.
    scores : (k,) float
        Their outlier scores; each row is labelled with its range.
    path : str or path-like
        Output image.
    per_row : int
        Images per row.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``images`` and ``scores`` have different lengths.
    """
    scores = np.asarray(scores, dtype=float)
    if len(images) != len(scores):
        raise ValueError(f"got {len(images)} images but {len(scores)} scores; pass one each")
    starts = range(0, len(images), per_row)
    return save_mosaic(
        [images[s : s + per_row] for s in starts],
        path,
        row_labels=[
            f"{scores[s : s + per_row].max():.2f}–{scores[s : s + per_row].min():.2f}"
            for s in starts
        ],
        title="strongest outliers (GLOSH score)",
    )
