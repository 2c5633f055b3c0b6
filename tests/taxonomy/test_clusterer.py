"""The taxonomy estimator: clusters recovered, predictions, reproducibility, contract, bad input."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from morpho.taxonomy import Taxonomy, clusterer
from morpho.taxonomy.clusterer import TABLE_COLUMNS, _map_start
from morpho.taxonomy.reduce import (
    EXACT_GRAPH_UP_TO,
    EXACT_NEIGHBOURS_BELOW,
    ExactNeighbourIndex,
    shared_neighbours,
)

# Small enough for the data sets of scikit-learn's checks (10 to 150 samples).
TINY = {"n_components": 2, "n_neighbors": 5, "min_cluster_size": 5, "n_epochs": 20}


# Known answers ------------------------------------------------------------------------------


def test_recovers_well_separated_blobs(fitted, blobs) -> None:
    X, truth = blobs
    n = len(X)
    assert adjusted_rand_score(truth, fitted.labels_) >= 0.95
    assert fitted.n_clusters_ == 4
    assert np.mean(fitted.labels_ == -1) < 0.05
    assert fitted.labels_.shape == fitted.probabilities_.shape == fitted.outlier_scores_.shape
    assert fitted.labels_.shape == (n,)
    assert fitted.embedding_.shape == (n, 8)
    assert fitted.embedding_2d_.shape == (n, 2)
    assert fitted.n_features_in_ == 16
    # Small sets share the exact index too (umap-learn's own small-data search rounds
    # distances differently in every batch).
    assert isinstance(fitted.reducer_.precomputed_knn[2], ExactNeighbourIndex)
    assert fitted.map_reducer_.precomputed_knn[2] is fitted.reducer_.precomputed_knn[2]
    np.testing.assert_allclose(fitted.mean_, X.mean(axis=0))
    np.testing.assert_allclose(fitted.scale_, X.std(axis=0))


def overlapping_blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five overlapping blobs (3-4 σ apart) of 200 and one far away: (X, truth, centres)."""
    rng = np.random.default_rng(7)
    centres = np.zeros((6, 16))
    centres[1:] = 0.8 * rng.normal(size=(5, 16))
    centres[0, 0] = 60.0
    truth = rng.permutation(np.repeat(np.arange(6), 200))
    X = centres[truth] + rng.normal(size=(len(truth), 16))
    return X, truth, centres


def test_the_selection_goes_below_a_first_split_that_holds_most_galaxies() -> None:
    # The most stable clusters are the far blob and the union of the five, which holds
    # 83% of the galaxies.
    X, truth, _ = overlapping_blobs()
    # Blobs of 200: below the default min_cluster_size (200) once their edges fall to noise.
    small = {"min_cluster_size": 50}
    unlimited = Taxonomy(max_cluster_fraction=None, **small).fit(X)
    assert unlimited.n_clusters_ == 2
    limited = Taxonomy(max_cluster_fraction=0.5, **small).fit(X)
    assert limited.n_clusters_ == 6
    assert np.bincount(limited.labels_[limited.labels_ >= 0]).max() <= 0.5 * len(X)
    assert adjusted_rand_score(truth, limited.labels_) > 0.5
    assert adjusted_rand_score(truth, unlimited.labels_) < 0.2


