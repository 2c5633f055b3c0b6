"""Join a table of per-galaxy values (taxonomy clusters, embeddings) onto a source.

``morpho-cluster`` writes ``taxonomy.parquet`` (``id``, ``cluster``,
``probability``, ...) and ``morpho-embed`` writes ``embeddings.parquet``
(``id``, ``index``, ``e0``, ``e1``, ...). :class:`JoinedSource` adds such a
table's columns to any source's catalog, matched by galaxy id, so that they
can serve as ``label_key`` or ``columns`` of the data set: for instance to
condition a PixelCNN on a taxonomy cluster.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table

from morpho.data.errors import DataError
from morpho.data.sources.base import GalaxyRecord, GalaxySource
from morpho.data.sources.images import check_unique_ids

__all__ = ["TABLE_FORMATS", "JoinedSource", "read_table"]

#: Readers of :func:`read_table`, by file suffix.
TABLE_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".ecsv": "ascii.ecsv",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
}
_N_SHOWN = 5


def read_table(path: str | os.PathLike, *, on: str = "id") -> pd.DataFrame:
    """Read a table of per-galaxy values from parquet, CSV, ECSV or FITS.

    Parameters
    ----------
    path : str or path-like
        A ``.parquet`` (or ``.pq``), ``.csv``, ``.ecsv`` or ``.fits`` (``.fit``,
        ``.fts``; the first table HDU) file.
    on : str, default "id"
        The id column; a CSV reads it as text, so that ``"007"`` stays ``"007"``.

    Returns
    -------
    pandas.DataFrame
        The table, with a fresh ``RangeIndex``.

    Raises
    ------
    DataError
        If the file does not exist, its suffix is none of the above, or it
        cannot be read (or, for ECSV/FITS, holds multidimensional columns,
        which a catalog column cannot hold).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"join table {path} does not exist; pass the table written by morpho-cluster "
            "(taxonomy.parquet) or morpho-embed (embeddings.parquet), or any table with "
            f"an {on!r} column"
        )
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"join table {path}: unknown format {path.suffix!r}; use one of {sorted(TABLE_FORMATS)}"
        )
    try:
        if fmt == "parquet":
            table = pd.read_parquet(path)
        elif fmt == "csv":
            table = pd.read_csv(path, dtype={on: str})
        else:
            options = {"character_as_bytes": False} if fmt == "fits" else {}
            table = Table.read(path, format=fmt, **options).to_pandas()
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read join table {path} as {fmt}: {error}") from error
    return table.reset_index(drop=True)


def _table_name(table: str | os.PathLike | pd.DataFrame) -> str:
    """Name a join table in error messages."""
    if isinstance(table, pd.DataFrame):
        return "the join table DataFrame"
    return f"join table {os.fspath(table)}"


def _table_columns(
    table: pd.DataFrame, on: str, columns: Sequence[str] | None, name: str
) -> list[str]:
    """The columns to join: ``columns``, or all but ``on``; each checked to exist."""
    if on not in table.columns:
        raise DataError(
            f"{name} has no id column {on!r}; its columns are "
            f"{list(table.columns)}. Pass on= the column holding the galaxy ids."
        )
    chosen = [c for c in table.columns if c != on] if columns is None else list(columns)
    missing = [c for c in chosen if c not in table.columns or c == on]
    if missing:
        raise DataError(
            f"{name} has no column(s) {missing} to join; its columns are "
            f"{[c for c in table.columns if c != on]}"
        )
    return chosen


def _check_no_clash(chosen: list[str], catalog: pd.DataFrame, name: str, source: str) -> None:
    """Refuse table columns that the source's catalog already has."""
    clashes = [c for c in chosen if c in catalog.columns]
    if clashes:
        raise DataError(
            f"{name} has column(s) {clashes} that the catalog of {source} "
            "already has; rename them in the table (e.g. 'cluster' -> 'taxonomy_cluster'), "
            "or join only the other columns with columns="
        )


