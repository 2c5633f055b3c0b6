"""Readers for galaxy cutouts on disk: FITS, HDF5 and PNG/JPEG image folders.

Each reader is a :class:`GalaxySource`: an indexable collection of
:class:`GalaxyRecord` (pixels as stored, id, catalog row). :func:`open_source`
picks the reader from a path; :class:`JoinedSource` adds a table's columns
(taxonomy clusters, embeddings) to any source's catalog.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from morpho.data.errors import DataError
from morpho.data.sources.base import GalaxyRecord, GalaxySource
from morpho.data.sources.fits import FITS_SUFFIXES, FITSSource
from morpho.data.sources.hdf5 import HDF5Source
from morpho.data.sources.images import ImageFolderSource
from morpho.data.sources.joined import JoinedSource

__all__ = [
    "FITSSource",
    "GalaxyRecord",
    "GalaxySource",
    "HDF5Source",
    "ImageFolderSource",
    "JoinedSource",
    "open_source",
]

HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
CATALOG_SUFFIXES = (".csv", ".parquet", ".pq")


def open_source(path: str | os.PathLike, **kwargs: Any) -> GalaxySource:
    """Open a galaxy source, choosing the reader from the path.

    ========================================  ===========================
    path                                      reader
    ========================================  ===========================
    a folder, ``.fits``, ``.fit``, ``.fts``   :class:`FITSSource`
    (optionally ``.gz``/``.fz``)
    ``.h5``, ``.hdf5``, ``.he5``              :class:`HDF5Source`
    ``.csv``, ``.parquet``, ``.pq``           :class:`ImageFolderSource`
    ========================================  ===========================

    Parameters
    ----------
    path : str or path-like
        A folder of FITS stamps, a FITS cube, an HDF5 file, or a catalog of
        PNG/JPEG files.
    **kwargs
        Passed to the reader (e.g. ``hdu=`` for FITS, ``images_key=`` for
        HDF5, ``root=`` for a catalog).

    Returns
    -------
    GalaxySource
        The opened source.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataError
        If the suffix is none of the above, or the reader rejects the data.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a data folder or file")
    name = path.name.lower()
    if path.is_dir() or name.endswith(FITS_SUFFIXES):
        return FITSSource(path, **kwargs)
    if name.endswith(HDF5_SUFFIXES):
        return HDF5Source(path, **kwargs)
    if name.endswith(CATALOG_SUFFIXES):
        return ImageFolderSource(path, **kwargs)
    raise DataError(
        f"cannot tell which reader to use for {path}: expected a folder of FITS stamps, "
        f"a FITS file {FITS_SUFFIXES}, an HDF5 file {HDF5_SUFFIXES} or a catalog "
        f"{CATALOG_SUFFIXES}. Rename the file, or construct the reader yourself."
    )
