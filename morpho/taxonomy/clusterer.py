"""A morphology taxonomy: UMAP of galaxy embeddings, then HDBSCAN.

The estimator follows the scikit-learn / hdbscan contract: ``__init__`` only
stores its arguments, :meth:`Taxonomy.fit` validates the embeddings and
returns ``self``, and fitted state ends in ``_``.

References
----------
McInnes, Healy & Melville 2018, arXiv:1802.03426 (UMAP).
Campello, Moulavi & Sander 2013, PAKDD, LNCS 7819, 160 (HDBSCAN, GLOSH).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import hdbscan
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

from morpho.taxonomy.reduce import (
    TrainingNeighbours,
    fit_umap,
    make_umap,
    shared_neighbours,
    training_inputs,
    training_neighbours,
    transform_each,
)
from morpho.taxonomy.selection import select_clusters
from morpho.taxonomy.tree import taxonomy_tree
from morpho.utils import available_cpus, keeps_torch_threads

if TYPE_CHECKING:
    from umap import UMAP

__all__ = ["CLUSTERING_PARAMS", "TABLE_COLUMNS", "Taxonomy"]

#: Parameters that :meth:`Taxonomy.recluster` may change: HDBSCAN's and the noise's.
CLUSTERING_PARAMS = (
    "min_cluster_size",
    "min_samples",
    "cluster_selection_method",
    "cluster_selection_epsilon",
    "max_cluster_fraction",
    "outlier_quantile",
    "boundaries",
)
#: Where the borders between clusters are drawn (see :class:`Taxonomy`).
BOUNDARIES = ("density", "linear")
#: Most galaxies the classifier of ``boundaries="linear"`` is fitted to (a seeded random
#: sample of them above it): a linear border in a few tens of dimensions is set by far
#: fewer, and 100 000 took 14 s against 2.4 s for 20 000 (one thread).
CLASSIFIER_SAMPLE = 20_000
#: Starts of the clustering UMAP (umap-learn's names).
UMAP_INITS = ("spectral", "pca", "tswspectral", "random")
TABLE_COLUMNS = ["id", "cluster", "probability", "outlier_score", "map_x", "map_y", "parent"]


def _finite_rows(X: np.ndarray, *, name: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{name} has {bad.size} of {len(X)} rows with NaN or inf values (first rows: "
            f"{bad[:5].tolist()}); remove or re-embed these galaxies first"
        )
    return X


def _scaling(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column (1 where a column is constant)."""
    std = X.std(axis=0)
    return X.mean(axis=0), np.where(std > 0, std, 1.0)


