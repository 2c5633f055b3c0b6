"""The size-limited excess-of-mass selection: what it splits, and a dominant class kept whole."""

from __future__ import annotations

import hdbscan
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from morpho.taxonomy.selection import SPLIT_SHARE, SPLIT_WORTH, clusters_to_split

CONDENSED_DTYPE = [
    ("parent", np.intp),
    ("child", np.intp),
    ("lambda_val", float),
    ("child_size", np.intp),
]


def toy_tree(c: int = 30, d: int = 25) -> pd.DataFrame:
    """A condensed tree of 100 points: root 100 → A 101 (60) and B 102 (40); A → C 103
    (``c``) and D 104 (``d``) after 60 - c - d points leave A; C, D and B lose their
    points one by one."""
    rows = [(100, 101, 1.0, 60), (100, 102, 1.0, 40), (101, 103, 2.0, c), (101, 104, 2.0, d)]
    rows += [(101, p, 1.5, 1) for p in range(c + d, 60)]
    rows += [(103, p, 3.0, 1) for p in range(0, c)]
    rows += [(104, p, 3.0, 1) for p in range(c, c + d)]
    rows += [(102, p, 4.0, 1) for p in range(60, 100)]
    return pd.DataFrame(np.array(rows, dtype=CONDENSED_DTYPE))


def worth_of_a(fraction: float) -> dict[int, float]:
    """Stabilities where the selection below A (C + D) is worth ``fraction`` × SPLIT_WORTH of A."""
    return {100: 1.0, 101: 10.0, 102: 8.0, 103: 0.5, 104: fraction * SPLIT_WORTH * 10 - 0.5}


@pytest.mark.parametrize(
    ("c", "d", "fraction", "expected"),
    [
        # C and D hold 35 of A's 60 galaxies (0.58 < SPLIT_SHARE) and are worth just
        # under SPLIT_WORTH of A: A looks like one dense class and stays whole.
        (20, 15, 0.99, set()),
        # Worth just over SPLIT_WORTH: A is split.
        (20, 15, 1.01, {101}),
        # Worth little, but C and D hold 55 of A's 60 galaxies (0.92): A is split.
        (30, 25, 0.99, {101}),
    ],
)
def test_a_cluster_over_the_limit_is_split_unless_the_tree_below_looks_like_one_class(
    c, d, fraction, expected
) -> None:
    assert SPLIT_SHARE * 60 > 35
    assert clusters_to_split(toy_tree(c, d), worth_of_a(fraction), max_size=50) == expected
    # Under the limit nothing is split.
    assert clusters_to_split(toy_tree(c, d), worth_of_a(fraction), max_size=60) == set()


def test_clusters_without_sub_clusters_are_never_split() -> None:
    # B (40) and D (25) are leaves over a limit of 20; A, over it too, is split.
    stability = {100: 1.0, 101: 10.0, 102: 8.0, 103: 1.0, 104: 0.6}
    assert clusters_to_split(toy_tree(), stability, max_size=20) == {101}


def test_a_dominant_class_is_kept_whole_under_the_size_limit(fitted, blobs) -> None:
    # The largest blob holds 40% of the galaxies. With a limit of 35%, HDBSCAN's own
    # max_cluster_size drops it (its sub-clusters are density fluctuations), while the
    # taxonomy keeps it: the tree below it looks like one class (worth 0.05, share 0.57).
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
