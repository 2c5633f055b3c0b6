"""Complete an image with a trained PixelCNN: redraw masked pixels given all the others before them.

The image is a FITS stamp (2-D, or bands on ``NAXIS3``) of the model's training size and
bands. The mask (True = redraw) is a FITS image of the same height and width (nonzero =
redraw), the rows from ``rows_from`` to the bottom, a list of ``columns``, or the union of
these. Each completion redraws the masked pixels in raster order, each conditioned on every
pixel before it (masked ones already drawn, unmasked ones as quantised); unmasked pixels keep
their quantised value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from morpho.data.errors import DataError
from morpho.data.sources.fits import read_stamp
from morpho.density.generate import check_count, check_label
from morpho.models.pixelcnn import PixelCNNModule

__all__ = ["check_image", "complete_image", "make_mask", "read_image"]

log = logging.getLogger(__name__)


def check_image(model: PixelCNNModule, image: np.ndarray, *, origin: str) -> None:
    """Refuse an image whose bands or size differ from the model's training images.

    Parameters
    ----------
    image : (C, H, W) array
    origin : str
        The image's file, for the error.

    Raises
    ------
    ValueError
        Naming ``origin``, the image's shape and the model's.
    """
    trained = tuple(int(s) for s in model.image_shape)
    if trained[0] == 0:
        raise ValueError("the model has not been trained (no image size recorded)")
    if tuple(image.shape) != trained:
        raise ValueError(
            f"{origin} holds an image of {image.shape[0]} band(s) and {image.shape[1]}×"
            f"{image.shape[2]} pixels, but the model was trained on {trained[0]} band(s) of "
            f"{trained[1]}×{trained[2]} pixels; cut a stamp of that size with those bands"
        )


def read_image(path: str | os.PathLike, model: PixelCNNModule) -> np.ndarray:
    """Read a FITS stamp to complete and check it against the model's training images.

    Parameters
    ----------
    path : path-like
        A 2-D image, or a cube with the bands on ``NAXIS3`` (the first image HDU).
    model : PixelCNNModule

    Returns
    -------
    (C, H, W) float32 array
        Flux, as stored.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it cannot be read, or its bands or size differ from the model's.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"image {path} does not exist; pass image=<a FITS stamp>")
    image = read_stamp(path)
    check_image(model, image, origin=str(path))
    return image


def _mask_file(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    if not Path(path).is_file():
        raise FileNotFoundError(f"mask file {path} does not exist; pass mask.file=<a FITS image>")
    mask = read_stamp(path)
    if mask.shape[0] != 1 or mask.shape[1:] != size:
        shape = mask.shape[1:] if mask.shape[0] == 1 else mask.shape
        raise DataError(
            f"mask file {path} holds an array of shape {shape}, but the image is "
            f"{size[0]}×{size[1]} pixels; pass a 2-D mask of the image's size"
        )
    return mask[0] != 0


def make_mask(
    size: tuple[int, int],
    *,
    file: str | os.PathLike | None = None,
    rows_from: int | None = None,
    columns: Sequence[int] | None = None,
) -> np.ndarray:
    """The pixels to redraw: the union of a mask file, the bottom rows and some columns.

    Parameters
    ----------
    size : (H, W)
        The image's height and width in pixels.
    file : path-like, optional
        A FITS image (H, W): nonzero pixels are redrawn.
    rows_from : int, optional
        Redraw rows ``rows_from .. H - 1`` (row 0 is the first row of the FITS array).
    columns : sequence of int, optional
        Redraw these columns (0-based), e.g. ``[12, 13]``.

    Returns
    -------
    (H, W) bool array
        True where pixels are redrawn.

    Raises
    ------
    ValueError
        If nothing is given, a row or column lies outside the image, the file's shape
        differs from ``size``, or the mask selects no pixel.
    """
    height, width = size
    mask = np.zeros((height, width), dtype=bool)
    if file is None and rows_from is None and not columns:
        raise ValueError("nothing to redraw: set mask.file, mask.rows_from or mask.columns")
    if file is not None:
        mask |= _mask_file(file, (height, width))
    if rows_from is not None:
        if int(rows_from) != rows_from or not 0 <= rows_from < height:
            raise ValueError(f"mask.rows_from must be a row in [0, {height - 1}], got {rows_from}")
        mask[int(rows_from) :] = True
    for column in columns or ():
        if int(column) != column or not 0 <= column < width:
            raise ValueError(f"mask.columns must be columns in [0, {width - 1}], got {column}")
        mask[:, int(column)] = True
    if not mask.any():
        raise ValueError(f"the mask selects no pixel (mask file {file}); nothing to redraw")
    return mask


def complete_image(
    model: PixelCNNModule,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    n_samples: int = 8,
    seed: int = 0,
    label: int | None = None,
    cached: bool = True,
    origin: str = "the image",
) -> Tensor:
    """Draw ``n_samples`` completions of one image.

    Parameters
    ----------
    model : PixelCNNModule
        Trained.
    image : (C, H, W) float array
        Flux, of the model's bands and training size; non-finite pixels must be masked.
    mask : (H, W) bool array
        True where pixels are redrawn (see :func:`make_mask`).
    n_samples : int
        Completions, drawn together from ``seed`` (copy ``i`` gets its own uniforms).
    label : int, optional
        For a label-conditioned model.
    cached : bool
        Use the cached sampler.
    origin : str
        The image's file, for errors and warnings.

    Returns
    -------
    (n_samples, C, H, W) int64 tensor
        Levels: the unmasked pixels are the image's quantised levels.

    Raises
    ------
    ValueError
        Wrong image size or bands, mask of another size, non-finite pixels outside the
        mask, a bad ``n_samples`` or label.
    """
    n_samples = check_count("n_samples", n_samples)
    check_image(model, image, origin=origin)
    check_label(model, label)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[1:]:
        raise ValueError(
            f"the mask is {mask.shape[0]}×{mask.shape[1]} pixels but {origin} is "
            f"{image.shape[1]}×{image.shape[2]}; pass a mask of the image's size"
        )
    bad = ~np.isfinite(image) & ~mask[None]
    if bad.any():
        raise ValueError(
            f"{origin} has {int(bad.sum())} non-finite pixel(s) outside the mask; add them "
            "to the mask (they are then redrawn) or fill them"
        )
    clipped = model.quantizer.quantize(image[:, ~mask][None]).clipped_fraction
    if clipped:
        log.warning(
            "%.3g%% of the unmasked pixels of %s lie outside the quantisation range "
            "[%g, %g] and were clipped",
            100 * clipped,
            origin,
            *model.quantizer.flux_range,
        )
    images = torch.from_numpy(np.nan_to_num(image)).float().expand(n_samples, *image.shape)
    labels = None if label is None else torch.full((n_samples,), int(label))
    return model.complete(images, torch.from_numpy(mask), seed=seed, labels=labels, cached=cached)
