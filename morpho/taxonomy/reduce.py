"""UMAP reductions of galaxy embeddings that share one k-nearest-neighbour graph.

The taxonomy reduces the same embeddings twice (to a few dimensions for
clustering, to two for maps). The neighbour graph is computed once and handed to
both UMAPs as ``precomputed_knn``, with a search index so that both can still
``transform`` new galaxies:

- up to :data:`EXACT_GRAPH_UP_TO` galaxies the graph is exact, from
  scikit-learn's brute-force search (BLAS, no compilation), and
  :class:`ExactNeighbourIndex` answers ``transform``'s queries: 26 s for 100 000
  32-d embeddings on 2 cores, where pynndescent needs 16 s of search plus 30-60 s
  of numba compilation in every new process. Small sets too (below umap-learn's
  own :data:`EXACT_NEIGHBOURS_BELOW`) go through it, because umap-learn's
  small-data ``transform`` ranks new galaxies by distances whose rounding
  depends on the batch;
- above, the approximate graph of pynndescent (``umap.umap_.nearest_neighbors``),
  whose cost grows as N log N instead of N².

New galaxies are placed with :func:`transform_each`, so that where a galaxy lands
does not depend on which other galaxies are transformed with it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state

with warnings.catch_warnings():
    # umap-learn warns on import that TensorFlow (for ParametricUMAP, unused here) is absent.
    warnings.filterwarnings("ignore", message="Tensorflow not installed", category=ImportWarning)
    from umap.umap_ import UMAP, nearest_neighbors

__all__ = [
    "EXACT_GRAPH_UP_TO",
    "EXACT_NEIGHBOURS_BELOW",
    "ExactNeighbourIndex",
    "TrainingNeighbours",
    "fit_umap",
    "make_umap",
    "shared_neighbours",
    "training_inputs",
    "training_neighbours",
    "transform_each",
]

# umap-learn's own threshold between exact and approximate neighbours.
EXACT_NEIGHBOURS_BELOW = 4096
#: Largest number of galaxies whose shared graph is exact (brute force, O(N²)).
EXACT_GRAPH_UP_TO = 200_000
# Metrics that scikit-learn's brute-force search computes as umap-learn does.
_EXACT_METRICS = ("euclidean", "l2", "manhattan", "l1", "taxicab", "chebyshev", "cosine")
# umap-learn's metrics whose neighbour search uses angular random-projection trees.
_ANGULAR_METRICS = ("cosine", "correlation", "dice", "jaccard", "ll_dirichlet", "hellinger")

KnnGraph = tuple  # (indices (N, k) int, distances (N, k) float32, search index) or Nones


class ExactNeighbourIndex:
    """Exact nearest training galaxies of new ones, for ``UMAP.transform``.

    Offers what umap-learn asks of pynndescent's index when it transforms: ``query``
    and ``_angular_trees``.

    Parameters
    ----------
    Z : (N, d) float32
        The standardised training embeddings.
    metric : str
        One of scikit-learn's and umap-learn's common metrics.
    """

    _angular_trees = False
    #: Candidates beyond k whose distances are measured again, for near-ties.
    spare = 4
    #: Rows of ``X`` whose candidates are measured again at once (bounded memory).
    chunk = 16384

    def __init__(self, Z: np.ndarray, metric: str) -> None:
        self.Z = Z
        self.metric = metric
        self.search = NearestNeighbors(algorithm="brute", metric=metric).fit(Z)

    def query(self, X: np.ndarray, k: int, epsilon: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """``(indices (M, k) int32, distances (M, k) float32)`` of the ``k`` nearest
        training galaxies of each row of ``X``, nearest first (``epsilon``, the
        approximate search's slack, is ignored: the search is exact).

        The brute-force search ranks by distances from matrix products, whose
        rounding depends on how many rows are searched together; the ``k + spare``
        candidates of each row are therefore measured again one by one in float64
        (:func:`_row_distances`) and ranked by those, so that a galaxy's neighbours
        and distances are the same in any batch (and a training galaxy is at 0
        from itself).
        """
        want = min(k + self.spare, len(self.Z))
        indices, distances = [], []
        for start in range(0, len(X), self.chunk):
            rows = np.asarray(X[start : start + self.chunk])
            candidates = self.search.kneighbors(rows, n_neighbors=want, return_distance=False)
            exact = _row_distances(rows, self.Z[candidates], self.metric)
            order = np.lexsort((candidates, exact), axis=-1)[:, :k]  # by distance, then index
            indices.append(np.take_along_axis(candidates, order, axis=1))
            distances.append(np.take_along_axis(exact, order, axis=1))
        return (
            np.concatenate(indices).astype(np.int32),
            np.concatenate(distances).astype(np.float32),
        )


def _row_distances(X: np.ndarray, neighbours: np.ndarray, metric: str) -> np.ndarray:
    """Distances (M, K) of each row of ``X`` (M, d) to its ``neighbours`` (M, K, d),
    each from that row's own numbers only (float64)."""
    a, b = X.astype(np.float64)[:, None, :], neighbours.astype(np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        cosine = (a * b).sum(axis=-1) / np.where(norms > 0, norms, 1.0)
        return np.clip(1.0 - cosine, 0.0, 2.0)
    diff = b - a
    if metric in ("euclidean", "l2"):
        return np.sqrt(np.square(diff).sum(axis=-1))
    if metric in ("manhattan", "l1", "taxicab"):
        return np.abs(diff).sum(axis=-1)
    if metric == "chebyshev":
        return np.abs(diff).max(axis=-1)
    raise ValueError(f"no exact distance for metric {metric!r}; use one of {_EXACT_METRICS}")


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
        ``(indices (N, k), distances (N, k), search_index)`` (each galaxy its own
        first neighbour); ``(None, None, None)`` for a metric without an exact
        distance here below :data:`EXACT_NEIGHBOURS_BELOW` galaxies (each UMAP then
        computes the exact graph itself).
    """
    if metric in _EXACT_METRICS and len(Z) <= EXACT_GRAPH_UP_TO:
        index = ExactNeighbourIndex(Z, metric)
        indices, distances = index.query(Z, n_neighbors)
        return indices, distances, index
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
    init: np.ndarray | str = "spectral",
) -> UMAP:
    """An unfitted UMAP using the graph ``knn`` of :func:`shared_neighbours`, starting
    from ``init`` (umap-learn's name of a layout, or an (N, n_components) array)."""
    return UMAP(
        n_components=n_components,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        n_epochs=n_epochs,
        random_state=random_state,
        n_jobs=_jobs(random_state),
        precomputed_knn=knn,
        init=init,
    )


def training_neighbours(reducer: UMAP, Z: np.ndarray, k: int = 1) -> TrainingNeighbours | None:
    """The ``k`` nearest training galaxies of each row of ``Z`` in the reducer's shared
    index; None when the reducer has none (see :func:`shared_neighbours`).

    The two UMAPs of a taxonomy share one index and one training set, so one call
    serves both :func:`transform_each` calls.
    """
    index = reducer.precomputed_knn[2]
    if index is None or not len(Z):
        return None
    nearest, distance = index.query(Z, k)
    return TrainingNeighbours(nearest, np.asarray(distance, dtype=np.float64))


@dataclass(frozen=True)
class TrainingNeighbours:
    """Nearest training galaxies of new ones: ``indices`` and ``distances``, (M, k)."""

    indices: np.ndarray
    distances: np.ndarray

    @property
    def same(self) -> np.ndarray:
        """(M,) bool: the galaxy is identical to a training galaxy (``indices[:, 0]``)."""
        return self.distances[:, 0] == 0


def training_inputs(reducer: UMAP) -> np.ndarray:
    """The (N, d) embeddings a fitted ``reducer`` was fitted on, as it holds them
    (umap-learn keeps them to place new galaxies; read here, not copied)."""
    return reducer._raw_data


def transform_each(
    reducer: UMAP, Z: np.ndarray, neighbours: TrainingNeighbours | None = None
) -> np.ndarray:
    """``reducer.transform(Z)``, each galaxy placed the same whatever the batch.

    umap-learn's ``transform`` divides the new galaxies' edge weights by the largest
    weight among them, and the optimisation epochs each edge gets follow: a galaxy
    would land elsewhere in another batch, which breaks the contract that
    ``predict`` of a galaxy does not depend on the others predicted with it. One
    training galaxy is added to every call; it is at distance 0 from itself, so its
    nearest edge has weight 1, the largest possible, and the divisor is 1 for every
    batch. (Each new galaxy is otherwise optimised on its own: only its own edges
    move it, with a random stream seeded from its own starting position.) The
    added row is dropped from the result, and a galaxy identical to a training
    galaxy (found in ``neighbours``, from :func:`training_neighbours`, or here if
    not given) gets that galaxy's fitted place, which umap-learn gives only when
    the whole training set is transformed at once.
    """
    anchor = np.asarray(training_inputs(reducer)[:1], dtype=Z.dtype)  # a training galaxy
    placed = reducer.transform(np.concatenate([Z, anchor]))[:-1]
    if neighbours is None:
        neighbours = training_neighbours(reducer, Z)
    if neighbours is not None:
        same = neighbours.same
        placed[same] = reducer.embedding_[neighbours.indices[same, 0]]
    return placed


def fit_umap(reducer: UMAP, Z: np.ndarray) -> UMAP:
    """``reducer.fit(Z)``, without umap-learn's warning that an index other than
    pynndescent's cannot transform (:class:`ExactNeighbourIndex` can)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"precomputed_knn\[2\] \(knn_search_index\) is not an NNDescent"
        )
        return reducer.fit(Z)
