"""Turn a galaxy source into training-ready tensors.

:class:`GalaxyDataset` wraps any :class:`~morpho.data.sources.GalaxySource`
and, for each galaxy, checks the band count, fills non-finite pixels (keeping
a mask of where they were), brings the image to a fixed size and applies an
optional transform. The helper functions do one step each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from morpho.data.errors import DataError
from morpho.data.sources.base import GalaxySource

__all__ = ["NAN_FILL_RULES", "GalaxyDataset", "centre_crop", "fill_non_finite", "resample"]

NAN_FILL_RULES = ("median", "zero")


def fill_non_finite(
    image: np.ndarray, *, rule: str = "median", origin: str = "image"
) -> tuple[np.ndarray, np.ndarray]:
    """Replace NaN and ±inf pixels, band by band.

    Parameters
    ----------
    image : (C, H, W) float ndarray
        Pixels as stored; not modified.
    rule : {"median", "zero"}, default "median"
        ``"median"``: each non-finite pixel takes the median of the finite
        pixels of its own band. ``"zero"``: it takes 0.
    origin : str, default "image"
        Where the image came from, for error messages.

    Returns
    -------
    filled : (C, H, W) float32 ndarray
        All finite.
    mask : (C, H, W) bool ndarray
        True where the input was NaN or ±inf.

    Raises
    ------
    ValueError
        If ``rule`` is unknown.
    DataError
        If a band has no finite pixel at all (nothing to fill from, and a
        blank galaxy is not worth training on).
    """
    if rule not in NAN_FILL_RULES:
        raise ValueError(f"nan_fill must be one of {NAN_FILL_RULES}, got {rule!r}")
    mask = ~np.isfinite(image)
    filled = np.array(image, dtype=np.float32)
    for band, band_mask in enumerate(mask):
        if band_mask.all():
            raise DataError(
                f"{origin}: band {band} of {len(mask)} has no finite pixel (all NaN/inf); "
                "remove this galaxy from the data set"
            )
        if band_mask.any():
            value = np.median(filled[band][~band_mask]) if rule == "median" else 0.0
            filled[band][band_mask] = value
    return filled, mask


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Cut the central ``size x size`` block out of an image.

    Each axis is cropped on its own, so non-square images work. When an
    axis's excess ``n - size`` is odd, the extra pixel is cut from the end
    (the last row or column): the block starts at ``(n - size) // 2``.

    Parameters
    ----------
    image : (C, H, W) tensor
        With ``H >= size`` and ``W >= size``.
    size : int
        Side of the output, in pixels.

    Returns
    -------
    (C, size, size) tensor
        A view of ``image``.
    """
    top = (image.shape[-2] - size) // 2
    left = (image.shape[-1] - size) // 2
    return image[..., top : top + size, left : left + size]