def test_only_outliers_stay_noise_with_an_outlier_quantile() -> None:
    # Between overlapping blobs HDBSCAN leaves a fifth of the galaxies out (21% here).
    X, truth, centres = overlapping_blobs()
    taxonomy = Taxonomy(min_cluster_size=50, outlier_quantile=0.9, boundaries="density").fit(X)
    hdbscan_labels = taxonomy.clusterer_.labels_
    assert taxonomy.n_clusters_ == 6
    assert np.mean(hdbscan_labels == -1) > 0.15
    threshold = np.quantile(taxonomy.outlier_scores_, 0.9)
    assert taxonomy.outlier_threshold_ == pytest.approx(threshold)
    # Clustered galaxies keep their cluster; outliers stay noise; the rest join the
    # cluster held by most of their n_neighbors nearest clustered galaxies.
    clustered = hdbscan_labels >= 0
    np.testing.assert_array_equal(taxonomy.labels_[clustered], hdbscan_labels[clustered])
    outlier = ~clustered & (taxonomy.outlier_scores_ > threshold)
    np.testing.assert_array_equal(taxonomy.labels_[outlier], -1)
    joining = np.flatnonzero(~clustered & ~outlier)
    assert len(joining) > 0.1 * len(X)
    E = taxonomy.embedding_
    distances = np.linalg.norm(E[joining, None] - E[None, clustered], axis=2)
    nearest = np.argsort(distances, axis=1)[:, : taxonomy.n_neighbors]
    votes = hdbscan_labels[clustered][nearest]
    majority = [np.bincount(v, minlength=6).argmax() for v in votes]
    np.testing.assert_array_equal(taxonomy.labels_[joining], majority)
    assert np.mean(taxonomy.labels_ == -1) <= 0.1 + 1e-9
    # The joined galaxies mostly belong where they were put: the ARI rises.
    assert (
        adjusted_rand_score(truth, taxonomy.labels_)
        > adjusted_rand_score(truth, hdbscan_labels) + 0.05
    )
    # New galaxies alike; one beyond the training set stays noise.
    rng = np.random.default_rng(3)
    new = centres[truth[:300]] + rng.normal(size=(300, 16))
    predicted = taxonomy.predict(new)
    by_hdbscan = taxonomy.recluster(outlier_quantile=None).predict(new)
    # (The vote's share differs between CPUs: 0.25 against 0.41 on an AVX2 EPYC.)
    assert np.mean(predicted == -1) < 0.7 * np.mean(by_hdbscan == -1)
    np.testing.assert_array_equal(predicted[by_hdbscan >= 0], by_hdbscan[by_hdbscan >= 0])
    assert adjusted_rand_score(truth[:300], predicted) > adjusted_rand_score(
        truth[:300], by_hdbscan
    )
    np.testing.assert_array_equal(taxonomy.assign(new)["cluster"], predicted)
    assert taxonomy.predict(X[:1] + 30.0)[0] == -1


def two_blobs() -> np.ndarray:
    """1000 galaxies of two unit-variance blobs in 16-d, 5 σ apart along the first axis."""
    rng = np.random.default_rng(0)
    truth = rng.permutation(np.repeat([0, 1], 500))
    X = rng.normal(size=(1000, 16))
    X[:, 0] += 5.0 * (truth - 0.5)
    return X


def test_linear_boundaries_draw_the_bayes_border_between_two_blobs() -> None:
    # Two unit-variance blobs 5 σ apart along the first axis: the best border is the
    # hyperplane x0 = 0, which only 0.6% of the galaxies cross. UMAP bends the space
    # between them, and the density's borders (HDBSCAN and the vote) put 4% on the
    # wrong side; the classifier of the input embeddings finds the plane.
    X = two_blobs()
    density = Taxonomy(min_cluster_size=50, outlier_quantile=0.9, boundaries="density").fit(X)
    linear = density.recluster(boundaries="linear")
    assert density.n_clusters_ == linear.n_clusters_ == 2
    side = X[:, 0] > 0

    def on_the_right_side(labels: np.ndarray) -> float:
        placed = labels >= 0
        agree = np.mean((labels[placed] == 1) == side[placed])
        return max(agree, 1 - agree)

    assert on_the_right_side(linear.labels_) >= 0.98
    assert on_the_right_side(linear.labels_) > on_the_right_side(density.labels_)
    normal = linear.cluster_classifier_.coef_[0] / linear.scale_
    assert abs(normal[0]) / np.linalg.norm(normal) > 0.7


def test_the_linear_borders_are_fitted_to_a_sample_of_a_large_set(monkeypatch) -> None:
    # Two blobs 5 σ apart, as above: 300 of the 900 placed galaxies still find the
    # border, and the sample is drawn the same way every time.
    X = two_blobs()
    sizes = []

    class Recording(LogisticRegression):
        def fit(self, X, y):
            sizes.append(len(X))
            return super().fit(X, y)

    monkeypatch.setattr(clusterer, "CLASSIFIER_SAMPLE", 300)
    monkeypatch.setattr(clusterer, "LogisticRegression", Recording)
    taxonomy = Taxonomy(min_cluster_size=50, outlier_quantile=0.9, boundaries="linear").fit(X)
    again = taxonomy.recluster(min_samples=50)
    assert sizes == [300, 300]
    np.testing.assert_array_equal(again.labels_, taxonomy.labels_)
    placed = taxonomy.labels_ >= 0
    agree = np.mean((taxonomy.labels_[placed] == 1) == (X[placed, 0] > 0))
    assert max(agree, 1 - agree) >= 0.95


