"""UMAP reductions of galaxy embeddings that share one k-nearest-neighbour graph.

The taxonomy reduces the same embeddings twice (to a few dimensions for
clustering, to two for maps). From :data:`EXACT_NEIGHBOURS_BELOW` galaxies up,
the approximate graph (pynndescent) is built once with
``umap.umap_.nearest_neighbors`` and handed to both UMAPs as ``precomputed_knn``,
search index included, so that both can still ``transform`` new galaxies.
Below it, umap-learn computes the exact graph from all pairwise distances
(O(N²), a fraction of a second), which is cheaper than sharing: pynndescent's
numba compilation costs about a minute in every new process.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.utils import check_random_state

with warnings.catch_warnings():
    # umap-learn warns on import that TensorFlow (for ParametricUMAP, unused here) is absent.
    warnings.filterwarnings("ignore", message="Tensorflow not installed", category=ImportWarning)
    from umap.umap_ import UMAP, nearest_neighbors

__all__ = ["EXACT_NEIGHBOURS_BELOW", "make_umap", "shared_neighbours"]

# umap-learn's own threshold between exact and approximate neighbours.
EXACT_NEIGHBOURS_BELOW = 4096
# umap-learn's metrics whose neighbour search uses angular random-projection trees.
_ANGULAR_METRICS = ("cosine", "correlation", "dice", "jaccard", "ll_dirichlet", "hellinger")

KnnGraph = tuple  # (indices (N, k) int, distances (N, k) float32, pynndescent.NNDescent) or Nones


def _jobs(random_state) -> int:
    """UMAP is reproducible only on one thread; without a seed, use every core."""
    return 1 if random_state is not None else -1


def shared_neighbours(
    Z: np.ndarray, *, n_neighbors: int, metric: str, random_state: int | None
) -> KnnGraph:
    """The k-nearest-neighbour graph of ``Z`` to give every UMAP as ``precomputed_knn``.

    Parameters
    ----------
    Z : (N, d) float32
        Standardised embeddings.
    n_neighbors : int
        Neighbours per galaxy, itself included.
    metric : str
        A named umap-learn / pynndescent metric.
    random_state : int or None
        Seed of the approximate search.

    Returns
    -------
    tuple
        ``(indices (N, k), distances (N, k), search_index)``, or ``(None, None, None)``
        below :data:`EXACT_NEIGHBOURS_BELOW` galaxies (each UMAP then computes the
        exact graph).
    """
    if len(Z) < EXACT_NEIGHBOURS_BELOW:
        return (None, None, None)
    return nearest_neighbors(
        Z,
        n_neighbors,
        metric,
        {},
        metric in _ANGULAR_METRICS,
        check_random_state(random_state),
        n_jobs=_jobs(random_state),
    )


def make_umap(
    *,
    n_components: int,
    n_neighbors: int,
    min_dist: float,
    metric: str,
    n_epochs: int | None,
    random_state: int | None,
    knn: KnnGraph,
) -> UMAP:
    """An unfitted UMAP using the graph ``knn`` of :func:`shared_neighbours`."""
    return UMAP(
        n_components=n_components,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        n_epochs=n_epochs,
        random_state=random_state,
        n_jobs=_jobs(random_state),
        precomputed_knn=knn,
    )
