"""The taxonomy's hierarchy, read from HDBSCAN's condensed tree.

HDBSCAN (Campello, Moulavi & Sander 2013) condenses the single-linkage tree of
the mutual-reachability graph into a tree of clusters; ``condensed_tree_.to_pandas()``
gives it as a table with one row per edge:

- ``parent``: the cluster an entity leaves (cluster ids start at the root, whose
  id is larger than every point id);
- ``child``: the point (id < root) or cluster (id > root) leaving it;
- ``lambda_val``: λ = 1 / distance at which it leaves;
- ``child_size``: 1 for a point, the number of points for a cluster.

The taxonomy keeps the selected clusters (the leaves, which carry ``labels_``
values) and all their ancestors (the internal nodes), and drops the
sub-clusters below the selected ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["TREE_COLUMNS", "birth_lambdas", "cluster_stability", "selected_nodes", "taxonomy_tree"]

TREE_COLUMNS = [
    "node",
    "parent",
    "label",
    "size",
    "lambda_birth",
    "stability",
    "depth",
    "condensed_node",
]
_CONDENSED_COLUMNS = ("parent", "child", "lambda_val", "child_size")


def _checked(condensed: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _CONDENSED_COLUMNS if c not in condensed.columns]
    if missing:
        raise ValueError(
            f"the condensed tree lacks the column(s) {missing}; pass "
            "HDBSCAN(...).condensed_tree_.to_pandas(), which has "
            f"{list(_CONDENSED_COLUMNS)}"
        )
    return condensed


def _root(condensed: pd.DataFrame) -> int:
    return int(condensed["parent"].min())


def _cluster_rows(condensed: pd.DataFrame) -> pd.DataFrame:
    """The rows whose child is a cluster (cluster ids are above the root's id)."""
    return condensed[condensed["child"] > _root(condensed)]


def birth_lambdas(condensed: pd.DataFrame) -> pd.Series:
    """λ at which each cluster of a condensed tree is born.

    Parameters
    ----------
    condensed : pandas.DataFrame
        HDBSCAN's condensed tree, as given by ``condensed_tree_.to_pandas()``.

    Returns
    -------
    pandas.Series
        λ_birth (1 / distance) indexed by cluster id; 0 for the root.
    """
    condensed = _checked(condensed)
    clusters = _cluster_rows(condensed)
    births = pd.Series(clusters["lambda_val"].to_numpy(float), index=clusters["child"].to_numpy())
    root = pd.Series([0.0], index=[_root(condensed)])
    return pd.concat([root, births]).sort_index()


def cluster_stability(condensed: pd.DataFrame) -> pd.Series:
    """Stability of every cluster of a condensed tree (Campello et al. 2013, eq. 3).

    S(C) = Σ_{x leaving C} (λ_x − λ_birth(C)) · n_x, summed over the points
    (n_x = 1) and child clusters (n_x their size) that leave C at λ_x.

    Parameters
    ----------
    condensed : pandas.DataFrame
        HDBSCAN's condensed tree, as given by ``condensed_tree_.to_pandas()``.

    Returns
    -------
    pandas.Series
        Stability indexed by cluster id.
    """
    condensed = _checked(condensed)
    births = condensed["parent"].map(birth_lambdas(condensed))
    excess = (condensed["lambda_val"] - births) * condensed["child_size"]
    return excess.groupby(condensed["parent"]).sum().rename("stability")


def _cluster_parents(condensed: pd.DataFrame) -> dict[int, int]:
    clusters = _cluster_rows(condensed)
    return dict(zip(clusters["child"].astype(int), clusters["parent"].astype(int), strict=True))


def _ancestry(node: int, parents: dict[int, int]) -> list[int]:
    """``node`` and its ancestors, from ``node`` up to the root."""
    path = [node]
    while path[-1] in parents:
        path.append(parents[path[-1]])
    return path


def selected_nodes(condensed: pd.DataFrame, labels: np.ndarray) -> dict[int, int]:
    """The condensed-tree cluster that HDBSCAN selected for each label.

    HDBSCAN gives every point below a selected cluster that cluster's label, so
    the selected cluster is the lowest common ancestor of its points.

    Parameters
    ----------
    condensed : pandas.DataFrame
        HDBSCAN's condensed tree, as given by ``condensed_tree_.to_pandas()``.
    labels : (N,) int
        HDBSCAN's ``labels_``, -1 for noise.

    Returns
    -------
    dict
        Cluster id in the condensed tree for each label 0, 1, ... .
    """
    condensed = _checked(condensed)
    labels = np.asarray(labels)
    points = condensed[condensed["child"] < _root(condensed)]
    point_parent = pd.Series(points["parent"].to_numpy(int), index=points["child"].to_numpy(int))
    parents = _cluster_parents(condensed)
    selected = {}
    for label in np.unique(labels[labels >= 0]):
        homes = np.unique(point_parent.loc[np.flatnonzero(labels == label)].to_numpy())
        paths = [_ancestry(int(home), parents) for home in homes]
        shared = set.intersection(*(set(path) for path in paths))
        selected[int(label)] = next(node for node in paths[0] if node in shared)
    return selected


def _empty_tree() -> pd.DataFrame:
    floats = ("lambda_birth", "stability")
    return pd.DataFrame({c: pd.Series(dtype=float if c in floats else int) for c in TREE_COLUMNS})


def taxonomy_tree(condensed: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """The taxonomy tree: the selected clusters and their ancestors.

    Parameters
    ----------
    condensed : pandas.DataFrame
        HDBSCAN's condensed tree, as given by ``condensed_tree_.to_pandas()``.
    labels : (N,) int
        HDBSCAN's ``labels_``, -1 for noise.

    Returns
    -------
    pandas.DataFrame
        One row per node, parents before children, with columns

        - ``node``: node id, 0 for the root, numbered in condensed-tree order;
        - ``parent``: the parent's node id, -1 for the root;
        - ``label``: the cluster label (``labels_`` value) of a leaf, -1 for an
          internal node;
        - ``size``: the number of galaxies in the node at its birth;
        - ``lambda_birth``: λ (1 / distance in the clustering embedding) at which
          it splits from its parent, 0 for the root;
        - ``stability``: see :func:`cluster_stability`;
        - ``depth``: the number of edges from the root;
        - ``condensed_node``: its id in HDBSCAN's condensed tree.

        Empty (with these columns) when no cluster was selected.

    Raises
    ------
    ValueError
        If ``condensed`` lacks one of the columns of ``to_pandas()``.
    """
    condensed = _checked(condensed)
    selected = selected_nodes(condensed, labels)
    parents = _cluster_parents(condensed)
    kept = sorted({n for leaf in selected.values() for n in _ancestry(leaf, parents)})
    if not kept:
        return _empty_tree()
    renumber = {old: new for new, old in enumerate(kept)}
    label_of = {node: label for label, node in selected.items()}
    root = _root(condensed)
    sizes = dict(
        zip(condensed["child"].astype(int), condensed["child_size"].astype(int), strict=True)
    )
    sizes[root] = int((condensed["child"] < root).sum())
    return pd.DataFrame(
        {
            "node": np.arange(len(kept)),
            "parent": [renumber[parents[n]] if n in parents else -1 for n in kept],
            "label": [label_of.get(n, -1) for n in kept],
            "size": [sizes[n] for n in kept],
            "lambda_birth": birth_lambdas(condensed).loc[kept].to_numpy(),
            "stability": cluster_stability(condensed).loc[kept].to_numpy(),
            "depth": [len(_ancestry(n, parents)) - 1 for n in kept],
            "condensed_node": kept,
        }
    )