def test_linear_boundaries_relabel_the_placed_galaxies_only() -> None:
    X, _, centres = overlapping_blobs()
    density = Taxonomy(min_cluster_size=50, outlier_quantile=0.9, boundaries="density").fit(X)
    linear = density.recluster(boundaries="linear")
    assert density.cluster_classifier_ is None
    classifier = linear.cluster_classifier_
    # Trained on the clustered and joined galaxies; every one of them gets its cluster,
    # the outliers stay noise.
    placed = density.labels_ >= 0
    np.testing.assert_array_equal(linear.labels_ < 0, ~placed)
    inputs = linear._new_embeddings(X)
    np.testing.assert_array_equal(linear.labels_[placed], classifier.predict(inputs[placed]))
    assert (linear.labels_ != density.labels_).any()
    # HDBSCAN's membership strength only where the cluster is HDBSCAN's.
    hdbscan_labels = linear.clusterer_.labels_
    same = linear.labels_ == hdbscan_labels
    np.testing.assert_array_equal(
        linear.probabilities_[same], linear.clusterer_.probabilities_[same]
    )
    np.testing.assert_array_equal(linear.probabilities_[~same], 0.0)
    # New galaxies alike, with the same noise as the density's borders.
    new = centres[np.arange(300) % 6] + np.random.default_rng(3).normal(size=(300, 16))
    by_density = density.predict(new)
    predicted = linear.predict(new)
    kept = by_density >= 0
    np.testing.assert_array_equal(predicted < 0, ~kept)
    np.testing.assert_array_equal(
        predicted[kept], classifier.predict(linear._new_embeddings(new)[kept])
    )
    table = linear.assign(new)
    np.testing.assert_array_equal(table["cluster"], predicted)
    np.testing.assert_array_equal(table["probability"][predicted != by_density], 0.0)
    fresh = Taxonomy(min_cluster_size=50, outlier_quantile=0.9).fit(X)
    np.testing.assert_array_equal(fresh.labels_, linear.labels_)


def test_recluster_equals_a_fresh_fit_and_leaves_the_original(fitted, blobs, new_blobs):
    X, _ = blobs
    labels_before = fitted.labels_.copy()
    change = {"min_cluster_size": 60, "min_samples": 10, "cluster_selection_method": "leaf"}
    reclustered = fitted.recluster(**change, outlier_quantile=None)
    fresh = Taxonomy(**{**fitted.get_params(), **change, "outlier_quantile": None}).fit(X)
    for name in ("labels_", "probabilities_", "outlier_scores_", "embedding_"):
        np.testing.assert_array_equal(getattr(reclustered, name), getattr(fresh, name), name)
    pd.testing.assert_frame_equal(reclustered.tree_, fresh.tree_)
    np.testing.assert_array_equal(reclustered.predict(new_blobs[0]), fresh.predict(new_blobs[0]))
    assert reclustered.get_params()["cluster_selection_method"] == "leaf"
    assert reclustered.reducer_ is fitted.reducer_  # shared, not refitted
    np.testing.assert_array_equal(fitted.labels_, labels_before)
    assert fitted.get_params()["cluster_selection_method"] == "eom"


def test_recluster_refuses_what_needs_a_fit(fitted):
    with pytest.raises(ValueError, match="n_neighbors need fit"):
        fitted.recluster(n_neighbors=15)
    with pytest.raises(ValueError, match="min_cluster_size must be an integer >= 2"):
        fitted.recluster(min_cluster_size=1)
    with pytest.raises(NotFittedError):
        Taxonomy().recluster(min_cluster_size=50)


def test_a_taxonomy_saved_before_outlier_quantile_loads_with_hdbscans_noise(fitted, new_blobs):
    new = new_blobs[0]
    state = pickle.loads(pickle.dumps(fitted)).__dict__
    for name in (
        "outlier_quantile",
        "outlier_threshold_",
        "cluster_vote_",
        "init",
        "boundaries",
        "cluster_classifier_",
    ):
        del state[name]
    old = Taxonomy.__new__(Taxonomy)
    old.__setstate__(state)
    assert old.get_params()["outlier_quantile"] is None
    assert old.get_params()["init"] == "spectral"
    assert old.get_params()["boundaries"] == "density"
    assert old.cluster_vote_ is None
    assert old.cluster_classifier_ is None
    assert old.outlier_threshold_ == np.inf
    as_before = fitted.recluster(outlier_quantile=None, boundaries="density")
    np.testing.assert_array_equal(old.predict(new), as_before.predict(new))


