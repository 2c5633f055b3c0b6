"""Shares of a data set for inference on several ranks, and the joining of their tables."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from morpho.sharding import (
    fresh_parts,
    join_parquet_parts,
    part_paths,
    read_parquet_parts,
    shard_range,
)


@pytest.mark.parametrize("n_items", [0, 1, 7, 48, 50, 51])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shares_cover_every_item_once_in_order_in_whole_batches(n_items, world_size):
    batch = 5
    shares = [
        shard_range(n_items, batch_size=batch, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert [i for share in shares for i in share] == list(range(n_items))
    for share in shares:
        if len(share):
            assert share.start % batch == 0  # every batch of a rank is a batch of one process
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= batch  # at most one batch more than another rank


def test_fewer_batches_than_ranks_leaves_some_shares_empty():
    sizes = [len(shard_range(7, batch_size=5, rank=r, world_size=4)) for r in range(4)]
    assert sorted(sizes) == [0, 0, 2, 5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0, "rank": 0, "world_size": 1}, "batch_size must be >= 1"),
        ({"batch_size": 4, "rank": 2, "world_size": 2}, r"rank 2 is not in 0\.\.1"),
    ],
)
def test_bad_shares_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        shard_range(10, **kwargs)


def _write_parts(path, tables):
    parts = part_paths(path, len(tables))
    parts[0].parent.mkdir()
    for part, table in zip(parts, tables, strict=True):
        if table is not None:
            table.to_parquet(part, index=False)
    return parts


def test_parts_are_joined_in_rank_order_skipping_empty_shares_then_removed(tmp_path):
    out = tmp_path / "table.parquet"
    a = pd.DataFrame({"id": ["a", "b"], "x": [1.0, 2.0]})
    c = pd.DataFrame({"id": ["c"], "x": [3.0]})
    parts = _write_parts(out, [a, None, c])
    assert parts[0].parent.name == ".table.parquet.parts"
    join_parquet_parts(parts, out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.concat([a, c], ignore_index=True))
    assert not parts[0].parent.exists()
    parts = _write_parts(out, [a, c])
    pd.testing.assert_frame_equal(read_parquet_parts(parts), pd.concat([a, c], ignore_index=True))
    assert not parts[0].parent.exists()


def test_an_existing_table_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "table.parquet"
    out.write_text("earlier output")
    parts = _write_parts(out, [pd.DataFrame({"x": [1]})])
    with pytest.raises(FileExistsError, match=r"table\.parquet exists"):
        join_parquet_parts(parts, out)
    assert out.read_text() == "earlier output"
    join_parquet_parts(parts, out, overwrite=True)
    assert pd.read_parquet(out)["x"].tolist() == [1]


def test_parts_with_other_columns_are_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "table.parquet"
    parts = _write_parts(out, [pd.DataFrame({"x": [1.0]}), pd.DataFrame({"y": [1.0]})])
    with pytest.raises(ValueError, match=r"part-00001-of-00002\.parquet has other columns"):
        join_parquet_parts(parts, out)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="no part"):
        join_parquet_parts(part_paths(tmp_path / "other.parquet", 2), tmp_path / "other.parquet")


def test_rank_zero_clears_the_parts_of_a_killed_run_before_any_rank_writes(tmp_path):
    """Stale parts (a killed run with the same output) would be joined where a share is
    empty now: rank 0 removes them, then the ranks meet at the barrier."""
    out = tmp_path / "table.parquet"
    stale = _write_parts(out, [pd.DataFrame({"x": [9]})] * 2)
    calls = []
    rank0 = SimpleNamespace(global_rank=0, world_size=2, barrier=lambda: calls.append("barrier"))
    rank1 = SimpleNamespace(global_rank=1, world_size=2, barrier=lambda: calls.append("barrier"))
    assert fresh_parts(rank1, out) == stale
    assert all(part.is_file() for part in stale)  # rank 1 leaves them to rank 0
    assert fresh_parts(rank0, out) == stale
    assert not stale[0].parent.exists()
    assert calls == ["barrier", "barrier"]
