"""Read galaxy cutouts from FITS: a folder of stamps, or one cube of stamps.

A *folder* holds one galaxy per file. Each file's image is a 2-D ``(H, W)``
array (one band) or a 3-D array with the bands on ``NAXIS3``, which numpy
sees as ``(C, H, W)``. A *cube* is a single file holding many galaxies:
``(N, H, W)`` (N single-band galaxies) or ``(N, C, H, W)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from morpho.data.errors import DataError
from morpho.data.sources.base import GalaxyRecord, GalaxySource, LazyHandle
from morpho.data.sources.images import (
    catalog_name,
    check_unique_ids,
    load_table,
    read_catalog,
)

__all__ = ["FITS_SUFFIXES", "FITSSource", "fits_stem", "read_stamp"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")

HDUKey = int | str


def fits_stem(path: str | os.PathLike) -> str:
    """Return a FITS file's name without its FITS suffix (``"a.fits.gz"`` -> ``"a"``)."""
    name = Path(path).name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Turn astropy's read failures, and its truncation warnings, into DataError.

    astropy only *warns* when a file is truncated (and then drops HDUs or fails
    later with an unrelated-looking error), so its warnings are errors here.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)
            yield
    except (DataError, FileNotFoundError):
        raise
    except (OSError, ValueError, TypeError, EOFError, AstropyUserWarning) as error:
        reason = " ".join(str(error).split()).rstrip(".")
        raise DataError(
            f"cannot read {what}: {reason}. The file looks corrupt or truncated; "
            "re-download or re-write it, or remove it from the data set."
        ) from error


@contextmanager
def _open_fits(path: str | os.PathLike) -> Iterator[fits.HDUList]:
    """Open a FITS file read-only, with :func:`_reading`'s error handling.

    The file object is opened here, not by astropy, so that it is closed even
    when astropy fails half-way through opening it.
    """
    with open(path, "rb") as stream, _reading(str(path)), fits.open(stream, memmap=False) as hdul:
        yield hdul


def _has_image(hdu: Any) -> bool:
    """True for an image HDU with a non-empty array (not an empty primary, not a table)."""
    return bool(hdu.is_image and hdu.shape and all(n > 0 for n in hdu.shape))


def _describe(hdul: fits.HDUList) -> str:
    """List an HDUList's HDUs for error messages: ``0 PRIMARY (PrimaryHDU, shape ())``."""
    return ", ".join(
        f"{i} {hdu.name or '-'} ({type(hdu).__name__}, shape {getattr(hdu, 'shape', None)})"
        for i, hdu in enumerate(hdul)
    )


def _select_hdu(hdul: fits.HDUList, hdu: HDUKey | None, path: str | os.PathLike) -> int:
    """Return the index of HDU ``hdu`` (index or EXTNAME), or of the first image HDU."""
    if hdu is None:
        for index, candidate in enumerate(hdul):
            if _has_image(candidate):
                return index
        raise DataError(
            f"{path} holds no image data; its HDUs are: {_describe(hdul)}. morpho reads "
            "galaxy images from image HDUs (tables are not images); if the file should hold "
            "one, it may be truncated."
        )
    try:
        index = hdul.index_of(hdu)
        selected = hdul[index]
    except (KeyError, IndexError) as error:
        raise DataError(
            f"{path} has no HDU {hdu!r}; its HDUs are: {_describe(hdul)}. "
            "Pass hdu= one of these indices or names, or hdu=None for the first image."
        ) from error
    if not _has_image(selected):
        raise DataError(
            f"HDU {hdu!r} of {path} holds no image data; its HDUs are: {_describe(hdul)}"
        )
    return index


def _as_chw(image: np.ndarray, origin: str) -> np.ndarray:
    """Shape a stamp ``(H, W)`` or ``(C, H, W)`` as ``(C, H, W)``."""
    while image.ndim > 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 2:
        return image[np.newaxis]
    if image.ndim == 3:
        return image
    raise DataError(
        f"{origin} holds an image of shape {image.shape}; a stamp must be 2-D (H, W) or "
        "3-D with bands on NAXIS3, (C, H, W). For a cube of stamps pass the file itself."
    )


def read_stamp(path: str | os.PathLike, *, hdu: HDUKey | None = None) -> np.ndarray:
    """Read one galaxy stamp from a FITS file.

    Parameters
    ----------
    path : str or path-like
        The FITS file (optionally gzip- or tile-compressed).
    hdu : int or str, optional
        HDU index or EXTNAME. Default: the first HDU holding image data
        (skipping an empty primary HDU and tables).

    Returns
    -------
    image : (C, H, W) float32 ndarray
        Native-endian, scaled by ``BSCALE``/``BZERO``. A 2-D image gives C = 1;
        leading length-1 axes beyond three are dropped.

    Raises
    ------
    DataError
        If the file is corrupt or truncated, has no such HDU, holds no image,
        or its image is not 2-D or 3-D.
    """
    with _open_fits(path) as hdul:
        image = np.asarray(hdul[_select_hdu(hdul, hdu, path)].data, dtype=np.float32)
    return _as_chw(image, str(path))