def _positions(table_ids: pd.Series, source_ids: pd.Series, name: str, source: str) -> np.ndarray:
    """Row of the table for each galaxy of the source; every galaxy must have one."""
    positions = pd.Index(table_ids).get_indexer(source_ids)
    absent = source_ids[positions < 0]
    if len(absent):
        raise DataError(
            f"{len(absent)} of the {len(source_ids)} galaxies of {source} are not in "
            f"{name}, e.g. {list(absent[:_N_SHOWN])}; they would get no value (a NaN "
            "label). Build the table from all of these galaxies: morpho-embed split=all "
            "with this data, then morpho-cluster."
        )
    return positions


class JoinedSource(GalaxySource):
    """A source whose catalog also carries the columns of a table, matched by galaxy id.

    The wrapped source's catalog is left-joined with the table on the galaxy
    id (the source's ``id_str``, the records' ``id``), and :meth:`read` adds the
    joined values to each record's ``row``. Pixels, ids and order are the
    wrapped source's.

    Parameters
    ----------
    source : GalaxySource
        The galaxies.
    table : str, path-like or pandas.DataFrame
        One row per galaxy: a file read by :func:`read_table` (``.parquet``,
        ``.csv``, ``.ecsv``, ``.fits``), e.g. ``morpho-cluster``'s
        ``taxonomy.parquet`` or ``morpho-embed``'s ``embeddings.parquet``; or a
        table in memory. Rows may be in any order and include galaxies the
        source does not hold.
    on : str, default "id"
        The table's id column; its values are compared as text with the
        source's ids.
    columns : sequence of str, optional
        The table's columns to join; all but ``on`` by default.

    Raises
    ------
    DataError
        If the table file does not exist or cannot be read, has no ``on`` or
        ``columns`` column, repeats ids, has columns the source's catalog
        already has, or lacks some of the source's galaxies (a missing value
        would silently become a NaN label).

    Notes
    -----
    The table is read once, here, and only the joined columns (aligned with the
    source) are kept. The source holds no handle of its own: it pickles for
    DataLoader workers as the wrapped source does, and :meth:`close` closes the
    wrapped source.
    """

    def __init__(
        self,
        source: GalaxySource,
        table: str | os.PathLike | pd.DataFrame,
        *,
        on: str = "id",
        columns: Sequence[str] | None = None,
    ) -> None:
        self.source = source
        self.on = on
        self.table_name = _table_name(table)
        if isinstance(table, pd.DataFrame):
            frame = table.reset_index(drop=True)
        else:
            frame = read_table(table, on=on)
        chosen = _table_columns(frame, on, columns, self.table_name)
        table_ids = frame[on].astype(str)
        check_unique_ids(table_ids, f"{self.table_name} (column {on!r})")
        catalog = source.catalog
        _check_no_clash(chosen, catalog, self.table_name, repr(source))
        source_ids = catalog["id_str"].astype(str)
        positions = _positions(table_ids, source_ids, self.table_name, repr(source))
        joined = frame[chosen].iloc[positions].set_index(catalog.index)
        self.columns = chosen
        self._catalog = pd.concat([catalog, joined], axis=1)
        self._columns = {name: joined[name].to_numpy() for name in chosen}

    @property
    def catalog(self) -> pd.DataFrame:
        """The wrapped source's catalog followed by the joined columns."""
        return self._catalog

    def __len__(self) -> int:
        return len(self.source)

    def read(self, index: int) -> GalaxyRecord:
        """Read galaxy ``index`` from the wrapped source and add the joined values to its row.

        Parameters
        ----------
        index : int
            ``0 <= index < len(self)``.

        Returns
        -------
        GalaxyRecord
            The wrapped source's record, its ``row`` extended by the joined columns.
        """
        record = self.source.read(index)
        row = {**record.row, **{name: values[index] for name, values in self._columns.items()}}
        return dataclasses.replace(record, row=row)

    def close(self) -> None:
        """Close the wrapped source's handle, if open; the next read reopens it."""
        self.source.close()

    def __repr__(self) -> str:
        return f"JoinedSource({self.source!r}, {self.table_name}, on={self.on!r})"
