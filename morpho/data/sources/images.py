"""Read PNG/JPEG cutouts listed in a Zoobot-style catalog.

The catalog is a table with one row per galaxy and at least the columns
``id_str`` (the galaxy's identifier) and ``file_loc`` (the path of its image),
as used by Zoobot. Any other columns (labels, coordinates) are kept and passed
through as the galaxy's catalog row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from morpho.data.errors import DataError
from morpho.data.sources.base import GalaxyRecord, GalaxySource

__all__ = [
    "ImageFolderSource",
    "catalog_name",
    "check_unique_ids",
    "load_table",
    "read_catalog",
    "read_image",
]

CATALOG_COLUMNS = ("id_str", "file_loc")
_N_SHOWN = 5
# Pillow modes read as they are, one band; everything else but RGB is converted.
_GREY_MODES = frozenset({"L", "I", "I;16", "F"})
_TO_GREY_MODES = frozenset({"1", "LA", "La"})


def load_table(catalog: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """Load a catalog table from a CSV or parquet file, or copy a DataFrame.

    Parameters
    ----------
    catalog : str, path-like or pandas.DataFrame
        A ``.csv`` or ``.parquet`` file, or a table already in memory.

    Returns
    -------
    pandas.DataFrame
        A copy with a fresh ``RangeIndex``; a CSV's ``id_str`` is read as text
        (so ``"007"`` stays ``"007"``).

    Raises
    ------
    FileNotFoundError
        If the catalog file does not exist.
    DataError
        If the file is neither CSV nor parquet.
    """
    if isinstance(catalog, pd.DataFrame):
        return catalog.reset_index(drop=True)
    path = Path(catalog)
    if not path.is_file():
        raise FileNotFoundError(f"catalog file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype={"id_str": str})
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise DataError(f"catalog {path}: unknown format {suffix!r}; use a .csv or .parquet file")


def read_catalog(
    catalog: str | os.PathLike | pd.DataFrame, *, root: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Load a catalog, check its columns and files, and resolve its paths.

    Parameters
    ----------
    catalog : str, path-like or pandas.DataFrame
        A ``.csv`` or ``.parquet`` file, or a table already in memory, with at
        least the columns ``id_str`` and ``file_loc``.
    root : str or path-like, optional
        Folder that relative ``file_loc`` paths are relative to. Defaults to the
        catalog file's folder, or the current directory for a DataFrame.

    Returns
    -------
    pandas.DataFrame
        A copy with a fresh ``RangeIndex``, ``id_str`` as strings and
        ``file_loc`` as absolute paths.

    Raises
    ------
    FileNotFoundError
        If the catalog file, or any file it lists, does not exist.
    DataError
        If the format is not CSV or parquet, a required column is missing, or
        ``id_str`` holds duplicates.
    """
    table = load_table(catalog)
    name = catalog_name(catalog)
    missing = [column for column in CATALOG_COLUMNS if column not in table.columns]
    if missing:
        raise DataError(
            f"{name} lacks the column(s) {missing}; found {list(table.columns)}. A catalog "
            "needs 'id_str' (galaxy id) and 'file_loc' (image path) columns."
        )
    table["id_str"] = table["id_str"].astype(str)
    check_unique_ids(table["id_str"], name)
    if root is not None:
        base = Path(root)
    elif isinstance(catalog, pd.DataFrame):
        base = Path.cwd()
    else:
        base = Path(catalog).parent
    table["file_loc"] = [str(_resolve(location, base)) for location in table["file_loc"]]
    _check_files_exist(table["file_loc"], name)
    return table


def catalog_name(catalog: str | os.PathLike | pd.DataFrame) -> str:
    """Name a catalog in error messages: its path, or ``"the catalog DataFrame"``."""
    return "the catalog DataFrame" if isinstance(catalog, pd.DataFrame) else str(catalog)


