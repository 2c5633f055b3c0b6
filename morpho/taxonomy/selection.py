"""Which clusters of HDBSCAN's condensed tree the taxonomy keeps.

HDBSCAN's excess-of-mass selection keeps a cluster when its stability is at least
that of the best selection below it (Campello, Moulavi & Sander 2013). Its
``max_cluster_size`` forbids every cluster above a size, and a cluster the tree
does not split into worthwhile sub-clusters then falls to noise: a single dense
class holding more than the limit is lost. :func:`select_clusters` limits the size
only where the tree below a cluster does not look like one class.

References
----------
Campello, Moulavi & Sander 2013, PAKDD, LNCS 7819, 160 (HDBSCAN, excess of mass).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from hdbscan._hdbscan_tree import get_clusters

from morpho.taxonomy.tree import _cluster_rows, cluster_stability

if TYPE_CHECKING:
    import hdbscan
    import pandas as pd

__all__ = ["SPLIT_SHARE", "SPLIT_WORTH", "clusters_to_split", "select_clusters"]

#: A cluster above the size limit stays whole when the tree below it looks like one
#: dense class: the best excess-of-mass selection below it is worth less than
#: :data:`SPLIT_WORTH` of its own stability, and its sub-clusters hold less than
#: :data:`SPLIT_SHARE` of its galaxies when they split off (much of a single class
#: has fallen out as noise before its core fragments; a merger of classes splits
#: while most of its galaxies are still in it). Measured (``benchmarks/RESULTS.md``,
#: taxonomy q15): on the taxonomy benchmark's embeddings (five trainings, 26 UMAP fits)
#: every cluster above 30% of the sample held two or more classes, with a worth of
#: 0.171 to 25 and a share of 0.78 to 1; on unit-variance Gaussian blobs every single
#: blob holding 30-77% of the galaxies had a worth of 0.018-0.107 and a share of
#: 0.27-0.57. The thresholds lie between the two.
SPLIT_WORTH = 0.13
SPLIT_SHARE = 2 / 3


def clusters_to_split(
    condensed: pd.DataFrame, stability: dict[int, float], max_size: int
) -> set[int]:
    """Clusters of a condensed tree that the size limit splits.

    A cluster is split when it was born with more than ``max_size`` galaxies and
    has sub-clusters, unless the tree below it looks like one dense class (see
    :data:`SPLIT_WORTH`): the best excess-of-mass selection below it is worth less
    than ``SPLIT_WORTH`` of its own stability and its sub-clusters are born with
    less than ``SPLIT_SHARE`` of its galaxies.

    Parameters
    ----------
    condensed : pandas.DataFrame
        HDBSCAN's condensed tree, as given by ``condensed_tree_.to_pandas()``.
    stability : dict
        Stability of each cluster id (:func:`morpho.taxonomy.tree.cluster_stability`).
    max_size : int
        The size limit, in galaxies.

    Returns
    -------
    set of int
        Cluster ids to split.
    """
    clusters = _cluster_rows(condensed)
    sizes = dict(zip(clusters["child"].tolist(), clusters["child_size"].tolist(), strict=True))
    children: dict[int, list[int]] = {}
    for parent, child in zip(clusters["parent"].tolist(), clusters["child"].tolist(), strict=True):
        children.setdefault(parent, []).append(child)
    best: dict[int, float] = {}
    split = set()
    # Cluster ids grow down the tree: children come before their parent.
    for node in sorted(stability, reverse=True):
        below = children.get(node, [])
        worth = sum(best[child] for child in below)
        best[node] = max(stability[node], worth)
        size = sizes.get(node, 0)
        if not below or size <= max_size:
            continue
        share = sum(sizes[child] for child in below) / size
        if worth >= SPLIT_WORTH * stability[node] or share >= SPLIT_SHARE:
            split.add(node)
    return split


def select_clusters(clusterer: hdbscan.HDBSCAN, max_size: int) -> None:
    """Select ``clusterer``'s clusters again, excess of mass under a size limit.

    The clusters :func:`clusters_to_split` names give way to the selection below
    them; everywhere else HDBSCAN's excess of mass chooses, with its own labels,
    probabilities and persistence, which this sets on ``clusterer``.

    Parameters
    ----------
    clusterer : hdbscan.HDBSCAN
        Fitted with ``cluster_selection_method="eom"`` and no ``max_cluster_size``;
        its prediction data, if any, must be generated again afterwards.
    max_size : int
        No selected cluster holds more galaxies than this, unless its tree looks
        like one class (:func:`clusters_to_split`).
    """
    condensed = clusterer.condensed_tree_.to_pandas()
    stability = cluster_stability(condensed).to_dict()
    for node in clusters_to_split(condensed, stability, max_size):
        stability[node] = -np.inf
    labels, probabilities, persistence = get_clusters(
        clusterer._condensed_tree,
        stability,
        "eom",
        clusterer.allow_single_cluster,
        clusterer.match_reference_implementation,
        clusterer.cluster_selection_epsilon,
    )
    clusterer.labels_ = labels
    clusterer.probabilities_ = probabilities
    clusterer.cluster_persistence_ = persistence
