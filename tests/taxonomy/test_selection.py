"""The size-limited excess-of-mass selection: what it splits, and a dominant class kept whole."""

from __future__ import annotations

import hdbscan
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from morpho.taxonomy.selection import SPLIT_WORTH, clusters_to_split

CONDENSED_DTYPE = [
    ("parent", np.intp),
    ("child", np.intp),
    ("lambda_val", float),
    ("child_size", np.intp),
]


def toy_tree() -> np.ndarray:
    """A condensed tree of 100 points: root 100 → A 101 (60) and B 102 (40); A → C 103
    (30) and D 104 (25), and 5 points leave A; C, D and B lose their points one by one."""
    rows = [(100, 101, 1.0, 60), (100, 102, 1.0, 40), (101, 103, 2.0, 30), (101, 104, 2.0, 25)]
    rows += [(101, p, 1.5, 1) for p in range(55, 60)]
    rows += [(103, p, 3.0, 1) for p in range(0, 30)]
    rows += [(104, p, 3.0, 1) for p in range(30, 55)]
    rows += [(102, p, 4.0, 1) for p in range(60, 100)]
    return np.array(rows, dtype=CONDENSED_DTYPE)


@pytest.mark.parametrize(
    ("below", "expected"),
    [
        # The selection below A (C + D) is worth just under SPLIT_WORTH of A: A stays whole.
        ({103: 0.5, 104: 0.99 * SPLIT_WORTH * 10 - 0.5}, set()),
        # Just over it: A is split.
        ({103: 0.5, 104: 1.01 * SPLIT_WORTH * 10 - 0.5}, {101}),
    ],
)
def test_a_cluster_over_the_limit_is_split_only_when_the_tree_below_is_worth_it(
    below, expected
) -> None:
    stability = {100: 1.0, 101: 10.0, 102: 8.0, **below}
    assert clusters_to_split(toy_tree(), stability, max_size=50) == expected


def test_the_worth_below_counts_the_best_selection_there_and_leaves_are_never_split() -> None:
    # D is over a limit of 26 and has no sub-clusters: it is not split. A is over it
    # too; below it, C (1.0) and D (0.6) are worth 1.6 > 0.15 × 10: A is split.
    stability = {100: 1.0, 101: 10.0, 102: 8.0, 103: 1.0, 104: 0.6}
    assert clusters_to_split(toy_tree(), stability, max_size=26) == {101}
    # B (40) is a leaf over a limit of 20: never split.
    assert 102 not in clusters_to_split(toy_tree(), stability, max_size=20)


def test_a_dominant_class_is_kept_whole_under_the_size_limit(fitted, blobs) -> None:
    # The largest blob holds 40% of the galaxies. With a limit of 35%, HDBSCAN's own
    # max_cluster_size drops it (its sub-clusters are density fluctuations), while the
    # taxonomy keeps it: the tree below it is worth little.
    X, truth = blobs
    limited = fitted.recluster(max_cluster_fraction=0.35)
    assert limited.n_clusters_ == 4
    assert adjusted_rand_score(truth, limited.labels_) >= 0.95
    assert np.mean(limited.clusterer_.labels_ == -1) < 0.05
    native = hdbscan.HDBSCAN(
        min_cluster_size=fitted.min_cluster_size,
        min_samples=fitted._min_samples(),
        max_cluster_size=int(0.35 * len(X)),
    ).fit(fitted.embedding_)
    assert np.mean(native.labels_[truth == 0] == -1) > 0.2
    # Its prediction data follow the new selection.
    np.testing.assert_array_equal(limited.predict(X[:50]), limited.labels_[:50])