def check_unique_ids(ids: pd.Series, name: str) -> None:
    """Raise DataError naming ``name`` and a few duplicates if ``ids`` repeat."""
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise DataError(
            f"{name} has {len(duplicated)} duplicated id(s), e.g. "
            f"{list(duplicated[:_N_SHOWN])}; galaxy ids must be unique."
        )


def _resolve(location: str | os.PathLike, base: Path) -> Path:
    """Return ``location`` as is when absolute, else relative to ``base``."""
    path = Path(location).expanduser()
    return path if path.is_absolute() else (base / path).absolute()


def _check_files_exist(paths: pd.Series, name: str) -> None:
    """Raise FileNotFoundError listing how many of ``paths`` are missing."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"{name}: {len(missing)} of {len(paths)} file_loc path(s) do not exist, e.g. "
            f"{missing[:_N_SHOWN]}. Check the paths, or pass root= the folder they are in."
        )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG/JPEG (any Pillow format) as stored, without rescaling.

    Greyscale images give one band, colour images three (RGB); an alpha channel
    is dropped. Palette and CMYK images are converted to RGB.

    Parameters
    ----------
    path : str or path-like
        The image file.

    Returns
    -------
    image : (C, H, W) float32 ndarray
        Pixel values in their stored range (0-255 for 8-bit images), C = 1 or 3.

    Raises
    ------
    DataError
        If Pillow cannot identify or decode the file (corrupt or truncated).
    """
    try:
        with Image.open(path) as img:
            if img.mode in _TO_GREY_MODES:
                pixels = img.convert("L")
            elif img.mode in _GREY_MODES or img.mode == "RGB":
                pixels = img
            else:
                pixels = img.convert("RGB")
            array = np.array(pixels, dtype=np.float32)
    except OSError as error:
        raise DataError(
            f"cannot read image {path}: {error}. The file is corrupt, truncated or not an "
            "image; replace it or drop its row from the catalog."
        ) from error
    if array.ndim == 2:
        return array[np.newaxis]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


class ImageFolderSource(GalaxySource):
    """Galaxies stored as PNG/JPEG files listed in a catalog.

    Parameters
    ----------
    catalog : str, path-like or pandas.DataFrame
        A ``.csv`` or ``.parquet`` file, or a DataFrame, with columns
        ``id_str`` and ``file_loc`` (Zoobot's convention); other columns are
        kept as each galaxy's catalog row.
    root : str or path-like, optional
        Folder that relative ``file_loc`` paths are relative to. Defaults to the
        catalog file's folder, or the current directory for a DataFrame.

    Raises
    ------
    FileNotFoundError
        If the catalog or any image it lists does not exist (the message says
        how many are missing and shows the first few).
    DataError
        If the catalog lacks a required column or has duplicate ids.

    Notes
    -----
    Images are returned as :func:`read_image` reads them: ``(C, H, W)``
    float32 in the stored 0-255 range, C = 1 (greyscale) or 3 (RGB, alpha
    dropped). The catalog's ``file_loc`` column holds absolute paths.
    """

    def __init__(
        self,
        catalog: str | os.PathLike | pd.DataFrame,
        *,
        root: str | os.PathLike | None = None,
    ) -> None:
        self.catalog_path = catalog_name(catalog)
        self._catalog = read_catalog(catalog, root=root)

    @property
    def catalog(self) -> pd.DataFrame:
        """One row per galaxy with ``id_str``, ``file_loc`` and the catalog's other columns."""
        return self._catalog

    def read(self, index: int) -> GalaxyRecord:
        """Read galaxy ``index`` from its image file.

        Parameters
        ----------
        index : int
            Row of the catalog, ``0 <= index < len(self)``.

        Returns
        -------
        GalaxyRecord
            ``image`` is ``(C, H, W)`` float32 with C = 1 or 3.

        Raises
        ------
        DataError
            If the image file cannot be decoded.
        """
        row = self._catalog.iloc[index].to_dict()
        path = row["file_loc"]
        return GalaxyRecord(image=read_image(path), id=row["id_str"], row=row, origin=path)