class FITSSource(GalaxySource):
    """Galaxies stored as FITS: a folder of stamps or one cube file.

    Parameters
    ----------
    path : str or path-like
        A folder of stamps (one galaxy per file), or a single FITS file
        holding a cube ``(N, H, W)`` or ``(N, C, H, W)`` (numpy axis order).
    pattern : str, default "*.fits*"
        Glob selecting the stamps in a folder (ignored for a cube).
    hdu : int or str, optional
        HDU index or EXTNAME holding the images. Default: the first HDU with
        image data (an empty primary HDU and tables are skipped).
    catalog : str, path-like or pandas.DataFrame, optional
        For a folder: a CSV/parquet table with ``id_str`` and ``file_loc``
        (relative paths are relative to ``path``); it then chooses the files
        and their order, instead of ``pattern``. For a cube: a table with one
        row per stamp in cube order; its ``id_str`` column, if any, gives the
        ids. Other columns are passed through as catalog rows.

    Raises
    ------
    FileNotFoundError
        If ``path``, the catalog, or a file the catalog lists does not exist.
    DataError
        If the folder holds no matching file, two stamps share an id, a cube
        is not 3-D or 4-D, or it cannot be read (corrupt, truncated, no image).

    Notes
    -----
    Ids are the file names without their FITS suffix for a folder
    (``"g1.fits.gz"`` -> ``"g1"``), and ``"<stem>_<i>"`` for stamp ``i`` of a
    cube. The catalog has at least ``id_str`` and ``file_loc`` (absolute path).
    A folder's stamps are opened only when read. A cube is read one stamp at a
    time through ``ImageHDU.section``, which seeks to and reads only that
    stamp's bytes (it also works with ``BZERO``/``BSCALE`` scaling, where a
    memory map cannot), so a cube larger than memory streams. Pixel values
    come out as native-endian float32, scaled by ``BSCALE``/``BZERO``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        pattern: str = "*.fits*",
        hdu: HDUKey | None = None,
        catalog: str | os.PathLike | pd.DataFrame | None = None,
    ) -> None:
        self.path = Path(path)
        self.pattern = pattern
        self.hdu = hdu
        if not self.path.exists():
            raise FileNotFoundError(
                f"FITS path {self.path} does not exist; pass a folder of stamps or a cube file"
            )
        self._cube: LazyHandle | None = None
        if self.path.is_dir():
            self._catalog = self._folder_catalog(catalog)
        else:
            self._catalog = self._open_cube(catalog)

    @property
    def catalog(self) -> pd.DataFrame:
        """One row per galaxy with at least ``id_str`` and ``file_loc``."""
        return self._catalog

    def read(self, index: int) -> GalaxyRecord:
        """Read galaxy ``index``.

        Parameters
        ----------
        index : int
            ``0 <= index < len(self)``.

        Returns
        -------
        GalaxyRecord
            ``image`` is ``(C, H, W)`` float32, native-endian.

        Raises
        ------
        DataError
            If the file is corrupt, truncated or holds no usable image.
        """
        row = self._catalog.iloc[index].to_dict()
        if self._cube is None:
            origin = row["file_loc"]
            image = read_stamp(origin, hdu=self.hdu)
        else:
            origin = f"{self.path}[{self._hdu_index}][{index}]"
            with _reading(origin):
                stamp = self._cube.get()[self._hdu_index].section[index]
                image = _as_chw(np.asarray(stamp, dtype=np.float32), origin)
        return GalaxyRecord(image=image, id=row["id_str"], row=row, origin=origin)

    def close(self) -> None:
        """Close the cube file if it is open (a folder source holds no handle)."""
        if self._cube is not None:
            self._cube.close()

    def _folder_catalog(self, catalog: str | os.PathLike | pd.DataFrame | None) -> pd.DataFrame:
        """List a folder's stamps, or read the catalog naming them."""
        if catalog is not None:
            return read_catalog(catalog, root=self.path)
        files = sorted(path for path in self.path.glob(self.pattern) if path.is_file())
        if not files:
            raise DataError(
                f"folder {self.path} holds no file matching {self.pattern!r}; "
                "check the folder, or pass pattern= (e.g. '*.fit') matching your stamps"
            )
        table = pd.DataFrame(
            {
                "id_str": [fits_stem(path) for path in files],
                "file_loc": [str(path.absolute()) for path in files],
            }
        )
        check_unique_ids(table["id_str"], f"folder {self.path}")
        return table

    def _open_cube(self, catalog: str | os.PathLike | pd.DataFrame | None) -> pd.DataFrame:
        """Check the cube's shape (reading headers only) and build its catalog."""
        with _open_fits(self.path) as hdul:
            self._hdu_index = _select_hdu(hdul, self.hdu, self.path)
            shape = hdul[self._hdu_index].shape
        if len(shape) not in (3, 4):
            raise DataError(
                f"{self.path} holds an image of shape {shape}, not a cube of stamps "
                "(N, H, W) or (N, C, H, W). To read single stamps, put them in a folder "
                "and pass the folder."
            )
        self._cube = LazyHandle(partial(fits.open, self.path, memmap=False))
        return self._cube_catalog(catalog, shape[0])

    def _cube_catalog(
        self, catalog: str | os.PathLike | pd.DataFrame | None, n_stamps: int
    ) -> pd.DataFrame:
        """Ids ``<stem>_<i>``, or the catalog's own, with one row per stamp."""
        stem = fits_stem(self.path)
        table = pd.DataFrame() if catalog is None else load_table(catalog)
        if catalog is not None and len(table) != n_stamps:
            raise DataError(
                f"{catalog_name(catalog)} has {len(table)} rows but cube {self.path} holds "
                f"{n_stamps} stamps; the catalog needs one row per stamp, in cube order"
            )
        if "id_str" not in table.columns:
            table["id_str"] = [f"{stem}_{i}" for i in range(n_stamps)]
        table["id_str"] = table["id_str"].astype(str)
        table["file_loc"] = str(self.path.absolute())
        check_unique_ids(table["id_str"], catalog_name(catalog) if catalog is not None else stem)
        return table
