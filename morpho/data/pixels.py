"""Shared plumbing of the fitted transforms: input checks, pixel sampling, fitted buffers.

Statistics for stretches and normalisation come from the training split only
and travel with the model. This module provides what the fitted modules of
:mod:`morpho.data.stretches` and :mod:`morpho.data.preprocess` share:

- :func:`check_images`, the shape and dtype check of ``(C, H, W)`` /
  ``(N, C, H, W)`` inputs;
- :func:`sample_band_pixels`, a seeded, uniform random sample of pixels from
  a tensor or from an iterable of batches (e.g. a DataLoader over the training
  split) in bounded memory;
- :class:`FittedStateModule`, an :class:`torch.nn.Module` whose buffers take
  their shapes from :meth:`fit` or from a loaded ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["FittedStateModule", "check_images", "sample_band_pixels"]

_CHUNK_VALUES = 2**22
"""A whole (N, C, H, W) tensor is sampled in chunks of about this many values."""


def check_images(x: object, *, name: str = "images") -> int:
    """Check that ``x`` is a ``(C, H, W)`` or ``(N, C, H, W)`` floating-point tensor.

    Parameters
    ----------
    x : object
        The value to check.
    name : str, optional
        What to call ``x`` in error messages.

    Returns
    -------
    int
        The number of bands ``C``.

    Raises
    ------
    TypeError
        If ``x`` is not a floating-point :class:`torch.Tensor`.
    ValueError
        If ``x`` does not have 3 or 4 dimensions.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        kind = f"a {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(
            f"{name} must be a floating-point torch.Tensor, got {kind}; convert with .float()"
        )
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{name} must have shape (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}"
        )
    return x.shape[-3]


class FittedStateModule(nn.Module):
    """An :class:`torch.nn.Module` whose buffers get their shapes when fitted or loaded.

    A fresh, unfitted instance holds placeholder buffers (e.g. of shape
    ``(0,)``) because the band count is not known yet. Loading a
    ``state_dict`` first resizes each buffer to the saved shape, then copies
    it, so ``fresh.load_state_dict(fitted.state_dict())`` works without
    knowing the band count in advance. Dtypes and devices are kept.
    """

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        for name, buffer in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if buffer is not None and isinstance(saved, Tensor) and saved.shape != buffer.shape:
                self._buffers[name] = buffer.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _store(self, name: str, values: np.ndarray | Tensor) -> None:
        """Replace buffer ``name`` by ``values``, keeping the buffer's dtype and device."""
        old = self._buffers[name]
        self._buffers[name] = torch.as_tensor(values, dtype=old.dtype, device=old.device)


class _Reservoir:
    """Uniform random sample, without replacement, of the rows of a stream of matrices.

    Every row gets a uniform random key and the ``size`` rows with the largest
    keys are kept (random-priority reservoir sampling; Efraimidis & Spirakis
    2006, Inf. Process. Lett. 97, 181). Rows are buffered up to ``2 · size``
    before each compaction, and, once ``size`` rows are held, rows whose key
    is below the smallest kept key are dropped on arrival.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.bands: int | None = None
        self._generator = torch.Generator().manual_seed(seed)
        self._keys: list[Tensor] = []
        self._rows: list[Tensor] = []
        self._count = 0
        self._threshold = -1.0

    def add(self, rows: Tensor) -> None:
        if self.bands is None:
            self.bands = rows.shape[1]
        elif rows.shape[1] != self.bands:
            raise ValueError(
                f"the images change band count from {self.bands} to {rows.shape[1]}; "
                "all training images must have the same bands"
            )
        keys = torch.rand(rows.shape[0], generator=self._generator, dtype=torch.float64)
        keep = keys > self._threshold
        self._keys.append(keys[keep])
        self._rows.append(rows[keep].to(torch.float64))
        self._count += int(keep.sum())
        if self._count > 2 * self.size:
            self._compact()

    def _compact(self) -> None:
        keys, rows = torch.cat(self._keys), torch.cat(self._rows)
        if keys.numel() > self.size:
            keys, index = torch.topk(keys, self.size, sorted=False)
            rows = rows[index]
            self._threshold = float(keys.min())
        self._keys, self._rows, self._count = [keys], [rows], keys.numel()

    def sample(self) -> Tensor:
        self._compact()
        return self._rows[0]


def _batches(images: Tensor | Iterable[Tensor]) -> Iterator[Tensor]:
    """Yield ``images`` in memory-sized chunks if it is one tensor, else its items."""
    if isinstance(images, Tensor):
        if images.ndim == 4:
            per_image = max(1, images[0].numel())
            yield from images.split(max(1, _CHUNK_VALUES // per_image))
        else:
            yield images
    else:
        yield from images


def _pixel_rows(batch: object) -> Tensor:
    """``(C, H, W)`` or ``(B, C, H, W)`` tensor -> ``(B·H·W, C)`` CPU rows, checked finite."""
    if not isinstance(batch, Tensor):
        raise TypeError(
            f"expected image tensors, got {type(batch).__name__}; pass a tensor or an iterable "
            "of tensors, e.g. (batch['image'] for batch in loader)"
        )
    bands = check_images(batch)
    bad = int((~torch.isfinite(batch)).sum())
    if bad:
        raise ValueError(
            f"images contain {bad} non-finite pixels (NaN or inf); fill them before fitting "
            "(GalaxyDataset does this)"
        )
    return batch.detach().to("cpu").movedim(-3, -1).reshape(-1, bands)


def sample_band_pixels(
    images: Tensor | Iterable[Tensor], *, max_pixels: int = 200_000, seed: int = 0
) -> Tensor:
    """Draw a seeded, uniform random sample of pixels (all bands at one position).

    Memory stays bounded by about ``2 · max_pixels`` pixels plus one batch,
    however many images there are.

    Parameters
    ----------
    images : (N, C, H, W) or (C, H, W) float Tensor, or iterable of them
        The images, e.g. a DataLoader over the training split yielding image
        batches. Must be finite and share one band count.
    max_pixels : int, optional
        Sample size ``M``.
    seed : int, optional
        Seed of the sample's random generator; the sample depends only on it
        and on the images (in their order).

    Returns
    -------
    (P, C) float64 Tensor
        On the CPU, ``P = min(M, total number of pixel positions)``; all
        pixels, in input order, when there are at most ``M``.

    Raises
    ------
    TypeError
        If an item is not a floating-point tensor.
    ValueError
        If ``max_pixels < 1``, there are no pixels, the band count changes,
        or a pixel is NaN or infinite.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    reservoir = _Reservoir(max_pixels, seed)
    for batch in _batches(images):
        reservoir.add(_pixel_rows(batch))
    sample = reservoir.sample() if reservoir.bands is not None else None
    if sample is None or sample.shape[0] == 0:
        raise ValueError("no pixels to fit on: the images tensor or iterable is empty")
    return sample