def resample(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resample an image to ``size x size`` pixels, conserving total flux per band.

    Bilinear interpolation with antialiasing (:func:`torch.nn.functional.interpolate`)
    preserves the mean surface brightness; multiplying by the ratio of pixel
    areas, ``(H * W) / size**2``, turns that into conservation of each band's
    total flux (sum of pixels). The aspect ratio follows the input: crop a
    non-square image first to keep it.

    Parameters
    ----------
    image : (C, H, W) float tensor
        Pixel fluxes.
    size : int
        Side of the output, in pixels.

    Returns
    -------
    (C, size, size) float tensor
        Same dtype as ``image``.
    """
    height, width = image.shape[-2:]
    resampled = F.interpolate(
        image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0]
    return resampled * (height * width / size**2)


class GalaxyDataset(Dataset):
    """Training-ready galaxies from a source.

    Parameters
    ----------
    source : GalaxySource
        Where the galaxies come from.
    image_size : int, optional
        Side ``S`` of the square output, in pixels. ``None`` keeps each
        image's native size (then all images must share it to be batched).
    bands : int, optional
        Expected number of bands ``C``; a galaxy with another count is an
        error. ``None`` accepts any.
    resize : bool, default False
        How to reach ``image_size``. False: larger images are centre-cropped
        (see :func:`centre_crop`) and smaller ones are an error. True: every
        image is centre-cropped to a square of its shorter side, then
        resampled to ``S`` conserving each band's total flux (see
        :func:`resample`); this changes the pixel scale.
    nan_fill : {"median", "zero"}, default "median"
        Value given to NaN/inf pixels: the median of the finite pixels of the
        same band, or 0 (see :func:`fill_non_finite`).
    label_key : str, optional
        Numeric catalog column returned as ``"label"``.
    columns : sequence of str, optional
        Numeric catalog columns returned together as ``"columns"``, a float32
        tensor in this order (truth values, PSF widths, ... for supervised models).
    transform : callable, optional
        Applied last to the ``(C, S, S)`` image tensor only: the mask is not
        transformed, so a geometric augmentation here leaves it misaligned.

    Raises
    ------
    ValueError
        If ``nan_fill`` is unknown, ``image_size`` is not positive, or
        ``resize=True`` without ``image_size``.
    DataError
        If ``label_key`` is not a numeric column of the catalog.

    Notes
    -----
    ``dataset[i]`` is a dict: ``"image"`` float32 ``(C, S, S)``; ``"mask"``
    bool ``(C, S, S)``, True where the stored pixel was NaN/inf (after
    resampling, True wherever a non-finite pixel contributed); ``"index"``
    int; ``"id"`` str; ``"label"`` (a tensor) when ``label_key`` is set; and
    ``"columns"`` (a float32 tensor) when ``columns`` are set.
    The steps, in order: band check, NaN/inf fill, crop or resample, transform.
    """

    def __init__(
        self,
        source: GalaxySource,
        *,
        image_size: int | None = None,
        bands: int | None = None,
        resize: bool = False,
        nan_fill: str = "median",
        label_key: str | None = None,
        columns: Sequence[str] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if nan_fill not in NAN_FILL_RULES:
            raise ValueError(f"nan_fill must be one of {NAN_FILL_RULES}, got {nan_fill!r}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        if resize and image_size is None:
            raise ValueError("resize=True needs image_size= the side to resample to")
        if label_key is not None:
            _check_label_column(source.catalog, label_key)
        self.columns = None if columns is None else [str(c) for c in columns]
        for column in self.columns or ():
            _check_label_column(source.catalog, column, role="column")
        self.source = source
        self.image_size = image_size
        self.bands = bands
        self.resize = resize
        self.nan_fill = nan_fill
        self.label_key = label_key
        self.transform = transform

    @property
    def catalog(self) -> pd.DataFrame:
        """The source's catalog, one row per galaxy in index order."""
        return self.source.catalog

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Read galaxy ``index`` and prepare it.

        Parameters
        ----------
        index : int
            ``0 <= index < len(self)``.

        Returns
        -------
        dict
            ``"image"`` (C, S, S) float32 tensor, ``"mask"`` (C, S, S) bool
            tensor, ``"index"`` int, ``"id"`` str, and ``"label"`` tensor when
            ``label_key`` is set.

        Raises
        ------
        DataError
            Naming the galaxy's origin: wrong band count, a band without any
            finite pixel, an image smaller than ``image_size`` (without
            ``resize``), or a file the source cannot read.
        """
        record = self.source[index]
        image = record.image
        if image.ndim != 3:
            raise DataError(f"{record.origin}: expected a (C, H, W) image, got {image.shape}")
        if self.bands is not None and image.shape[0] != self.bands:
            raise DataError(
                f"{record.origin} has {image.shape[0]} band(s), expected {self.bands}; "
                "check the data, or set bands= to the data's band count"
            )
        filled, mask = fill_non_finite(image, rule=self.nan_fill, origin=record.origin)
        pixels, masked = self._fit_size(
            torch.from_numpy(filled), torch.from_numpy(mask), record.origin
        )
        if self.transform is not None:
            pixels = self.transform(pixels)
        item = {"image": pixels, "mask": masked, "index": int(index), "id": record.id}
        if self.label_key is not None:
            item["label"] = _label_tensor(record.row[self.label_key])
        if self.columns is not None:
            values = [record.row[column] for column in self.columns]
            item["columns"] = torch.as_tensor(np.asarray(values, dtype=np.float32))
        return item

    def _fit_size(
        self, image: torch.Tensor, mask: torch.Tensor, origin: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop or resample ``image`` and its ``mask`` to ``image_size``."""
        size = self.image_size
        height, width = image.shape[-2:]
        if size is None or (height == width == size):
            return image, mask
        if self.resize:
            side = min(height, width)
            image, mask = centre_crop(image, side), centre_crop(mask, side)
            if side == size:
                return image.contiguous(), mask.contiguous()
            return resample(image, size), resample(mask.float(), size) > 0
        if height < size or width < size:
            raise DataError(
                f"{origin} is {height}x{width} pixels, smaller than image_size={size}; "
                "set resize=True to resample it, or a smaller image_size"
            )
        return centre_crop(image, size).contiguous(), centre_crop(mask, size).contiguous()


def _check_label_column(catalog: pd.DataFrame, label_key: str, *, role: str = "label_key") -> None:
    """Raise DataError unless ``label_key`` is a numeric (or boolean) catalog column."""
    if label_key not in catalog.columns:
        raise DataError(
            f"{role} {label_key!r} is not a catalog column; the columns are {list(catalog.columns)}"
        )
    column = catalog[label_key]
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        raise DataError(
            f"catalog column {label_key!r} has dtype {column.dtype}; labels must be numbers. "
            "Encode text labels as integers first."
        )


def _label_tensor(value: Any) -> torch.Tensor:
    """A label as a tensor: floats as float32, integers as int64."""
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.floating):
        return torch.as_tensor(array, dtype=torch.float32)
    return torch.as_tensor(array)
