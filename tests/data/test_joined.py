"""Joining a table (clusters, embeddings) onto a source; dropping the unlabelled galaxies."""

from __future__ import annotations

import functools
import logging
import pickle

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from astropy.table import Table

from morpho.data.datamodule import GalaxyDataModule
from morpho.data.errors import DataError
from morpho.data.sources import HDF5Source, ImageFolderSource, JoinedSource
from morpho.data.sources.joined import read_table
from morpho.data.stretches import ArcsinhStretch

N_TINY = 12
#: Cluster of each galaxy of the tiny file: -1 (an outlier) for 3 of the 12.
CLUSTERS = np.array([0, 1, -1, 2, 0, 1, 2, -1, 0, 1, -1, 2])


@pytest.fixture
def tiny_h5(tmp_path):
    """12 one-band 8x8 galaxies ``g00`` ... ``g11`` with a ``label`` column (read-only)."""
    path = tmp_path / "tiny.h5"
    images = np.random.default_rng(0).normal(10.0, 1.0, (N_TINY, 1, 8, 8)).astype(np.float32)
    with h5py.File(path, "w") as file:
        file.create_dataset("images", data=images).attrs["layout"] = "NCHW"
        catalog = file.create_group("catalog")
        ids = [f"g{i:02d}" for i in range(N_TINY)]
        catalog["id_str"] = np.array(ids, dtype=h5py.string_dtype())
        catalog["label"] = np.arange(N_TINY) % 3
    return path


def _taxonomy(ids, clusters, *, seed: int = 1) -> pd.DataFrame:
    """A taxonomy-like table (``id``, ``cluster``, ``probability``, ``e0``) in shuffled order."""
    table = pd.DataFrame(
        {
            "id": list(ids),
            "cluster": np.asarray(clusters, dtype=np.int64),
            "probability": np.linspace(0.1, 1.0, len(ids)),
            "e0": np.arange(len(ids), dtype=np.float32) * 0.5 - 1.0,
        }
    )
    return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _tiny_table(tmp_path, clusters=CLUSTERS):
    ids = [f"g{i:02d}" for i in range(N_TINY)]
    table = _taxonomy(ids, clusters)
    path = tmp_path / "taxonomy.parquet"
    table.to_parquet(path, index=False)
    return path, table.set_index("id")


def test_joined_catalog_and_records_follow_the_ids_not_the_table_order(morpho_h5):
    source = HDF5Source(morpho_h5)
    table = _taxonomy(["sim_c", "extra", "sim_a", "sim_b"], [7, 9, 3, -1])
    joined = JoinedSource(source, table)
    assert len(joined) == 3
    assert list(joined.catalog.columns) == [*source.catalog.columns, "cluster", "probability", "e0"]
    assert joined.catalog["cluster"].tolist() == [3, -1, 7]
    assert joined.catalog["cluster"].dtype == np.int64
    by_id = table.set_index("id")
    for index in range(3):
        record, plain = joined[index], source[index]
        assert record.id == plain.id
        np.testing.assert_array_equal(record.image, plain.image)
        assert record.row["flux"] == plain.row["flux"]
        assert record.row["cluster"] == by_id.loc[record.id, "cluster"]
        assert record.row["e0"] == by_id.loc[record.id, "e0"]
    copy = pickle.loads(pickle.dumps(joined))  # DataLoader workers get a copy
    assert copy[2].row["cluster"] == 7
    joined.close()
    assert joined[0].row["cluster"] == 3  # reopened after close


def test_only_the_chosen_columns_are_joined(morpho_h5):
    table = _taxonomy(["sim_a", "sim_b", "sim_c"], [0, 1, 2])
    joined = JoinedSource(HDF5Source(morpho_h5), table, columns=["cluster"])
    assert "probability" not in joined.catalog
    assert set(joined[0].row) == {*HDF5Source(morpho_h5).catalog.columns, "cluster"}


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".ecsv", ".fits"])
def test_every_table_format_reads_ids_as_text(grey_pngs, tmp_path, suffix):
    catalog, _ = grey_pngs  # ids "007", "008", "009"
    table = _taxonomy(["009", "007", "008"], [2, 0, 1])
    path = tmp_path / f"table{suffix}"
    if suffix == ".parquet":
        table.to_parquet(path, index=False)
    elif suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        Table.from_pandas(table).write(path)
    assert read_table(path)["id"].tolist() == table["id"].tolist()
    joined = JoinedSource(ImageFolderSource(catalog), path)
    assert joined.catalog["cluster"].tolist() == [0, 1, 2]
    assert joined[2].row["probability"] == pytest.approx(0.1)


