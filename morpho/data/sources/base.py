"""The contract every galaxy source (reader) follows.

A source is a read-only, indexable collection of galaxy cutouts. It knows
nothing about crops, stretches or tensors: it returns each galaxy's pixels as
they are stored, as a ``(C, H, W)`` float32 array, with its id and its
catalog row. :class:`morpho.data.dataset.GalaxyDataset` turns sources into
training-ready tensors.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["GalaxyRecord", "GalaxySource", "LazyHandle"]


@dataclass(frozen=True)
class GalaxyRecord:
    """One galaxy as read from disk.

    Attributes
    ----------
    image : (C, H, W) float32 ndarray
        Pixel values as stored (flux units for FITS and simulated data,
        0-255 for PNG/JPEG). May contain NaN or inf.
    id : str
        The galaxy's identifier (``id_str`` in the catalog).
    row : dict
        The galaxy's catalog row (column name -> value).
    origin : str
        Where the pixels came from, for error messages: a file path, or
        ``"file.h5[images][17]"``.
    """

    image: np.ndarray
    id: str
    row: dict[str, Any] = field(default_factory=dict)
    origin: str = ""


class GalaxySource(abc.ABC):
    """A read-only, indexable collection of galaxy cutouts.

    Subclasses validate what they can cheaply in ``__init__`` (paths exist,
    catalog columns present, dataset keys present) and raise
    :class:`morpho.data.errors.DataError` or :class:`FileNotFoundError` naming
    the file or key at fault. Per-image problems (a corrupt file) are raised
    by :meth:`read` with the same care.

    Sources must be picklable and safe to use from DataLoader worker
    processes: open file handles lazily, per process. Sources that hold a
    handle release it in :meth:`close`; a source is also a context manager
    that closes itself on exit.
    """

    @property
    @abc.abstractmethod
    def catalog(self) -> pd.DataFrame:
        """One row per galaxy, in index order, with at least an ``id_str`` column."""

    def __len__(self) -> int:
        return len(self.catalog)

    @abc.abstractmethod
    def read(self, index: int) -> GalaxyRecord:
        """Read galaxy ``index`` (0 <= index < len(self))."""

    def __repr__(self) -> str:
        where = getattr(self, "path", None) or getattr(self, "catalog_path", "")
        return f"{type(self).__name__}('{where}', n_galaxies={len(self)})"

    def __getitem__(self, index: int) -> GalaxyRecord:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a source of {len(self)} galaxies")
        return self.read(index)

    def close(self) -> None:  # noqa: B027 - an optional hook, deliberately not abstract
        """Close any open file handle; a later read reopens it. Does nothing by default."""

    def __enter__(self) -> GalaxySource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LazyHandle:
    """A file handle opened on first use, once per process.

    DataLoader workers are forked or spawned copies of the main process; a
    handle opened before the fork would share its file offset (and HDF5 state)
    with the parent. ``LazyHandle`` remembers the process id that opened the
    handle and opens a fresh one when used from another process. Pickling
    drops the handle, so a source holding one stays picklable.

    Parameters
    ----------
    opener : callable
        Called with no argument to open the file; must be picklable (e.g. a
        :func:`functools.partial` of ``h5py.File`` or ``astropy.io.fits.open``).
        The object it returns must have a ``close()`` method.
    """

    def __init__(self, opener: Callable[[], Any]) -> None:
        self.opener = opener
        self._handle: Any = None
        self._pid: int | None = None

    def get(self) -> Any:
        """Return this process's handle, opening it if needed.

        A handle inherited through a fork is closed first: files are opened
        read-only, so closing the child's copy leaves the parent's intact.
        """
        if self._pid != os.getpid():
            self.close()
        if self._handle is None:
            self._handle = self.opener()
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        """Close the handle, if open; the next :meth:`get` reopens it."""
        if self._handle is not None:
            self._handle.close()
        self._handle = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        return {"opener": self.opener, "_handle": None, "_pid": None}
