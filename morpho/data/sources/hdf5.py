"""Read galaxy cutouts from an HDF5 file (Galaxy10 and morpho's simulated files).

Two layouts are understood:

* **Galaxy10** (Leung & Bovy's DECaLS/SDSS files): ``images`` of shape
  ``(N, H, W, C)`` (uint8 or float) and 1-D label datasets of length N at the
  top level (``ans``, ``redshift``, ``ra``, ``dec``, ...).
* **morpho** (written by the simulator): ``images`` of shape ``(N, C, H, W)``
  with the attribute ``images.attrs["layout"] == "NCHW"``, and a group
  ``catalog/`` of 1-D datasets of length N (numbers or UTF-8 strings).

Both kinds of 1-D datasets become catalog columns.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from morpho.data.errors import DataError
from morpho.data.sources.base import GalaxyRecord, GalaxySource, LazyHandle
from morpho.data.sources.images import check_unique_ids

__all__ = ["LAYOUTS", "HDF5Source"]

LAYOUTS = ("auto", "NHWC", "NCHW")
CATALOG_GROUP = "catalog"
_STORED_LAYOUTS = ("NHWC", "NCHW", "NHW")


def _open(path: Path) -> h5py.File:
    """Open ``path`` read-only, naming it if it is not HDF5."""
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DataError(
            f"cannot open {path} as HDF5: {error}. The file is corrupt, truncated or not HDF5."
        ) from error


def _images_dataset(file: h5py.File, key: str, path: Path) -> h5py.Dataset:
    """Return the images dataset, checking it exists and is 3-D or 4-D."""
    if key not in file or not isinstance(file[key], h5py.Dataset):
        raise DataError(
            f"{path} has no dataset {key!r}; its top-level keys are {sorted(file.keys())}. "
            "Pass images_key= the dataset that holds the images."
        )
    images = file[key]
    if images.ndim not in (3, 4):
        raise DataError(
            f"{path}[{key}] has shape {images.shape}; images must be (N, H, W), "
            "(N, H, W, C) or (N, C, H, W)"
        )
    return images


def _resolve_layout(images: h5py.Dataset, layout: str, origin: str) -> str:
    """Return the stored layout, "NHWC", "NCHW" or "NHW" (3-D, single band)."""
    stored = images.attrs.get("layout")
    if isinstance(stored, bytes):
        stored = stored.decode()
    if layout != "auto":
        resolved = layout
    elif stored is not None:
        resolved = str(stored).upper()
    else:
        resolved = "NHWC" if images.ndim == 4 else "NHW"
    if resolved not in _STORED_LAYOUTS:
        raise DataError(
            f"{origin} has layout attribute {stored!r}; expected one of {_STORED_LAYOUTS}. "
            "Pass layout='NHWC' or 'NCHW' to override it."
        )
    if len(resolved) != images.ndim:
        raise DataError(
            f"{origin} has shape {images.shape}, which does not fit layout {resolved!r}; "
            "pass layout= matching the data ('NHWC' or 'NCHW' for 4-D images, "
            "'auto' for 3-D single-band images)"
        )
    return resolved


def _read_column(dataset: h5py.Dataset) -> np.ndarray:
    """Read a 1-D dataset, decoding strings (variable-length or bytes) as UTF-8."""
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return dataset.asstr(encoding="utf-8")[()]
    return dataset[()]


def _read_catalog(file: h5py.File, n_images: int, images_key: str, path: Path) -> pd.DataFrame:
    """Gather the 1-D length-N datasets at the top level and in ``catalog/``.

    Top-level datasets of another shape are skipped (they are not per-galaxy);
    in ``catalog/`` every dataset must be 1-D of length N. A name in both
    places takes the ``catalog/`` value.
    """
    columns: dict[str, np.ndarray] = {}
    for name, item in file.items():
        if isinstance(item, h5py.Dataset) and name != images_key and item.shape == (n_images,):
            columns[name] = _read_column(item)
    group = file.get(CATALOG_GROUP)
    if isinstance(group, h5py.Group):
        for name, item in group.items():
            if not isinstance(item, h5py.Dataset) or item.shape != (n_images,):
                raise DataError(
                    f"{path}[{CATALOG_GROUP}/{name}] has shape {getattr(item, 'shape', None)}; "
                    f"every catalog column must be a 1-D dataset of length {n_images} "
                    "(one value per image)"
                )
            columns[name] = _read_column(item)
    return pd.DataFrame(columns, index=pd.RangeIndex(n_images))


def _add_ids(table: pd.DataFrame, id_key: str, path: Path) -> pd.DataFrame:
    """Set the ``id_str`` column from ``id_key``, or from the indices."""
    if id_key in table.columns:
        ids = table[id_key].astype(str)
    elif id_key == "id_str":
        ids = pd.Series([str(i) for i in range(len(table))], index=table.index)
    else:
        raise DataError(
            f"{path} has no catalog column {id_key!r}; its columns are "
            f"{list(table.columns)}. Pass id_key= one of them, or leave the default "
            "'id_str' to number the galaxies."
        )
    if "id_str" in table.columns:
        table["id_str"] = ids
    else:
        table.insert(0, "id_str", ids)
    check_unique_ids(table["id_str"], f"{path} (column {id_key!r})")
    return table


class _InMemory(dict):
    """One images dataset read whole into memory, looked up like an open HDF5 file."""

    def __init__(self, path: Path, key: str) -> None:
        with _open(path) as file:
            super().__init__({key: file[key][...]})

    def close(self) -> None:
        self.clear()


class HDF5Source(GalaxySource):
    """Galaxies stored in one HDF5 file, read lazily one galaxy at a time.

    Parameters
    ----------
    path : str or path-like
        The HDF5 file.
    images_key : str, default "images"
        Dataset holding the images, ``(N, H, W)``, ``(N, H, W, C)`` or
        ``(N, C, H, W)``.
    layout : {"auto", "NHWC", "NCHW"}, default "auto"
        Axis order of 4-D images. ``"auto"`` uses the dataset's ``layout``
        attribute if present, else NHWC (Galaxy10) for 4-D and single-band
        ``(N, H, W)`` for 3-D data.
    id_key : str, default "id_str"
        Catalog column holding the galaxy ids. If the default ``"id_str"``
        is missing, the ids are the indices as strings (``"0"``, ``"1"``, ...);
        another missing name is an error.
    in_memory : bool, default False
        Read all images into memory on first use (once per process) instead of
        one galaxy per read: much faster for training sets that fit in memory.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``layout`` is not one of :data:`LAYOUTS`.
    DataError
        If the file is not HDF5, has no ``images_key`` dataset (the message
        lists the keys it has), its shape does not fit the layout, a
        ``catalog/`` column has the wrong length, ``id_key`` is missing, or
        ids repeat.

    Notes
    -----
    Catalog columns are every 1-D dataset of length N at the top level and
    in the group ``catalog/`` (strings decoded to ``str``); they are read once,
    here. Images are read on demand, one galaxy per :meth:`read`, from a file
    handle opened once per process (DataLoader workers open their own), so a
    file larger than memory streams. The source pickles without its handle.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        images_key: str = "images",
        layout: str = "auto",
        id_key: str = "id_str",
        in_memory: bool = False,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.path = Path(path)
        self.images_key = images_key
        self.id_key = id_key
        if not self.path.is_file():
            raise FileNotFoundError(f"HDF5 file {self.path} does not exist")
        with _open(self.path) as file:
            images = _images_dataset(file, images_key, self.path)
            self.layout = _resolve_layout(images, layout, f"{self.path}[{images_key}]")
            table = _read_catalog(file, len(images), images_key, self.path)
        self._catalog = _add_ids(table, id_key, self.path)
        self._columns = {name: self._catalog[name].to_numpy() for name in self._catalog.columns}
        self.in_memory = in_memory
        opener = (
            partial(_InMemory, self.path, images_key)
            if in_memory
            else partial(h5py.File, self.path, "r")
        )
        self._file = LazyHandle(opener)

    @property
    def catalog(self) -> pd.DataFrame:
        """One row per galaxy: ``id_str`` and the file's 1-D datasets."""
        return self._catalog

    def read(self, index: int) -> GalaxyRecord:
        """Read galaxy ``index`` from the file.

        Parameters
        ----------
        index : int
            ``0 <= index < len(self)``.

        Returns
        -------
        GalaxyRecord
            ``image`` is ``(C, H, W)`` float32 in the stored units (0-255 for
            uint8 Galaxy10 images); ``origin`` is ``"file.h5[images][index]"``.

        Raises
        ------
        DataError
            If HDF5 cannot read the galaxy (a corrupt or truncated file).
        """
        origin = f"{self.path}[{self.images_key}][{index}]"
        try:
            stored = self._file.get()[self.images_key][index]
        except OSError as error:
            raise DataError(
                f"cannot read {origin}: {error}. The file looks corrupt or truncated."
            ) from error
        image = np.asarray(stored, dtype=np.float32)
        if self.layout == "NHWC":
            image = np.ascontiguousarray(image.transpose(2, 0, 1))
        elif self.layout == "NHW":
            image = image[np.newaxis]
        row = {name: values[index] for name, values in self._columns.items()}
        return GalaxyRecord(image=image, id=row["id_str"], row=row, origin=origin)

    def read_array(self, key: str, index: int | np.ndarray) -> np.ndarray | None:
        """Row ``index`` of another per-galaxy dataset of the file (e.g. ``"psf"``), or None.

        ``index`` may also be an array of increasing, unique rows (h5py's rule).

        Read from the file itself, whether or not the images are held in memory.
        """
        with _open(self.path) as file:
            if key not in file or not isinstance(file[key], h5py.Dataset):
                return None
            return np.asarray(file[key][index])

    def close(self) -> None:
        """Close this process's file handle, if open; the next read reopens it."""
        self._file.close()
