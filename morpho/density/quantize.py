"""Explicit, invertible quantisation of flux images into the integer levels a PixelCNN models.

A sky-subtracted flux image ``x`` (any unit, e.g. ADU) becomes integer levels

.. math::

    k = \\operatorname{clip}\\Big(\\Big\\lfloor \\frac{x - x_0}{\\Delta} + \\frac12 \\Big\\rfloor,
    \\ 0,\\ K - 1\\Big),

with ``x0 = offset`` the flux of level 0, ``Δ = step`` the flux of one level and
``K = n_levels``. The inverse, ``x = x0 + k Δ``, is exact up to half a step for
every pixel that was not clipped; :meth:`Quantizer.quantize` reports the clipped
fraction so that nobody mistakes a clipped image for an exact one.

For the simulated data the defaults reproduce the ADC exactly: ``offset = -b``
(the sky level, 30 ADU) and ``step = 1`` ADU give ``k = ⌊x + b + ½⌋``, the
integer count whose entropy :mod:`morpho.data.entropy` computes, so bits/dim are
directly comparable with the noise-entropy floor. 65 536 levels (16 bits) hold
every simulated galaxy unclipped; 256 levels would clip at a peak S/N near 14.

For survey images, choose ``step`` as the data's own digitisation unit (or a
fixed fraction of the background σ, the same on every data set, so that bits/dim
means the same thing everywhere) and ``offset`` a few σ below the sky.

The network does not see the levels themselves: :meth:`Quantizer.network_input`
gives ``asinh((k - k_sky) / σ_k)``, the levels relative to the empty-sky level in
units of the background noise, a well-scaled input for any ``K``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from morpho.density.logistic import LevelScale

__all__ = ["QuantizedImages", "Quantizer"]


@dataclass(frozen=True)
class QuantizedImages:
    """Integer levels and how many pixels had to be clipped to make them.

    Attributes
    ----------
    levels : (N, C, H, W) int64 tensor
        Quantised images, in ``[0, n_levels - 1]``.
    below, above : () float64 tensors
        Fractions of pixels below level 0 or above the top level before clipping, on
        the images' device (reading them waits for the device; see the properties).
    clipped_per_image : (N,) float64 tensor
        Fraction of each image's pixels (× bands) clipped at either end.
    """

    levels: Tensor
    below: Tensor
    above: Tensor
    clipped_per_image: Tensor

    @property
    def clipped_low(self) -> float:
        """Fraction of pixels that were below level 0."""
        return float(self.below)

    @property
    def clipped_high(self) -> float:
        """Fraction of pixels that were above the top level."""
        return float(self.above)

    @property
    def clipped_fraction(self) -> float:
        """Fraction of all pixels that were clipped at either end."""
        return float(self.below + self.above)


@dataclass(frozen=True)
class Quantizer:
    """Map flux images to integer levels and back.

    Parameters
    ----------
    offset : float
        Flux of level 0 (image units; ``-sky_level`` for sky-subtracted ADU).
    step : float
        Flux of one level (image units per level), > 0.
    n_levels : int
        Number of levels ``K`` (>= 2); levels are ``0 .. K - 1``.
    background_sigma : float
        Noise σ of an empty-sky pixel, in image units, > 0: scales the network input.
    """

    offset: float = -30.0
    step: float = 1.0
    n_levels: int = 65536
    background_sigma: float = math.sqrt(39.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"quantizer.step must be a positive flux per level, got {self.step}")
        if not math.isfinite(self.offset):
            raise ValueError(f"quantizer.offset must be finite, got {self.offset}")
        if int(self.n_levels) != self.n_levels or self.n_levels < 2:
            raise ValueError(f"quantizer.n_levels must be an integer >= 2, got {self.n_levels}")
        if not (math.isfinite(self.background_sigma) and self.background_sigma > 0):
            raise ValueError(
                f"quantizer.background_sigma must be > 0 (image units), got {self.background_sigma}"
            )

    @property
    def sky_level(self) -> float:
        """The (fractional) level of a pixel holding zero flux."""
        return -self.offset / self.step

    @property
    def sigma_levels(self) -> float:
        """The background σ in levels."""
        return self.background_sigma / self.step

    def quantize(self, images: Tensor | np.ndarray, *, strict: bool = False) -> QuantizedImages:
        """Quantise flux images.

        Parameters
        ----------
        images : (N, C, H, W) float tensor or array
            Sky-subtracted flux images, finite.
        strict : bool
            Raise instead of clipping when a pixel falls outside the levels.

        Returns
        -------
        QuantizedImages

        Raises
        ------
        ValueError
            For non-finite pixels, or (``strict``) pixels outside ``[0, K - 1]``, saying
            how many and the flux range the quantizer covers.
        """
        x = torch.as_tensor(images, dtype=torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError("images hold NaN or inf: fill them before quantising")
        raw = torch.floor((x - self.offset) / self.step + 0.5)
        below, above = raw < 0, raw > self.n_levels - 1
        zero = torch.zeros((), dtype=torch.float64, device=raw.device)
        low = below.double().mean() if raw.numel() else zero
        high = above.double().mean() if raw.numel() else zero
        per_image = (below | above).flatten(1).double().mean(dim=1) if raw.ndim > 1 else None
        if strict and (low or high):
            lo, hi = self.flux_range
            raise ValueError(
                f"{float(low):.3%} of pixels are below and {float(high):.3%} above the "
                "quantisation range "
                f"[{lo:g}, {hi:g}] (offset {self.offset:g}, step {self.step:g}, "
                f"{self.n_levels} levels); raise n_levels or lower the offset"
            )
        levels = raw.clamp(0, self.n_levels - 1).to(torch.int64)
        return QuantizedImages(levels=levels, below=low, above=high, clipped_per_image=per_image)

    def dequantize(self, levels: Tensor | np.ndarray) -> Tensor:
        """Flux images (float32, image units) of integer levels: ``offset + k step``."""
        k = torch.as_tensor(levels)
        self.check_levels(k)
        return (self.offset + k.double() * self.step).float()

    @property
    def flux_range(self) -> tuple[float, float]:
        """The flux of the lowest and the highest level."""
        return self.offset, self.offset + (self.n_levels - 1) * self.step

    def check_levels(self, levels: Tensor, *, name: str = "levels") -> None:
        """Raise ValueError unless ``levels`` are integers within ``[0, K - 1]``."""
        if levels.dtype.is_floating_point or levels.dtype == torch.bool:
            raise ValueError(f"{name} must be integers, got {levels.dtype}")
        if levels.numel() and (levels.min() < 0 or levels.max() > self.n_levels - 1):
            raise ValueError(
                f"{name} span [{int(levels.min())}, {int(levels.max())}], outside the "
                f"quantisation range [0, {self.n_levels - 1}]"
            )

    @property
    def level_scale(self) -> LevelScale:
        """Sky level, background σ (levels) and level count, for the mixture likelihood."""
        return LevelScale(self.sky_level, self.sigma_levels, int(self.n_levels))

    def network_input(self, levels: Tensor, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """The network's view of levels: ``asinh((k - k_sky) / σ_k)``, same shape, ``dtype``."""
        return torch.asinh((levels.to(dtype) - self.sky_level) / self.sigma_levels)

    def describe(self) -> dict[str, float]:
        """Constructor arguments, for checkpoints and FITS headers."""
        return {
            "offset": float(self.offset),
            "step": float(self.step),
            "n_levels": int(self.n_levels),
            "background_sigma": float(self.background_sigma),
        }
