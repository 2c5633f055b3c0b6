"""What the density commands write: FITS cubes with their provenance, and pictures.

Cubes are ``(N, C, H, W)`` float32 flux in numpy order (``NAXIS1 = W``, ``NAXIS2 = H``,
``NAXIS3 = C``, ``NAXIS4 = N``), the layout :class:`morpho.data.sources.FITSSource` reads
back as a cube of stamps. Their primary header records the morpho version, the
checkpoint, the settings of the draw and the quantizer (so that ``(flux - QOFFSET) / QSTEP``
gives back the integer levels). Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from matplotlib.figure import Figure

from morpho import __version__
from morpho.density.quantize import Quantizer
from morpho.plotting import save_mosaic
from morpho.utils import atomic_output

__all__ = [
    "provenance_header",
    "save_anomalies_picture",
    "save_completions_picture",
    "save_samples_picture",
    "write_cube",
]

Card = tuple[Any, str]


def _card(value: Any, comment: str) -> tuple[Any, str]:
    """(value, comment) for one 80-character card: ASCII text; a comment that does not fit
    beside a long text value is shortened (astropy would warn and cut it)."""
    if not isinstance(value, str):
        return value, comment
    value = value.encode("ascii", "replace").decode()
    quoted = max(len(value.replace("'", "''")) + 2, 20)
    room = 80 - 10 - quoted - 3
    if len(value) > 68:  # a long string: astropy spreads it and its comment over CONTINUE cards
        return value, comment
    return value, comment[: max(room, 0)]


def provenance_header(
    checkpoint: str | os.PathLike, quantizer: Quantizer, cards: Mapping[str, Card]
) -> fits.Header:
    """A FITS header recording where a cube came from.

    Parameters
    ----------
    checkpoint : path-like
        The model's checkpoint (recorded as an absolute path, ``CKPT``).
    quantizer : Quantizer
        Recorded as ``QOFFSET``, ``QSTEP``, ``QNLEVELS`` and ``QBKGSIG``.
    cards : mapping of str to (value, comment)
        Further keywords (at most 8 characters each), e.g. ``{"SEED": (0, "seed")}``.

    Returns
    -------
    astropy.io.fits.Header
        With ``MORPHVER`` (the morpho version) first.

    Raises
    ------
    ValueError
        If a keyword is longer than 8 characters.
    """
    q = quantizer.describe()
    entries = {
        "MORPHVER": (__version__, "morpho version that wrote this file"),
        "CKPT": (str(Path(checkpoint).resolve()), "model checkpoint"),
        **cards,
        "QOFFSET": (q["offset"], "quantizer: flux of level 0"),
        "QSTEP": (q["step"], "quantizer: flux per level"),
        "QNLEVELS": (q["n_levels"], "quantizer: number of levels"),
        "QBKGSIG": (q["background_sigma"], "quantizer: background sigma (flux)"),
    }
    header = fits.Header()
    for key, (value, comment) in entries.items():
        if len(key) > 8:
            raise ValueError(f"FITS keyword {key!r} is longer than 8 characters")
        header[key] = _card(value, comment)
    return header


def write_cube(
    path: str | os.PathLike,
    cube: np.ndarray,
    header: fits.Header,
    *,
    extensions: Mapping[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a ``(N, C, H, W)`` cube as the primary HDU of a FITS file, atomically.

    Parameters
    ----------
    path : path-like
    cube : (N, C, H, W) array
        Written as float32.
    header : astropy.io.fits.Header
        E.g. of :func:`provenance_header`.
    extensions : mapping of str to array, optional
        Image extensions by EXTNAME (e.g. the mask of a completion).
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    hdus = [fits.PrimaryHDU(np.asarray(cube, dtype=np.float32), header=header)]
    hdus += [
        fits.ImageHDU(np.asarray(data), name=name) for name, data in (extensions or {}).items()
    ]
    with atomic_output(path, overwrite=overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def _chunks(items: Sequence, per_row: int) -> list:
    return [items[s : s + per_row] for s in range(0, len(items), per_row)]


def save_samples_picture(
    path: str | os.PathLike, images: np.ndarray, *, per_row: int = 8, title: str = "samples"
) -> Figure:
    """Save a grid of ``(N, C, H, W)`` flux images (asinh-stretched), ``per_row`` to a row."""
    return save_mosaic(_chunks(images, per_row), path, title=title)


def save_anomalies_picture(
    path: str | os.PathLike,
    images: np.ndarray,
    ids: Sequence[str],
    scores: Sequence[float],
    *,
    score_name: str = "local",
    per_row: int = 8,
) -> Figure:
    """Save the most anomalous images, in the order given, each titled with its id and score.

    Parameters
    ----------
    images : (k, C, H, W) float array
        Flux.
    ids, scores : sequences of length k

    Raises
    ------
    ValueError
        If the lengths differ.
    """
    if not len(images) == len(ids) == len(scores):
        raise ValueError(f"got {len(images)} images, {len(ids)} ids and {len(scores)} scores")
    titles = [f"{i}\n{score_name} {s:.1f}" for i, s in zip(ids, scores, strict=True)]
    return save_mosaic(
        _chunks(images, per_row),
        path,
        cell_titles=_chunks(titles, per_row),
        title=f"highest {score_name} anomaly scores",
    )


def save_completions_picture(
    path: str | os.PathLike,
    original: np.ndarray,
    mask: np.ndarray,
    completions: np.ndarray,
    *,
    per_row: int = 8,
) -> Figure:
    """Save the original image, the image with the redrawn pixels black, and the completions.

    Parameters
    ----------
    original : (C, H, W) float array
        Flux (non-finite pixels are shown as zero).
    mask : (H, W) bool array
        True where pixels were redrawn.
    completions : (N, C, H, W) float array
        Flux.
    """
    original = np.nan_to_num(np.asarray(original, dtype=np.float64))
    masked = np.where(mask[None], original.min(axis=(1, 2), keepdims=True), original)
    rows = [original[None], masked[None], *_chunks(completions, per_row)]
    labels = ["original", "redrawn\n(black)", "completions"] + [""] * (len(rows) - 3)
    return save_mosaic(rows, path, row_labels=labels, title="completions")