def _write(table: pd.DataFrame, path):
    table.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize(
    ("make_table", "message"),
    [
        (lambda tmp: tmp / "absent.parquet", r"absent\.parquet does not exist"),
        (lambda tmp: _write(_taxonomy(["sim_a"], [0]), tmp / "t.txt"), "unknown format '.txt'"),
        (
            lambda tmp: _taxonomy(["sim_a", "sim_b", "sim_c"], [0, 1, 2]).rename(
                columns={"id": "galaxy"}
            ),
            r"no id column 'id'; its columns are \['galaxy'",
        ),
        (
            lambda tmp: _taxonomy(["sim_a", "sim_b", "sim_c", "sim_b", "sim_a"], [0] * 5),
            r"2 duplicated id\(s\), e\.g\. \['sim_",
        ),
        (
            lambda tmp: _taxonomy(["sim_a", "sim_b", "sim_c"], [0, 1, 2]).rename(
                columns={"probability": "flux", "e0": "label"}
            ),
            r"column\(s\) \['flux', 'label'\] that the catalog .* already has; rename them",
        ),
        (
            lambda tmp: _taxonomy(["sim_b", "other"], [0, 1]),
            r"2 of the 3 galaxies .* are not in the join table DataFrame, e\.g\. \['sim_a', "
            r"'sim_c'\]",
        ),
    ],
    ids=["missing-file", "unknown-format", "no-id-column", "duplicates", "clash", "absent"],
)
def test_unusable_tables_are_refused_with_a_clear_error(morpho_h5, tmp_path, make_table, message):
    with pytest.raises(DataError, match=message):
        JoinedSource(HDF5Source(morpho_h5), make_table(tmp_path))


def _module(path, **kwargs) -> GalaxyDataModule:
    options = {
        "image_size": 8,
        "batch_size": 4,
        "stretch": ArcsinhStretch(scale=1.0),
        "fit_images": 8,
        **kwargs,
    }
    return GalaxyDataModule(functools.partial(HDF5Source, path=path), **options)


def test_batches_carry_the_joined_cluster_and_columns(tiny_h5, tmp_path):
    table_path, table = _tiny_table(tmp_path)
    dm = _module(tiny_h5, join_table=table_path, label_key="cluster", columns=["probability", "e0"])
    assert dm.hparams.join_table == str(table_path)
    dm.setup("fit")
    assert isinstance(dm.source, JoinedSource)
    loaders = (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader())
    seen = []
    for batch in (batch for loader in loaders for batch in loader):
        expected = table.loc[list(batch["id"])]
        assert torch.equal(batch["label"], torch.tensor(expected["cluster"].to_numpy()))
        columns = expected[["probability", "e0"]].to_numpy(dtype=np.float32)
        assert torch.equal(batch["columns"], torch.tensor(columns))
        seen += list(batch["id"])
    assert sorted(seen) == sorted(table.index)


@pytest.mark.parametrize("key", ["cluster", "score"])
def test_drop_unlabelled_leaves_out_negative_and_nan_labels(tiny_h5, tmp_path, key, caplog):
    table_path, table = _tiny_table(tmp_path)
    if key == "score":  # a float label: NaN marks the unlabelled galaxies
        frame = table.reset_index()
        frame["score"] = np.where(frame["cluster"] < 0, np.nan, frame["probability"])
        table_path = _write(frame, tmp_path / "scores.parquet")
    labelled = np.flatnonzero(CLUSTERS >= 0)
    with caplog.at_level(logging.INFO, logger="morpho.data.datamodule"):
        dm = _module(tiny_h5, join_table=table_path, label_key=key, drop_unlabelled=True)
        dm.setup("fit")
    assert "left out 3 of 12 galaxies" in caplog.text
    parts = [dm.indices[stage] for stage in ("train", "val", "test")]
    assert np.array_equal(np.sort(np.concatenate(parts)), labelled)
    assert sum(map(len, parts)) == len(labelled)  # disjoint
    again = _module(tiny_h5, join_table=table_path, label_key=key, drop_unlabelled=True)
    again.setup("fit")
    assert all(np.array_equal(again.indices[k], dm.indices[k]) for k in dm.indices)
    labels = torch.cat([b["label"] for b in dm.train_dataloader()])
    assert bool((labels >= 0).all())


def test_drop_unlabelled_needs_a_label_and_a_labelled_galaxy(tiny_h5, tmp_path):
    with pytest.raises(ValueError, match="drop_unlabelled=True needs label_key"):
        _module(tiny_h5, drop_unlabelled=True)
    table_path, _ = _tiny_table(tmp_path, clusters=np.full(N_TINY, -1))
    dm = _module(tiny_h5, join_table=table_path, label_key="cluster", drop_unlabelled=True)
    with pytest.raises(DataError, match="left no galaxy: all 12 have a negative or NaN 'cluster'"):
        dm.setup("fit")