class Taxonomy(ClusterMixin, BaseEstimator):
    """Morphology taxonomy of galaxy embeddings: UMAP, then HDBSCAN.

    The embeddings are (optionally) standardised, reduced by UMAP to
    ``n_components`` dimensions for clustering and, separately, to
    ``map_components`` (2) for maps; HDBSCAN clusters the first reduction.
    Both reductions use the same k-nearest-neighbour graph
    (:mod:`morpho.taxonomy.reduce`), and the map starts from the clustering
    embedding's leading principal axes, so that a few epochs spread it for viewing.
    The borders between HDBSCAN's clusters are then drawn again by a linear
    classifier of the standardised embeddings (``boundaries``).

    Parameters
    ----------
    n_components : int
        Dimension of the UMAP embedding that HDBSCAN clusters.
    n_neighbors : int
        Neighbours in UMAP's k-nearest-neighbour graph.
    min_dist : float
        UMAP ``min_dist`` of the clustering embedding; 0 packs clusters tightly.
    metric : str
        Distance between input embeddings (any named umap-learn metric).
    min_cluster_size : int
        Smallest number of galaxies that makes a cluster (HDBSCAN). The default, 200,
        suits samples of a few thousand galaxies up; lower it for smaller ones. On the
        simulated six classes (4800 training galaxies) 50 split classes by S/N and
        inclination into 11 clusters with 16% noise at S/N >= 40 (ARI 0.67); 200 with
        ``min_samples=50`` gives 7 clusters, 12% noise (ARI 0.74), and any size from 200
        to 400 the same (``benchmarks/RESULTS.md``).
    min_samples : int or None
        HDBSCAN's density smoothing, at most ``min_cluster_size`` (a larger value is
        lowered to it, so that lowering ``min_cluster_size`` for a small sample is
        enough); None means ``min_cluster_size``, as in HDBSCAN. Lower values let the
        tree split more finely (10 on the simulated set: 15 clusters), higher ones
        leave more galaxies as noise (200: 25% at S/N >= 40).
    cluster_selection_method : {"eom", "leaf"}
        HDBSCAN's selection: the most stable clusters, or the leaves of the tree.
    cluster_selection_epsilon : float
        Clusters closer than this (in the clustering embedding) are merged.
    max_cluster_fraction : float or None
        With ``"eom"``, a cluster holding more than this fraction of the galaxies
        gives way to the selection below it in HDBSCAN's tree, unless the tree below
        looks like one dense class (its selection worth little of the cluster's
        stability, its sub-clusters born with a minority of its galaxies; see
        :data:`~morpho.taxonomy.selection.SPLIT_WORTH`): such a class stays whole
        however large (:func:`morpho.taxonomy.selection.select_clusters`; HDBSCAN's
        own ``max_cluster_size`` would drop it to noise). None: no limit. The most stable
        clusters are often the tree's first split alone (on the simulated six classes:
        edge-on disks against everything else, ARI 0.13); 0.5 made the selection go
        below it (ARI 0.55, purity 0.92), and 0.35 also below the cluster of three
        classes that half of the UMAP seeds of a full training kept at 0.5 (ARI at
        S/N >= 40 0.78 against 0.66, mean of six seeds; ``benchmarks/RESULTS.md``).
    map_components : int
        Dimension of the map embedding (``embedding_2d_``); the maps use its
        first two axes.
    map_min_dist : float
        UMAP ``min_dist`` of the map embedding; larger spreads clusters for viewing.
    init : {"spectral", "pca", "tswspectral", "random"}
        Start of the clustering UMAP (umap-learn's ``init``). ``"spectral"``, umap-learn's
        default, computes a spectral layout of the neighbour graph, one per connected
        component; ``"pca"`` starts from the leading principal axes of the standardised
        embeddings, in seconds. On the simulated set the start did not matter with 500
        epochs, and with the 100 epochs of large samples ``"pca"`` lowered the ARI by
        0.09 (five seeds); on 100 000 jittered copies, whose graph fell into 68
        components, it halved the fit (``benchmarks/RESULTS.md``).
    n_epochs : int or None
        Optimisation epochs of the clustering UMAP. None: 500 below 10 000 galaxies
        (umap-learn's choice), 100 from 10 000 up (umap-learn's is 200; 100 halve the
        time of the largest step, so that 100 000 galaxies take under 3 minutes on
        2 cores, see ``benchmarks/RESULTS.md``).
    map_n_epochs : int or None
        Optimisation epochs of the map UMAP, which starts from the first
        ``map_components`` principal axes of the clustering embedding (from
        umap-learn's spectral layout when ``map_components > n_components``); None
        lets umap-learn choose.
    outlier_quantile : float or None
        What noise means. None: HDBSCAN's noise, every galaxy outside the selected
        clusters. A value q in (0, 1]: only outliers are noise; a galaxy HDBSCAN
        leaves out whose GLOSH outlier score is at most the q-quantile of the
        training galaxies' scores joins the cluster held by most of its
        ``n_neighbors`` nearest clustered training galaxies in the clustering
        embedding (its probability stays 0, HDBSCAN's). Most of HDBSCAN's noise
        lies between two clusters rather than apart from all of them: in the
        taxonomy benchmark's full run 0.95 left 4% of the test galaxies as noise
        instead of 25% and raised the ARI from 0.57 to 0.70 (``benchmarks/RESULTS.md``).
        A galaxy beyond the training set (see :meth:`assign`) stays noise either way.
    boundaries : {"density", "linear"}
        Where the borders between the clusters lie. ``"density"``: HDBSCAN's, in the
        clustering embedding (a new galaxy gets ``hdbscan.approximate_predict``'s
        cluster, a joining one its neighbours' vote). ``"linear"`` (the default):
        HDBSCAN finds the clusters and the noise, and a multinomial logistic
        regression of the standardised input embeddings, fitted to the clustered and
        joined training galaxies (at most :data:`CLASSIFIER_SAMPLE` of them, drawn at
        random), draws the borders: every galaxy the density places in a cluster, in
        training and among new galaxies, gets the cluster the classifier predicts
        instead (its probability is 0 where that is not HDBSCAN's). UMAP bends the
        space between clusters, and galaxies near a border land on the wrong side of
        it, while a linear probe of the input embeddings reads the classes well. On
        the taxonomy benchmark's quick embeddings the ARI at S/N >= 40 rose from
        0.697 to 0.727 (mean of five UMAP seeds, every seed up or level); on the
        full run's, which separate the classes better, it was level (0.782 against
        0.780, six seeds; ``benchmarks/RESULTS.md``). The cells of a linear
        classifier are convex: a cluster that wraps around another is cut. With fewer
        than two clusters there are no borders to draw.
    standardize : bool
        Scale every input dimension to zero mean and unit variance before UMAP.
    random_state : int or None
        Seed for UMAP. With an integer, the same embeddings give the same labels
        (UMAP then runs on one thread); None is faster and not reproducible.

    Attributes
    ----------
    labels_ : (N,) int
        Cluster of each training galaxy, -1 for noise.
    probabilities_ : (N,) float
        Strength of each galaxy's membership of its cluster, in [0, 1].
    outlier_scores_ : (N,) float
        GLOSH outlier score, in [0, 1]; high is unusual.
    outlier_threshold_ : float
        With ``outlier_quantile``, the outlier score above which a galaxy outside
        the clusters stays noise; inf without.
    cluster_vote_ : sklearn.neighbors.KNeighborsClassifier or None
        With ``outlier_quantile``, the vote of the clustered training galaxies that
        places the others; None without.
    cluster_classifier_ : sklearn.linear_model.LogisticRegression or None
        With ``boundaries="linear"`` and at least two clusters, the classifier of the
        standardised input embeddings that draws the clusters' borders; else None.
    embedding_ : (N, n_components) float32
        The clustering embedding.
    embedding_2d_ : (N, map_components) float32
        The map embedding.
    tree_ : pandas.DataFrame
        The taxonomy tree, see :func:`morpho.taxonomy.tree.taxonomy_tree`.
    n_clusters_ : int
        Number of clusters.
    n_features_in_ : int
        Dimension d of the input embeddings.
    mean_, scale_ : (d,) float
        Standardisation applied before UMAP (0 and 1 when ``standardize`` is False).
    isolation_radius_ : float
        The largest distance of a training galaxy to its ``n_neighbors - 1``-th
        nearest other training galaxy, in the standardised embeddings; a new galaxy
        farther than this from its ``n_neighbors - 1``-th nearest training galaxy
        lies beyond anything the taxonomy was fitted on (see :meth:`assign`). inf
        when the neighbour graph is UMAP's own (fewer than 4096 galaxies with a
        metric other than those of :mod:`morpho.taxonomy.reduce`).
    reducer_, map_reducer_ : umap.UMAP
        The fitted UMAP models.
    clusterer_ : hdbscan.HDBSCAN
        The fitted HDBSCAN model, with prediction data. With ``max_cluster_fraction``
        its ``labels_``, ``probabilities_`` and ``cluster_persistence_`` are those of
        :func:`morpho.taxonomy.selection.select_clusters`, not of its own
        ``max_cluster_size`` (0).
    """

    def __init__(
        self,
        *,
        n_components: int = 8,
        n_neighbors: int = 30,
        min_dist: float = 0.0,
        metric: str = "euclidean",
        min_cluster_size: int = 200,
        min_samples: int | None = 50,
        cluster_selection_method: str = "eom",
        cluster_selection_epsilon: float = 0.0,
        max_cluster_fraction: float | None = 0.35,
        map_components: int = 2,
        map_min_dist: float = 0.1,
        init: str = "spectral",
        n_epochs: int | None = None,
        map_n_epochs: int | None = 30,
        outlier_quantile: float | None = 0.95,
        boundaries: str = "linear",
        standardize: bool = True,
        random_state: int | None = 0,
    ) -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.max_cluster_fraction = max_cluster_fraction
        self.map_components = map_components
        self.map_min_dist = map_min_dist
        self.init = init
        self.n_epochs = n_epochs
        self.map_n_epochs = map_n_epochs
        self.outlier_quantile = outlier_quantile
        self.boundaries = boundaries
        self.standardize = standardize
        self.random_state = random_state

    # Fitting ----------------------------------------------------------------------------

    @keeps_torch_threads
    def fit(self, X: np.ndarray, y: None = None) -> Taxonomy:
        """Fit the taxonomy to galaxy embeddings.

        Parameters
        ----------
        X : (N, d) float
            One embedding per galaxy.
        y : None
            Ignored; present for scikit-learn compatibility.

        Returns
        -------
        Taxonomy
            ``self``, fitted.

        Raises
        ------
        ValueError
            If ``X`` is not 2-D, has NaN or inf, has fewer rows than
            ``max(min_cluster_size, n_neighbors + 1)``, or a parameter is invalid.
        """
        self._check_params()
        X = check_array(X, dtype=[np.float64, np.float32], ensure_all_finite=False)
        X = _finite_rows(X, name="X")
        self._check_enough(len(X))
        self.n_features_in_ = d = X.shape[1]
        self.mean_, self.scale_ = _scaling(X) if self.standardize else (np.zeros(d), np.ones(d))
        Z = self._standardized(X)
        knn = shared_neighbours(
            Z, n_neighbors=self.n_neighbors, metric=self.metric, random_state=self.random_state
        )
        epochs = self.n_epochs if self.n_epochs is not None else (500 if len(Z) < 10_000 else 100)
        self.reducer_ = fit_umap(
            self._umap(self.n_components, self.min_dist, knn, epochs, self.init), Z
        )
        start = _map_start(self.reducer_.embedding_, self.map_components)
        self.map_reducer_ = fit_umap(
            self._umap(self.map_components, self.map_min_dist, knn, self.map_n_epochs, start), Z
        )
        self.embedding_ = self.reducer_.embedding_
        self.embedding_2d_ = self.map_reducer_.embedding_
        # Column 0 of the shared graph is each galaxy itself.
        self.isolation_radius_ = float(knn[1][:, -1].max()) if knn[1] is not None else np.inf
        self._fit_clusters()
        return self

    @keeps_torch_threads
    def recluster(self, **params) -> Taxonomy:
        """A copy of this fitted taxonomy with other clustering parameters, fitted
        again without redoing its UMAP reductions (the slow part).

        Parameters
        ----------
        **params
            Any of :data:`CLUSTERING_PARAMS` (``min_cluster_size``, ``min_samples``,
            ``cluster_selection_method``, ``cluster_selection_epsilon``,
            ``max_cluster_fraction``, ``outlier_quantile``, ``boundaries``).

        Returns
        -------
        Taxonomy
            A new taxonomy, the same as ``Taxonomy(**other_params).fit(X)`` on the
            embeddings this one was fitted on; it shares this one's UMAP models.

        Raises
        ------
        ValueError
            If a parameter would change the reductions or is not a taxonomy's, or a
            value is invalid.
        """
        check_is_fitted(self)
        other = set(params) - set(CLUSTERING_PARAMS)
        if other:
            raise ValueError(
                f"recluster changes only {', '.join(CLUSTERING_PARAMS)}; "
                f"{', '.join(sorted(other))} need fit"
            )
        # A shallow copy shares the reductions; _fit_clusters replaces every clustering
        # attribute of the copy and none of this taxonomy's.
        variant = copy.copy(self).set_params(**params)
        variant._check_params()
        variant._check_enough(len(self.embedding_))
        variant._fit_clusters()
        return variant

    def _fit_clusters(self) -> None:
        """HDBSCAN on the clustering embedding, the borders, the outliers' vote and the tree."""
        self.clusterer_ = hdbscan.HDBSCAN(
            min_cluster_size=self.min_cluster_size,
            min_samples=self._min_samples(),
            cluster_selection_method=self.cluster_selection_method,
            cluster_selection_epsilon=self.cluster_selection_epsilon,
            core_dist_n_jobs=available_cpus(),
        ).fit(self.embedding_)
        if self.max_cluster_fraction is not None and self.cluster_selection_method == "eom":
            select_clusters(self.clusterer_, self._max_cluster_size(len(self.embedding_)))
        self.clusterer_.generate_prediction_data()
        hdbscan_labels = self.clusterer_.labels_.astype(np.intp)
        self.outlier_scores_ = self.clusterer_.outlier_scores_
        self.n_clusters_ = int(hdbscan_labels.max()) + 1
        self._fit_outliers(hdbscan_labels)
        joined = self._join_clusters(hdbscan_labels, self.embedding_, self.outlier_scores_)
        inputs = training_inputs(self.reducer_)
        self._fit_borders(joined, inputs)
        self.labels_ = self._draw_borders(joined, inputs)
        # A galaxy whose cluster is not HDBSCAN's has no HDBSCAN membership of it.
        self.probabilities_ = np.where(
            self.labels_ == hdbscan_labels, self.clusterer_.probabilities_, 0.0
        )
        self.tree_ = taxonomy_tree(self.clusterer_.condensed_tree_.to_pandas(), hdbscan_labels)

    def _fit_outliers(self, labels: np.ndarray) -> None:
        """The outlier threshold and the vote of clustered neighbours (``outlier_quantile``)."""
        clustered = labels >= 0
        self.outlier_threshold_ = np.inf
        self.cluster_vote_ = None
        if self.outlier_quantile is None or not clustered.any():
            return
        self.outlier_threshold_ = float(np.quantile(self.outlier_scores_, self.outlier_quantile))
        k = min(self.n_neighbors, int(clustered.sum()))
        self.cluster_vote_ = KNeighborsClassifier(n_neighbors=k).fit(
            self.embedding_[clustered], labels[clustered]
        )

    def _join_clusters(
        self, labels: np.ndarray, embedding: np.ndarray, scores: np.ndarray
    ) -> np.ndarray:
        """HDBSCAN's ``labels`` with the noise galaxies that are not outliers (score
        at most ``outlier_threshold_``) given the cluster of their neighbours' vote."""
        joining = (labels < 0) & (scores <= self.outlier_threshold_)
        if self.cluster_vote_ is None or not joining.any():
            return labels
        labels = labels.copy()
        labels[joining] = self.cluster_vote_.predict(embedding[joining])
        return labels

    def _fit_borders(self, labels: np.ndarray, inputs: np.ndarray) -> None:
        """With ``boundaries="linear"``, the classifier of the standardised input
        embeddings that draws the borders, fitted to the clustered (and joined)
        training galaxies' ``labels``."""
        self.cluster_classifier_ = None
        clustered = np.flatnonzero(labels >= 0)
        if self.boundaries != "linear" or np.unique(labels[clustered]).size < 2:
            return
        if len(clustered) > CLASSIFIER_SAMPLE:
            rng = np.random.default_rng(0)
            clustered = np.sort(rng.choice(clustered, CLASSIFIER_SAMPLE, replace=False))
        self.cluster_classifier_ = LogisticRegression(max_iter=1000).fit(
            inputs[clustered], labels[clustered]
        )

    def _draw_borders(self, labels: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """``labels`` with every clustered galaxy given the cluster the classifier
        predicts from its standardised input embedding (``inputs``), if there is one."""
        clustered = labels >= 0
        if self.cluster_classifier_ is None or not clustered.any():
            return labels
        labels = labels.copy()
        labels[clustered] = self.cluster_classifier_.predict(inputs[clustered])
        return labels

    def __setstate__(self, state: dict) -> None:
        # Taxonomies saved before outlier_quantile existed had HDBSCAN's noise.
        state.setdefault("outlier_quantile", None)
        # ... and before init existed, a spectral start.
        state.setdefault("init", "spectral")
        # ... and before boundaries existed, HDBSCAN's.
        state.setdefault("boundaries", "density")
        if "labels_" in state:
            state.setdefault("outlier_threshold_", np.inf)
            state.setdefault("cluster_vote_", None)
            state.setdefault("cluster_classifier_", None)
        super().__setstate__(state)

    def _min_samples(self) -> int:
        """HDBSCAN's ``min_samples``: the parameter, at most ``min_cluster_size``."""
        if self.min_samples is None:
            return self.min_cluster_size
        return min(self.min_samples, self.min_cluster_size)

    def _max_cluster_size(self, n: int) -> int:
        """The largest cluster ``max_cluster_fraction`` allows among ``n`` galaxies."""
        return max(int(self.max_cluster_fraction * n), self.min_cluster_size)

    def _check_params(self) -> None:
        for name, low in [
            ("n_components", 1),
            ("n_neighbors", 2),
            ("min_cluster_size", 2),
            ("map_components", 2),
        ]:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("n_epochs", "map_n_epochs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
        if self.min_samples is not None and self.min_samples < 1:
            raise ValueError(f"min_samples must be None or >= 1, got {self.min_samples!r}")
        fraction = self.max_cluster_fraction
        if fraction is not None and not (
            isinstance(fraction, (int, float, np.number)) and 0 < fraction <= 1
        ):
            raise ValueError(f"max_cluster_fraction must be None or in (0, 1], got {fraction!r}")
        quantile = self.outlier_quantile
        if quantile is not None and not (
            isinstance(quantile, (int, float, np.number)) and 0 < quantile <= 1
        ):
            raise ValueError(f"outlier_quantile must be None or in (0, 1], got {quantile!r}")
        if self.boundaries not in BOUNDARIES:
            raise ValueError(
                f"boundaries must be one of {', '.join(BOUNDARIES)}, got {self.boundaries!r}"
            )
        if self.init not in UMAP_INITS:
            raise ValueError(f"init must be one of {', '.join(UMAP_INITS)}, got {self.init!r}")
        if self.cluster_selection_method not in ("eom", "leaf"):
            raise ValueError(
                "cluster_selection_method must be 'eom' or 'leaf', "
                f"got {self.cluster_selection_method!r}"
            )

    def _check_enough(self, n: int) -> None:
        needed = max(self.min_cluster_size, self.n_neighbors + 1)
        if n < needed:
            raise ValueError(
                f"X has {n} sample(s) but a taxonomy needs at least {needed} galaxies "
                f"(max(min_cluster_size={self.min_cluster_size}, n_neighbors + 1="
                f"{self.n_neighbors + 1})); lower min_cluster_size or n_neighbors, or fit on "
                "more galaxies"
            )

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((X - self.mean_) / self.scale_, dtype=np.float32)

    def _umap(
        self,
        n_components: int,
        min_dist: float,
        knn: tuple,
        n_epochs: int | None,
        init: np.ndarray | str = "spectral",
    ) -> UMAP:
        return make_umap(
            n_components=n_components,
            n_neighbors=self.n_neighbors,
            min_dist=min_dist,
            metric=self.metric,
            n_epochs=n_epochs,
            random_state=self.random_state,
            knn=knn,
            init=init,
        )

    # New galaxies -----------------------------------------------------------------------

    def _new_embeddings(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = check_array(X, dtype=[np.float64, np.float32], ensure_all_finite=False)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but Taxonomy is expecting {self.n_features_in_} "
                "features as input; embed the galaxies with the encoder the taxonomy was fitted on"
            )
        return self._standardized(_finite_rows(X, name="X"))

    def _place(self, Z: np.ndarray) -> tuple[np.ndarray, TrainingNeighbours | None, np.ndarray]:
        """The clustering embedding of new standardised galaxies, their nearest
        training galaxies, and their isolation (see :meth:`assign`), (M,)."""
        neighbours = training_neighbours(self.reducer_, Z, k=self.n_neighbors - 1)
        embedding = transform_each(self.reducer_, Z, neighbours)
        if neighbours is None or not np.isfinite(self.isolation_radius_):
            return embedding, neighbours, np.zeros(len(Z))
        radius = max(self.isolation_radius_, np.finfo(np.float64).tiny)
        return embedding, neighbours, neighbours.distances[:, -1] / radius

    def _assign_clusters(
        self, embedding: np.ndarray, inputs: np.ndarray, isolation: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.n_clusters_ == 0:
            return np.full(len(embedding), -1, dtype=np.intp), np.zeros(len(embedding))
        hdbscan_labels, probabilities = hdbscan.approximate_predict(self.clusterer_, embedding)
        hdbscan_labels = hdbscan_labels.astype(np.intp)
        joined = self._join_clusters(hdbscan_labels, embedding, scores)
        labels = self._draw_borders(joined, inputs)
        probabilities = np.where(labels == hdbscan_labels, probabilities, 0.0)
        labels = np.where(isolation > 1, -1, labels).astype(np.intp)
        return labels, np.where(isolation > 1, 0.0, probabilities)

    def _outlier_scores(self, embedding: np.ndarray, isolation: np.ndarray) -> np.ndarray:
        """GLOSH scores of new galaxies, raised for those beyond the training set."""
        if self.n_clusters_ == 0:
            return np.ones(len(embedding))
        # GLOSH is in [0, 1]; a new galaxy denser than its neighbour's cluster ever
        # gets (λ > λ_max) would come out below 0: it is no outlier at all.
        scores = np.clip(hdbscan.approximate_predict_scores(self.clusterer_, embedding), 0, 1)
        beyond = isolation > 1
        scores[beyond] = np.maximum(scores[beyond], 1 - 1 / isolation[beyond])
        return scores

    @keeps_torch_threads
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Cluster of new galaxies.

        Each galaxy is placed in the clustering embedding by ``UMAP.transform``
        and assigned by ``hdbscan.approximate_predict`` without changing the
        taxonomy; a galaxy beyond the training set (see :meth:`assign`) is noise.
        Use :meth:`assign` for probabilities, outlier scores and map positions.

        Parameters
        ----------
        X : (M, d) float
            Embeddings of the new galaxies, from the same encoder as the training set.

        Returns
        -------
        (M,) int
            Cluster labels, -1 for noise.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the taxonomy is not fitted.
        ValueError
            If ``X`` is not 2-D, has another number of features, or has NaN or inf.
        """
        Z = self._new_embeddings(X)
        embedding, _, isolation = self._place(Z)
        if self.cluster_vote_ is None:  # the scores matter only to join clusters
            scores = np.zeros(len(embedding))
        else:
            scores = self._outlier_scores(embedding, isolation)
        return self._assign_clusters(embedding, Z, isolation, scores)[0]

    @keeps_torch_threads
    def assign(self, X: np.ndarray, *, ids: Sequence | None = None) -> pd.DataFrame:
        """Place new galaxies in the taxonomy, with the columns of :meth:`table`.

        The outlier score of a new galaxy is GLOSH against the unchanged training
        tree (``hdbscan.approximate_predict_scores``): among its 2 × min_samples
        nearest training galaxies in the clustering embedding, take the one at the
        smallest mutual-reachability distance r; with λ = 1/r and λ_max the largest
        λ below the condensed-tree cluster that neighbour leaves, the score is
        (λ_max − λ) / λ_max, in [0, 1]. Without clusters, every score is 1.

        UMAP places any galaxy among its nearest training galaxies, however far
        they are, so GLOSH in the clustering embedding cannot see a galaxy unlike
        all of them. Its isolation does: the distance to its ``n_neighbors - 1``-th
        nearest training galaxy over :attr:`isolation_radius_`, the largest such
        distance within the training set. A galaxy of isolation s > 1 lies beyond
        the training set: it is noise (cluster -1, probability 0), and its score is
        at least 1 − 1/s (GLOSH's form, with λ = 1/distance), which tends to 1 far
        away.

        Parameters
        ----------
        X : (M, d) float
            Embeddings of the new galaxies.
        ids : sequence of length M, optional
            Their identifiers; 0, 1, ..., M − 1 if omitted.

        Returns
        -------
        pandas.DataFrame
            Columns ``id``, ``cluster``, ``probability``, ``outlier_score``,
            ``map_x``, ``map_y``, ``parent``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the taxonomy is not fitted.
        ValueError
            If ``X`` is invalid (see :meth:`predict`) or ``ids`` has another length.
        """
        Z = self._new_embeddings(X)
        ids = _ids(ids, len(Z), what="X")
        embedding, neighbours, isolation = self._place(Z)
        scores = self._outlier_scores(embedding, isolation)
        labels, probabilities = self._assign_clusters(embedding, Z, isolation, scores)
        # The map's UMAP shares the index: the same neighbours.
        map_xy = transform_each(self.map_reducer_, Z, neighbours)
        return self._frame(ids, labels, probabilities, scores, map_xy)

    # Exploring --------------------------------------------------------------------------

    def table(self, ids: Sequence | None = None) -> pd.DataFrame:
        """The taxonomy table of the training galaxies.

        Parameters
        ----------
        ids : sequence of length N, optional
            Galaxy identifiers, in the order of the rows of the ``X`` given to
            :meth:`fit`; 0, 1, ..., N − 1 if omitted.

        Returns
        -------
        pandas.DataFrame
            One row per galaxy: ``id``; ``cluster`` (-1 for noise);
            ``probability``; ``outlier_score``; ``map_x``, ``map_y`` (the first
            two axes of ``embedding_2d_``); ``parent`` (the tree node above the
            galaxy's cluster, -1 for noise or a cluster at the root).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the taxonomy is not fitted.
        ValueError
            If ``ids`` does not have one entry per training galaxy.
        """
        check_is_fitted(self)
        ids = _ids(ids, len(self.labels_), what="the X given to fit")
        return self._frame(
            ids, self.labels_, self.probabilities_, self.outlier_scores_, self.embedding_2d_
        )

    def parent_node(self, label: int) -> int:
        """The tree node (``tree_.node``) above cluster ``label``; -1 if it is the root.

        Raises
        ------
        KeyError
            If ``label`` is not a cluster of this taxonomy.
        """
        check_is_fitted(self)
        rows = self.tree_[self.tree_["label"] == label]
        if label < 0 or rows.empty:
            raise KeyError(f"no cluster {label}; the clusters are 0 to {self.n_clusters_ - 1}")
        return int(rows["parent"].iloc[0])

    def _frame(self, ids, labels, probabilities, scores, positions) -> pd.DataFrame:
        leaves = self.tree_[self.tree_["label"] >= 0]
        parent_of = pd.Series(leaves["parent"].to_numpy(), index=leaves["label"].to_numpy())
        return pd.DataFrame(
            {
                "id": ids,
                "cluster": labels,
                "probability": probabilities,
                "outlier_score": scores,
                "map_x": positions[:, 0],
                "map_y": positions[:, 1],
                "parent": pd.Series(labels).map(parent_of).fillna(-1).astype(int).to_numpy(),
            }
        )


def _map_start(embedding: np.ndarray, n_components: int) -> np.ndarray | str:
    """The map's starting layout: the clustering embedding's leading principal axes,
    scaled to umap-learn's [0, 10] box; "spectral" if it has too few dimensions."""
    if embedding.shape[1] < n_components:
        return "spectral"
    centred = embedding - embedding.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    start = centred @ axes[:n_components].T
    # Fix each axis's sign (an SVD may return either), so the map does not flip.
    start *= np.where(np.abs(start.max(axis=0)) >= np.abs(start.min(axis=0)), 1.0, -1.0)
    span = np.ptp(start, axis=0)
    return 10 * (start - start.min(axis=0)) / np.where(span > 0, span, 1.0)


def _ids(ids: Sequence | None, n: int, *, what: str) -> np.ndarray:
    if ids is None:
        return np.arange(n)
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(
            f"ids has shape {ids.shape} but {what} has {n} galaxies; pass one id per "
            "galaxy, in the same order"
        )
    return ids