@pytest.mark.parametrize(("min_samples", "used"), [(50, 5), (None, 5), (3, 3)])
def test_min_samples_is_at_most_min_cluster_size(blobs, min_samples, used) -> None:
    # The default min_samples (50) follows a lowered min_cluster_size, as None does.
    X, _ = blobs
    params = {**TINY, "min_samples": min_samples}
    assert Taxonomy(**params).fit(X[:200]).clusterer_.min_samples == used


def test_predict_on_jittered_training_set_agrees_with_labels(fitted, blobs) -> None:
    X, _ = blobs
    # A jitter well below the blobs' unit scatter makes UMAP transform every galaxy
    # instead of returning embedding_ for an input identical to the training set.
    jittered = X + 0.01 * np.random.default_rng(5).normal(size=X.shape)
    predicted = fitted.predict(jittered)
    confident = fitted.probabilities_ > 0.9
    assert confident.sum() > 0.5 * len(X)
    assert np.mean(predicted[confident] == fitted.labels_[confident]) >= 0.95


def test_assign_places_new_galaxies(fitted, new_blobs) -> None:
    X, truth = new_blobs
    ids = [f"g{i}" for i in range(len(X))]
    assigned = fitted.assign(X, ids=ids)
    assert list(assigned.columns) == TABLE_COLUMNS
    assert assigned["id"].tolist() == ids
    assert adjusted_rand_score(truth, assigned["cluster"]) >= 0.95
    np.testing.assert_array_equal(assigned["cluster"], fitted.predict(X))
    assert assigned["probability"].between(0, 1).all()
    assert assigned["outlier_score"].between(0, 1).all()
    # New galaxies land where their training cluster sits on the map.
    table = fitted.table()
    centres = table[table.cluster >= 0].groupby("cluster")[["map_x", "map_y"]].median()
    placed = assigned[assigned.cluster >= 0]
    nearest = np.argmin(
        np.linalg.norm(placed[["map_x", "map_y"]].to_numpy()[:, None] - centres.to_numpy(), axis=2),
        axis=1,
    )
    np.testing.assert_array_equal(centres.index[nearest], placed["cluster"])


def test_a_far_away_galaxy_is_an_outlier(fitted, blobs) -> None:
    X, _ = blobs
    typical = fitted.assign(X[:5] + 0.01)
    far = fitted.assign(X[:1] + 30.0)
    assert far["outlier_score"].iloc[0] > typical["outlier_score"].max()
    # UMAP alone would place it among its nearest training galaxies, in their cluster:
    # beyond the training set it is noise, and its score tends to 1.
    assert far["cluster"].iloc[0] == -1
    assert far["probability"].iloc[0] == 0
    assert far["outlier_score"].iloc[0] > 0.9
    assert fitted.predict(X[:1] + 30.0)[0] == -1
    np.testing.assert_array_equal(typical["cluster"], fitted.labels_[:5])


def test_isolation_is_one_at_the_most_isolated_training_galaxy(fitted, blobs) -> None:
    X, _ = blobs
    Z = fitted._standardized(X)
    distances = np.sort(np.linalg.norm(Z[:, None] - Z[None], axis=2), axis=1)
    # The (n_neighbors - 1)-th other galaxy: column n_neighbors - 1 (column 0 is itself).
    expected = distances[:, fitted.n_neighbors - 1].max()
    np.testing.assert_allclose(fitted.isolation_radius_, expected, rtol=1e-5)
    _, _, isolation = fitted._place(Z)
    assert isolation.max() <= 1 + 1e-6  # no training galaxy lies beyond the training set


