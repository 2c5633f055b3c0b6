"""The taxonomy tree against a hand-made condensed tree and a clearly nested data set."""

from __future__ import annotations

import hdbscan
import numpy as np
import pandas as pd
import pytest

from morpho.taxonomy.tree import TREE_COLUMNS, cluster_stability, selected_nodes, taxonomy_tree


def hand_made_condensed_tree() -> pd.DataFrame:
    """Ten points (0-9) under root 10; 10 splits into 11 and 12 at λ = 1, 12 into 13 and 14.

    ::

        10 ─┬─ point 0 leaves at λ 0.5
            ├─ 11 (5 points): 1, 2 leave at λ 2; 3, 4, 5 at λ 3
            └─ 12 (4 points) ─┬─ 13 (2 points) at λ 1.5: 6, 7 leave at λ 4
                              └─ 14 (2 points) at λ 1.5: 8 leaves at λ 2, 9 at λ 5
    """
    rows = [
        (10, 0, 0.5, 1),
        (10, 11, 1.0, 5),
        (10, 12, 1.0, 4),
        (11, 1, 2.0, 1),
        (11, 2, 2.0, 1),
        (11, 3, 3.0, 1),
        (11, 4, 3.0, 1),
        (11, 5, 3.0, 1),
        (12, 13, 1.5, 2),
        (12, 14, 1.5, 2),
        (13, 6, 4.0, 1),
        (13, 7, 4.0, 1),
        (14, 8, 2.0, 1),
        (14, 9, 5.0, 1),
    ]
    return pd.DataFrame(rows, columns=["parent", "child", "lambda_val", "child_size"])


# S(C) = Σ (λ_leave − λ_birth(C)) · size, by hand:
HAND_STABILITY = {
    10: 0.5 * 1 + 1.0 * 5 + 1.0 * 4,  # 9.5
    11: 2 * (2.0 - 1.0) + 3 * (3.0 - 1.0),  # 8
    12: 2 * (1.5 - 1.0) + 2 * (1.5 - 1.0),  # 2
    13: 2 * (4.0 - 1.5),  # 5
    14: (2.0 - 1.5) + (5.0 - 1.5),  # 4
}
# EOM selects 11, 13 and 14 (13 + 14 = 9 > 2); labels follow the cluster ids' order.
HAND_LABELS = np.array([-1, 0, 0, 0, 0, 0, 1, 1, 2, 2])


def test_stability_matches_hand_computation() -> None:
    stability = cluster_stability(hand_made_condensed_tree())
    assert stability.to_dict() == pytest.approx(HAND_STABILITY)


def test_hand_made_tree() -> None:
    tree = taxonomy_tree(hand_made_condensed_tree(), HAND_LABELS)
    assert list(tree.columns) == TREE_COLUMNS
    assert tree["condensed_node"].tolist() == [10, 11, 12, 13, 14]
    assert tree["node"].tolist() == [0, 1, 2, 3, 4]
    assert tree["parent"].tolist() == [-1, 0, 0, 2, 2]
    assert tree["label"].tolist() == [-1, 0, -1, 1, 2]
    assert tree["size"].tolist() == [10, 5, 4, 2, 2]
    assert tree["lambda_birth"].tolist() == [0.0, 1.0, 1.0, 1.5, 1.5]
    assert tree["depth"].tolist() == [0, 1, 1, 2, 2]
    assert tree["stability"].tolist() == pytest.approx([9.5, 8, 2, 5, 4])


def test_clusters_below_the_selected_ones_are_dropped() -> None:
    labels = np.array([-1, 0, 0, 0, 0, 0, 1, 1, 1, 1])  # 12 selected instead of 13 and 14
    assert selected_nodes(hand_made_condensed_tree(), labels) == {0: 11, 1: 12}
    tree = taxonomy_tree(hand_made_condensed_tree(), labels)
    assert tree["condensed_node"].tolist() == [10, 11, 12]
    assert tree["label"].tolist() == [-1, 0, 1]


def test_no_clusters_gives_an_empty_tree() -> None:
    tree = taxonomy_tree(hand_made_condensed_tree(), np.full(10, -1))
    assert tree.empty
    assert list(tree.columns) == TREE_COLUMNS


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['lambda_val'\]"):
        taxonomy_tree(hand_made_condensed_tree().drop(columns="lambda_val"), HAND_LABELS)


def test_nested_blobs_with_hdbscan() -> None:
    """Blob A far from B; B splits into B1 and B2: leaves A, B1, B2; B1 and B2 share a parent."""
    rng = np.random.default_rng(0)
    sizes = {"A": 300, "B1": 200, "B2": 150}
    centres = {"A": (0.0, 0.0), "B1": (40.0, 0.0), "B2": (48.0, 0.0)}
    X = np.concatenate([rng.normal(centres[k], 1.0, (n, 2)) for k, n in sizes.items()])
    truth = np.repeat(np.arange(3), list(sizes.values()))
    clusterer = hdbscan.HDBSCAN(min_cluster_size=30).fit(X)
    condensed = clusterer.condensed_tree_.to_pandas()
    tree = taxonomy_tree(condensed, clusterer.labels_)

    label_of = {name: int(np.median(clusterer.labels_[truth == i])) for i, name in enumerate(sizes)}
    leaf = tree[tree.label >= 0].set_index("label")
    parent = {name: leaf.loc[label, "parent"] for name, label in label_of.items()}
    assert parent["A"] == 0
    assert parent["B1"] == parent["B2"] != 0
    assert tree.loc[parent["B1"], "parent"] == 0
    assert tree.loc[parent["B1"], "size"] == sizes["B1"] + sizes["B2"]
    assert len(tree) == 5

    # hdbscan's persistence is the stability over (members × largest λ of the tree).
    members = np.bincount(clusterer.labels_[clusterer.labels_ >= 0])
    persistence = leaf.sort_index()["stability"] / (members * condensed["lambda_val"].max())
    np.testing.assert_allclose(persistence, clusterer.cluster_persistence_, rtol=1e-10)
