"""Exact entropy of quantised noisy images: the floor no density model can beat.

A simulated pixel with noiseless value ``m`` (ADU) is digitised as

.. math::

    D = \\Big\\lfloor \\frac{N_e + R}{g} + \\frac12 \\Big\\rfloor,
    \\qquad N_e \\sim \\mathrm{Poisson}(\\lambda),\\ \\lambda = g\\,(m + b),
    \\qquad R \\sim \\mathcal{N}(0, r^2)

(:class:`morpho.data.simulate.noise.NoiseModel`), so that

.. math::

    P(D = k) = \\sum_n \\mathrm{Pois}(n; \\lambda)
    \\Big[\\Phi\\Big(\\frac{g(k + \\frac12) - n}{r}\\Big)
    - \\Phi\\Big(\\frac{g(k - \\frac12) - n}{r}\\Big)\\Big]

and its entropy :math:`H(\\lambda) = -\\sum_k P(k) \\log_2 P(k)` depends on the pixel
only through :math:`\\lambda`. Given the noiseless image, the pixels are
independent, so the entropy of the whole quantised image is the sum of the
per-pixel entropies; any model of the noisy images has a cross-entropy of at
least their mean (Cover & Thomas 2006, Thm. 2.6.3 with the noiseless image known).

:math:`H(\\lambda)` is computed by direct summation (Poisson tails cut at 10σ,
Gaussian CDF edges at ±9 read-noise σ, both below 1e-18 of the mass) on a grid of
40 rates per decade, and interpolated (cubic, in log λ, on the difference from
the Gaussian limit) with an error below 1e-6 bits. Above λ = 1e4 electrons the
Gaussian limit :math:`\\tfrac12\\log_2(2\\pi e\\,(\\lambda + r^2)/g^2)` is used
when it agrees with the direct sum at λ = 1e4 to 2e-5 bits; otherwise (little
read noise and a non-integer gain make the count distribution lumpy) those
pixels are summed directly too.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import interpolate, special, stats

__all__ = ["noise_entropy_bits", "pixel_entropy_bits", "rate_entropy_bits"]

_GAUSSIAN_LIMIT_RATE = 1e4
_GRID_MIN_RATE = 1e-3
_GRID_PER_DECADE = 40


def _direct_entropy(rate: float, read_noise: float, gain: float) -> float:
    """Entropy (bits) of the digitised count for one electron rate, by direct summation."""
    spread = np.sqrt(rate)
    n = np.arange(max(0, int(rate - 10 * spread - 10)), int(np.ceil(rate + 10 * spread + 10)) + 1)
    pmf = stats.poisson.pmf(n, rate)
    if read_noise == 0:
        k = np.floor(n / gain + 0.5).astype(np.int64)
        p = np.bincount(k - k.min(), weights=pmf)
    else:
        k_lo = int(np.floor((n[0] - 9 * read_noise) / gain)) - 1
        k_hi = int(np.ceil((n[-1] + 9 * read_noise) / gain)) + 1
        edges = gain * (np.arange(k_lo, k_hi + 2) - 0.5)
        cdf = special.ndtr((edges[:, None] - n[None, :]) / read_noise)
        p = np.diff(cdf, axis=0) @ pmf
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _gaussian_entropy(rate: np.ndarray, read_noise: float, gain: float) -> np.ndarray:
    return 0.5 * np.log2(2 * np.pi * np.e * (rate + read_noise**2) / gain**2)


@lru_cache(maxsize=16)
def _gaussian_limit_holds(read_noise: float, gain: float) -> bool:
    """Whether the Gaussian limit is within 2e-5 bits of the direct sum at the switch rate."""
    limit = _gaussian_entropy(np.array(_GAUSSIAN_LIMIT_RATE), read_noise, gain)
    return abs(_direct_entropy(_GAUSSIAN_LIMIT_RATE, read_noise, gain) - float(limit)) < 2e-5


@lru_cache(maxsize=16)
def _entropy_table(read_noise: float, gain: float) -> interpolate.CubicSpline:
    decades = np.log10(_GAUSSIAN_LIMIT_RATE / _GRID_MIN_RATE)
    log_rate = np.linspace(
        np.log10(_GRID_MIN_RATE),
        np.log10(_GAUSSIAN_LIMIT_RATE),
        round(decades * _GRID_PER_DECADE) + 1,
    )
    rate = 10.0**log_rate
    exact = np.array([_direct_entropy(float(lam), read_noise, gain) for lam in rate])
    return interpolate.CubicSpline(log_rate, exact - _gaussian_entropy(rate, read_noise, gain))


def rate_entropy_bits(rate: np.ndarray, *, read_noise: float, gain: float) -> np.ndarray:
    """Entropy (bits) of the digitised count of pixels with mean electron count ``rate``.

    Parameters
    ----------
    rate : ndarray
        Mean electron count λ = g (m + b) of each pixel (any shape), >= 0.
    read_noise : float
        Read noise r in electrons (>= 0).
    gain : float
        Gain g in electrons per ADU (> 0).

    Returns
    -------
    ndarray
        Entropy in bits of each pixel's integer ADU count, same shape as ``rate``.

    Raises
    ------
    ValueError
        If ``rate`` holds negative or non-finite values, or the noise parameters are invalid.
    """
    rate = np.asarray(rate, dtype=np.float64)
    if not np.all(np.isfinite(rate)) or np.any(rate < 0):
        raise ValueError("rate must be finite and >= 0 (electrons per pixel)")
    if read_noise < 0 or gain <= 0:
        raise ValueError(f"need read_noise >= 0 and gain > 0, got {read_noise} and {gain}")
    out = _gaussian_entropy(rate, read_noise, gain)
    on_grid = (rate >= _GRID_MIN_RATE) & (rate < _GAUSSIAN_LIMIT_RATE)
    if on_grid.any():
        table = _entropy_table(float(read_noise), float(gain))
        out[on_grid] += table(np.log10(rate[on_grid]))
    direct = rate < _GRID_MIN_RATE
    if not _gaussian_limit_holds(float(read_noise), float(gain)):
        direct |= rate >= _GAUSSIAN_LIMIT_RATE
    for index in zip(*np.nonzero(direct), strict=True):
        out[index] = _direct_entropy(float(rate[index]), read_noise, gain)
    return out


def pixel_entropy_bits(
    noiseless: np.ndarray, *, sky_level: float, read_noise: float, gain: float
) -> np.ndarray:
    """Per-pixel entropy (bits) of the quantised noisy image of ``noiseless``.

    Parameters
    ----------
    noiseless : ndarray
        Noiseless, sky-subtracted model image in ADU, any shape (e.g. (C, H, W)).
        Negative values (interpolation ringing) are treated as 0.
    sky_level : float
        Sky level b in ADU per pixel.
    read_noise : float
        Read noise r in electrons.
    gain : float
        Gain g in electrons per ADU.

    Returns
    -------
    ndarray
        Entropy in bits of each pixel's digitised count, same shape as ``noiseless``.
    """
    noiseless = np.asarray(noiseless, dtype=np.float64)
    if not np.all(np.isfinite(noiseless)):
        raise ValueError("noiseless image holds NaN or inf; the entropy needs a finite model")
    rate = gain * (np.clip(noiseless, 0.0, None) + sky_level)
    return rate_entropy_bits(rate, read_noise=read_noise, gain=gain)


def noise_entropy_bits(
    noiseless: np.ndarray, *, sky_level: float, read_noise: float, gain: float
) -> float:
    """Mean entropy, in bits per pixel, of the quantised noisy image of ``noiseless``.

    This is the exact floor of the bits/dim that any density model can reach on
    images drawn from this noise model (see the module docstring).

    Parameters
    ----------
    noiseless : ndarray
        Noiseless, sky-subtracted model image(s) in ADU, e.g. (C, H, W) or (N, C, H, W).
    sky_level, read_noise, gain : float
        The noise model: ADU per pixel, electrons, electrons per ADU.

    Returns
    -------
    float
        Bits per pixel (per dimension), averaged over all pixels given.
    """
    bits = pixel_entropy_bits(noiseless, sky_level=sky_level, read_noise=read_noise, gain=gain)
    return float(bits.mean())