def test_same_data_and_seed_give_identical_labels(blobs) -> None:
    X = blobs[0][:300]
    params = {"n_neighbors": 15, "min_cluster_size": 20, "n_epochs": 100}
    first = Taxonomy(**params, random_state=7)
    assert first.fit(X) is first
    second = Taxonomy(**params, random_state=7).fit_predict(X)
    np.testing.assert_array_equal(first.labels_, second)
    assert len(np.unique(second)) >= 4
    other_seed = Taxonomy(**params, random_state=8).fit(X)
    assert not np.array_equal(other_seed.embedding_2d_, first.embedding_2d_)


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["exact", "approximate"])
def test_large_sets_share_one_neighbour_graph(graph, large_blobs, new_blobs, monkeypatch) -> None:
    """From 4096 galaxies up, both UMAPs get one graph and still transform: exact (up to
    EXACT_GRAPH_UP_TO galaxies, here 4200), or pynndescent's above (the limit lowered)."""
    X, truth = large_blobs
    assert EXACT_NEIGHBOURS_BELOW <= len(X) <= EXACT_GRAPH_UP_TO
    if graph == "approximate":
        monkeypatch.setattr("morpho.taxonomy.reduce.EXACT_GRAPH_UP_TO", len(X) - 1)
    taxonomy = Taxonomy(min_cluster_size=40, n_epochs=50).fit(X)
    index = taxonomy.reducer_.precomputed_knn[2]
    kind = {"exact": "ExactNeighbourIndex", "approximate": "NNDescent"}[graph]
    assert type(index).__name__ == kind
    assert taxonomy.map_reducer_.precomputed_knn[2] is index
    assert adjusted_rand_score(truth, taxonomy.labels_) >= 0.95
    assigned = taxonomy.assign(new_blobs[0])
    assert adjusted_rand_score(new_blobs[1], assigned["cluster"]) >= 0.95
    assert pickle.loads(pickle.dumps(taxonomy)).assign(new_blobs[0]).equals(assigned)


# The taxonomy table and tree -------------------------------------------------------------


def test_table(fitted, blobs) -> None:
    ids = pd.Index([f"G{i:04d}" for i in range(len(blobs[0]))])
    table = fitted.table(ids)
    assert list(table.columns) == TABLE_COLUMNS
    assert table["id"].tolist() == ids.tolist()
    np.testing.assert_array_equal(table["cluster"], fitted.labels_)
    np.testing.assert_array_equal(table[["map_x", "map_y"]], fitted.embedding_2d_)
    for label in range(fitted.n_clusters_):
        parents = table.loc[table.cluster == label, "parent"].unique()
        assert parents.tolist() == [fitted.parent_node(label)]
    assert (table.loc[table.cluster == -1, "parent"] == -1).all()
    assert fitted.table()["id"].tolist() == list(range(len(ids)))


def test_tree_of_fitted_taxonomy(fitted) -> None:
    tree = fitted.tree_
    leaves = tree[tree.label >= 0]
    assert sorted(leaves.label) == list(range(fitted.n_clusters_))
    assert tree.loc[tree.parent == -1, "node"].tolist() == [0]
    assert tree.loc[0, "size"] == len(fitted.labels_)
    sizes = np.bincount(fitted.labels_[fitted.labels_ >= 0])
    np.testing.assert_array_equal(leaves.sort_values("label")["size"], sizes)


def test_parent_node_of_unknown_cluster(fitted) -> None:
    with pytest.raises(KeyError, match="no cluster 17; the clusters are 0 to 3"):
        fitted.parent_node(17)


# Estimator contract -----------------------------------------------------------------------


def test_init_stores_arguments_unchanged() -> None:
    params = {"n_components": 5, "min_samples": 3, "metric": "cosine", "random_state": None}
    taxonomy = Taxonomy(**params)
    assert {k: taxonomy.get_params()[k] for k in params} == params
    assert set(vars(taxonomy)) == set(taxonomy.get_params())
    assert taxonomy.set_params(n_neighbors=12) is taxonomy
    assert taxonomy.n_neighbors == 12
    assert clone(taxonomy).get_params() == taxonomy.get_params()


def test_unfitted_taxonomy_refuses_to_predict(blobs) -> None:
    X = blobs[0]
    for method in (Taxonomy().predict, Taxonomy().assign):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(NotFittedError):
        Taxonomy().table()


@parametrize_with_checks([Taxonomy(**TINY)])
def test_scikit_learn_checks(estimator, check) -> None:
    """All of scikit-learn's estimator checks, run one by one on tiny settings."""
    check(estimator)


# Bad input --------------------------------------------------------------------------------


def test_nan_and_inf_rows_are_named(blobs) -> None:
    X = blobs[0].copy()
    X[[3, 10, 11], 2] = np.nan
    X[500, 0] = np.inf
    with pytest.raises(ValueError, match=r"4 of 1000 rows with NaN or inf .*\[3, 10, 11, 500\]"):
        Taxonomy().fit(X)


def test_nan_in_new_galaxies(fitted, new_blobs) -> None:
    X = new_blobs[0].copy()
    X[7, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 of 120 rows with NaN or inf .*\[7\]"):
        fitted.predict(X)


def test_too_few_galaxies(blobs) -> None:
    with pytest.raises(ValueError, match=r"X has 30 sample.* at least 50 .*lower min_cluster_size"):
        Taxonomy(min_cluster_size=50).fit(blobs[0][:30])
    with pytest.raises(ValueError, match=r"at least 31 .*n_neighbors \+ 1=31"):
        Taxonomy(min_cluster_size=5, n_neighbors=30).fit(blobs[0][:30])


def test_one_dimensional_input(blobs, fitted) -> None:
    with pytest.raises(ValueError, match="Expected 2D"):
        Taxonomy().fit(blobs[0][:, 0])
    with pytest.raises(ValueError, match="Expected 2D"):
        fitted.predict(blobs[0][0])


def test_wrong_number_of_features(fitted, blobs) -> None:
    with pytest.raises(ValueError, match="X has 15 features, but Taxonomy is expecting 16"):
        fitted.predict(blobs[0][:, :15])


def test_ids_of_wrong_length(fitted, new_blobs) -> None:
    with pytest.raises(ValueError, match=r"ids has shape \(999,\) but .* has 1000 galaxies"):
        fitted.table(np.arange(999))
    with pytest.raises(ValueError, match=r"ids has shape \(3,\) but X has 120 galaxies"):
        fitted.assign(new_blobs[0], ids=["a", "b", "c"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cluster_selection_method": "tallest"}, "cluster_selection_method must be 'eom'"),
        ({"n_neighbors": 1}, "n_neighbors must be an integer >= 2, got 1"),
        ({"map_components": 1}, "map_components must be an integer >= 2"),
        ({"min_samples": 0}, "min_samples must be None or >= 1, got 0"),
        ({"map_n_epochs": 0}, "map_n_epochs must be None or an integer >= 1, got 0"),
        ({"n_epochs": 2.5}, "n_epochs must be None or an integer >= 1, got 2.5"),
        ({"max_cluster_fraction": 0.0}, r"max_cluster_fraction must be None or in \(0, 1\]"),
        ({"max_cluster_fraction": 1.5}, r"max_cluster_fraction must be None or in \(0, 1\]"),
        ({"outlier_quantile": 0.0}, r"outlier_quantile must be None or in \(0, 1\], got 0.0"),
        ({"outlier_quantile": 2}, r"outlier_quantile must be None or in \(0, 1\], got 2"),
        ({"init": "tsne"}, "init must be one of spectral, pca, tswspectral, random, got 'tsne'"),
        ({"boundaries": "convex"}, "boundaries must be one of density, linear, got 'convex'"),
    ],
)
def test_bad_parameters(blobs, params, message) -> None:
    with pytest.raises(ValueError, match=message):
        Taxonomy(**params).fit(blobs[0])


@pytest.mark.slow
def test_fitting_leaves_torch_threads_alone() -> None:
    """With OMP_NUM_THREADS=1, UMAP's numba layer turns torch's one thread into two;
    the taxonomy puts it back (seen: a PixelCNN sampled after clustering ran 5x slower)."""
    script = (
        "import numpy as np, torch\n"
        "from morpho.taxonomy import Taxonomy\n"
        "X = np.random.default_rng(0).normal(size=(200, 8))\n"
        "before = torch.get_num_threads()\n"
        "taxonomy = Taxonomy(n_neighbors=15, min_cluster_size=20, n_epochs=20).fit(X)\n"
        "taxonomy.predict(X[:10])\n"
        "print(before, torch.get_num_threads())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"]


def test_the_map_keeps_the_blobs_apart(fitted, blobs) -> None:
    """The map UMAP starts from the clustering embedding and runs 30 epochs: the four
    blobs stay apart on it (silhouette of the true blobs on the 2-D map)."""
    _, truth = blobs
    assert fitted.map_n_epochs == 30
    assert silhouette_score(fitted.embedding_2d_, truth) > 0.6


def test_the_map_starts_from_the_clustering_embeddings_principal_axes() -> None:
    """Points spread 5:2:1 along three axes: the start is the first two of them (sign
    fixed), scaled to umap-learn's [0, 10] box; too few dimensions: spectral."""
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(500, 3)) * [1.0, 5.0, 2.0]
    start = _map_start(embedding, 2)
    assert start.shape == (500, 2)
    np.testing.assert_allclose(start.min(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(start.max(axis=0), 10.0)
    assert abs(np.corrcoef(start[:, 0], embedding[:, 1])[0, 1]) > 0.99
    assert abs(np.corrcoef(start[:, 1], embedding[:, 2])[0, 1]) > 0.99
    np.testing.assert_allclose(_map_start(-embedding, 2), start)  # the sign is fixed
    assert _map_start(embedding[:, :1], 2) == "spectral"


def test_the_exact_graph_is_every_galaxys_nearest_neighbours() -> None:
    """Against all pairwise distances: each galaxy first, then its k - 1 nearest."""
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(5000, 6)).astype(np.float32)
    indices, distances, index = shared_neighbours(
        Z, n_neighbors=8, metric="euclidean", random_state=0
    )
    assert isinstance(index, ExactNeighbourIndex)
    assert indices.dtype == np.int32
    assert distances.dtype == np.float32
    np.testing.assert_array_equal(indices[:, 0], np.arange(len(Z)))
    some = rng.choice(len(Z), 50, replace=False)
    pairwise = np.linalg.norm(Z[some, None, :].astype(np.float64) - Z[None], axis=-1)
    nearest = np.sort(pairwise, axis=1)[:, :8]
    np.testing.assert_allclose(distances[some], nearest, atol=1e-4)
    new_indices, _ = index.query(Z[some] + 0.01, 8)
    assert new_indices.shape == (50, 8)
    assert (new_indices[:, 0] == some).mean() > 0.9
    # Measured again row by row: a galaxy is at exactly 0 from itself, and its
    # neighbours and distances do not depend on the rows searched with it.
    np.testing.assert_array_equal(distances[:, 0], 0.0)
    np.testing.assert_allclose(distances[some], nearest, rtol=1e-6)
    alone = [index.query(Z[i : i + 1], 8) for i in some[:10]]
    np.testing.assert_array_equal(np.concatenate([a[0] for a in alone]), indices[some[:10]])
    np.testing.assert_array_equal(np.concatenate([a[1] for a in alone]), distances[some[:10]])


@pytest.mark.parametrize("metric", ["manhattan", "chebyshev", "cosine"])
def test_the_exact_index_measures_other_metrics_exactly(metric) -> None:
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(4)
    Z = rng.normal(size=(300, 5)).astype(np.float32)
    X = rng.normal(size=(7, 5)).astype(np.float32)
    indices, distances = ExactNeighbourIndex(Z, metric).query(X, 6)
    scipy_name = {"manhattan": "cityblock"}.get(metric, metric)
    truth = cdist(X.astype(np.float64), Z.astype(np.float64), scipy_name)
    np.testing.assert_array_equal(indices, np.argsort(truth, axis=1)[:, :6])
    np.testing.assert_allclose(distances, np.sort(truth, axis=1)[:, :6], rtol=1e-6, atol=1e-7)


def test_a_training_galaxy_keeps_its_fitted_place(fitted, blobs) -> None:
    """In any batch, not only when the whole training set is assigned at once."""
    X, _ = blobs
    some = [3, 500, 999]
    assigned = fitted.assign(X[some])
    np.testing.assert_array_equal(assigned[["map_x", "map_y"]], fitted.embedding_2d_[some])
    np.testing.assert_array_equal(assigned["cluster"], fitted.labels_[some])


def test_a_galaxy_is_placed_alike_in_any_batch(fitted, new_blobs) -> None:
    """umap-learn scales a batch's edge weights by the batch's largest: without the
    anchor of transform_each, where a galaxy lands depends on the others with it."""
    X = new_blobs[0][:30]
    together = fitted.assign(X)
    pieces = pd.concat([fitted.assign(X[i : i + 7]) for i in range(0, 30, 7)], ignore_index=True)
    order = np.random.default_rng(0).permutation(30)
    shuffled = fitted.assign(X[order]).iloc[np.argsort(order)].reset_index(drop=True)
    columns = ["cluster", "probability", "outlier_score", "map_x", "map_y", "parent"]
    pd.testing.assert_frame_equal(pieces[columns], together[columns])
    pd.testing.assert_frame_equal(shuffled[columns], together[columns])
