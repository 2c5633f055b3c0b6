"""PixelCNN++'s discretised mixture of logistics (or of Gaussians), for any levels and bands.

Every pixel's C bands share one mixture component ``m`` (weights π_m); given it,
band ``c`` is a logistic with location μ_cm and scale s_cm, discretised to the
integer levels ``0 .. K-1`` (Salimans et al. 2017, eq. 2):

.. math::

    P(k \\mid \\mu, s) = \\sigma\\Big(\\frac{k + \\frac12 - \\mu}{s}\\Big)
    - \\sigma\\Big(\\frac{k - \\frac12 - \\mu}{s}\\Big),

where the end levels 0 and K-1 take the whole lower and upper tails. Band ``c``
depends on the earlier bands of the same pixel through its location (their
eq. 3, generalised from RGB to C bands):
``μ_cm = k_sky + σ_k (sinh(m̂_cm) + Σ_{b<c} α_cbm z_b)``, with ``z_b = (k_b - k_sky) / σ_k``
the earlier bands' levels relative to the sky in units of the background σ,
and ``s_cm = σ_k exp(ŝ_cm)``. The network's outputs ``m̂`` and ``ŝ`` are thus of
order one for any number of levels. The log-probability of a bin is evaluated
without cancellation through ``σ(a) - σ(b) = σ(a) σ(-b) (1 - e^{-(a-b)})``.

With ``component="gaussian"`` every component is instead a Gaussian of mean μ_cm and
standard deviation s_cm discretised the same way, ``P(k) = Φ(a) - Φ(b)`` with
``a, b = (k ± ½ - μ) / s``, evaluated in the tail where both CDFs are small
(``Φ(a) - Φ(b) = Φ(-b) - Φ(-a)``) as ``ln Φ(a) + ln(1 - e^{ln Φ(b) - ln Φ(a)})``.
Sky and photon noise at many counts per level are discretised Gaussians: one Gaussian
component is their exact law, where one logistic costs about 0.014 bits per pixel and
a mixture of logistics must learn to combine into a Gaussian shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "COMPONENTS",
    "LevelScale",
    "check_component",
    "discretized_gaussian_log_prob",
    "discretized_logistic_log_prob",
    "mixture_channels",
    "mixture_log_prob",
    "offset_locations",
    "sample_mixture",
]

#: Smallest logistic scale, in levels: a scale of 0.05 puts 99.99996% of the mass in one level.
MIN_SCALE_LEVELS = 0.05

#: The shapes a mixture component may take.
COMPONENTS = ("logistic", "gaussian")


def check_component(component: str) -> str:
    """``component`` if it is one of :data:`COMPONENTS`, else a ValueError naming them."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}")
    return component


@dataclass(frozen=True)
class LevelScale:
    """Where the sky sits and how wide the noise is, in levels (see :class:`Quantizer`)."""

    sky_level: float
    sigma_levels: float
    n_levels: int


def mixture_channels(n_mix: int, n_bands: int) -> int:
    """Network output channels per pixel: weights, locations, scales, band coefficients."""
    return n_mix * (1 + 2 * n_bands + n_bands * (n_bands - 1) // 2)


def _components(params: Tensor, n_mix: int, n_bands: int) -> Tensor:
    """(N, P, H, W) -> what follows the weights, per component: (N, M, P/M - 1, H, W)."""
    n, p, h, w = params.shape
    if p != mixture_channels(n_mix, n_bands):
        raise ValueError(
            f"params have {p} channels; {n_mix} mixture components over {n_bands} band(s) "
            f"need {mixture_channels(n_mix, n_bands)}"
        )
    return params[:, n_mix:].reshape(n, n_mix, -1, h, w)


def _split(params: Tensor, n_mix: int, n_bands: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(N, P, H, W) -> logits (N,M,H,W), m̂ and ŝ (N,M,C,H,W), coefficients (N,M,C(C-1)/2,H,W)."""
    logits = params[:, :n_mix]
    rest = _components(params, n_mix, n_bands)
    means = rest[:, :, :n_bands]
    log_scales = rest[:, :, n_bands : 2 * n_bands]
    coeffs = torch.tanh(rest[:, :, 2 * n_bands :])
    return logits, means, log_scales, coeffs


def offset_locations(params: Tensor, prediction: Tensor, *, n_mix: int, n_bands: int) -> Tensor:
    """Network outputs whose locations are offsets from a prediction, as plain outputs.

    Every component's location output ``m̂`` of band ``c`` becomes
    ``asinh(p_c + sinh(m̂))``, so that its location (``k_sky + σ_k sinh(·)``, before the
    earlier bands' terms) is ``p_c`` plus the offset the network gave; the weights,
    scales and band coefficients are unchanged.

    Parameters
    ----------
    params : (N, mixture_channels(n_mix, C), H, W) float tensor
    prediction : (N, C, H, W) float tensor
        Per band, in background σ relative to the sky.
    n_mix, n_bands : int

    Returns
    -------
    Tensor
        ``params``' shape, for :func:`mixture_log_prob` and :func:`sample_mixture`.
    """
    rest = _components(params, n_mix, n_bands)
    moved = torch.asinh(prediction[:, None].to(rest.dtype) + torch.sinh(rest[:, :, :n_bands]))
    rest = torch.cat([moved, rest[:, :, n_bands:]], dim=2)
    return torch.cat([params[:, :n_mix], rest.flatten(1, 2)], dim=1)


def _band_location(
    means: Tensor, coeffs: Tensor, z: Tensor, band: int, scale: LevelScale
) -> Tensor:
    """μ of band ``band`` (N, M, H, W) in levels, given the earlier bands' z (N, C, H, W)."""
    loc = torch.sinh(means[:, :, band])
    first = band * (band - 1) // 2
    for b in range(band):
        loc = loc + coeffs[:, :, first + b] * z[:, b : b + 1]
    return scale.sky_level + scale.sigma_levels * loc


def _scale(log_scales: Tensor, band: int, scale: LevelScale) -> Tensor:
    log_s = log_scales[:, :, band] + math.log(scale.sigma_levels)
    return torch.exp(log_s.clamp(min=math.log(MIN_SCALE_LEVELS)))


def discretized_logistic_log_prob(
    levels: Tensor, loc: Tensor, scale: Tensor, n_levels: int
) -> Tensor:
    """ln P(k | μ, s) of integer levels ``k`` under a logistic discretised to ``0 .. K-1``.

    Parameters
    ----------
    levels : int or float tensor
        Levels ``k``, broadcastable with ``loc`` and ``scale``.
    loc, scale : float tensors
        Logistic location μ and scale s > 0, in levels.
    n_levels : int
        K; level 0 takes the lower tail and level K-1 the upper tail.

    Returns
    -------
    Tensor
        Natural-log probabilities, the broadcast shape.
    """
    k = levels.to(loc.dtype)
    a = (k + 0.5 - loc) / scale
    b = (k - 0.5 - loc) / scale
    interior = F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(-1.0 / scale))
    out = torch.where(k <= 0, F.logsigmoid(a), interior)
    return torch.where(k >= n_levels - 1, F.logsigmoid(-b), out)


def discretized_gaussian_log_prob(
    levels: Tensor, loc: Tensor, scale: Tensor, n_levels: int
) -> Tensor:
    """ln P(k | μ, s) of integer levels ``k`` under a Gaussian discretised to ``0 .. K-1``.

    Parameters
    ----------
    levels : int or float tensor
        Levels ``k``, broadcastable with ``loc`` and ``scale``.
    loc, scale : float tensors
        Mean μ and standard deviation s > 0, in levels.
    n_levels : int
        K; level 0 takes the lower tail and level K-1 the upper tail.

    Returns
    -------
    Tensor
        Natural-log probabilities, the broadcast shape.
    """
    k = levels.to(loc.dtype)
    a = (k + 0.5 - loc) / scale
    b = (k - 0.5 - loc) / scale
    upper_half = b > 0  # then Φ(a) - Φ(b) = Φ(-b) - Φ(-a), both small
    hi = torch.where(upper_half, -b, a)
    lo = torch.where(upper_half, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    interior = log_hi + torch.log(-torch.expm1(torch.special.log_ndtr(lo) - log_hi))
    out = torch.where(k <= 0, torch.special.log_ndtr(a), interior)
    return torch.where(k >= n_levels - 1, torch.special.log_ndtr(-b), out)


def _logistic_quantile(u: Tensor) -> Tensor:
    return torch.log(u) - torch.log1p(-u)


#: Each component shape's discretised log-probability and standard quantile function.
_SHAPES = {
    "logistic": (discretized_logistic_log_prob, _logistic_quantile),
    "gaussian": (discretized_gaussian_log_prob, torch.special.ndtri),
}


def mixture_log_prob(
    levels: Tensor,
    params: Tensor,
    *,
    n_mix: int,
    scale: LevelScale,
    component: str = "logistic",
) -> Tensor:
    """ln p of every pixel (all its bands jointly) under the network's mixture.

    Parameters
    ----------
    levels : (N, C, H, W) int64 tensor
        The image's levels.
    params : (N, mixture_channels(n_mix, C), H, W) float tensor
        The network's output for these pixels.
    n_mix : int
        Mixture components.
    scale : LevelScale
        Sky level, background σ (levels) and level count.
    component : {"logistic", "gaussian"}
        The shape of every component (see the module).

    Returns
    -------
    (N, H, W) float tensor
        Natural-log probability of each pixel's C levels.
    """
    log_prob, _ = _SHAPES[check_component(component)]
    n_bands = levels.shape[1]
    logits, means, log_scales, coeffs = _split(params, n_mix, n_bands)
    z = (levels.to(params.dtype) - scale.sky_level) / scale.sigma_levels
    total = torch.log_softmax(logits, dim=1)
    for band in range(n_bands):
        loc = _band_location(means, coeffs, z, band, scale)
        s = _scale(log_scales, band, scale)
        total = total + log_prob(levels[:, band : band + 1], loc, s, scale.n_levels)
    return torch.logsumexp(total, dim=1)


def sample_mixture(
    params: Tensor,
    uniforms: Tensor,
    *,
    n_mix: int,
    n_bands: int,
    scale: LevelScale,
    component: str = "logistic",
) -> Tensor:
    """Draw levels from the mixture with given uniforms (deterministic given them).

    Parameters
    ----------
    params : (N, P, H, W) float tensor
        The network's output at the pixels to draw.
    uniforms : (N, 1 + C, H, W) float tensor
        Uniforms in (0, 1): the first picks the component (inverse CDF of the weights),
        the others draw each band's component by inversion.
    n_mix, n_bands : int
    scale : LevelScale
    component : {"logistic", "gaussian"}

    Returns
    -------
    (N, C, H, W) int64 tensor
        Levels in ``[0, K - 1]``; band ``c`` is drawn given the bands before it.
    """
    _, quantile = _SHAPES[check_component(component)]
    logits, means, log_scales, coeffs = _split(params, n_mix, n_bands)
    cdf = torch.cumsum(torch.softmax(logits, dim=1), dim=1)
    pick = (cdf < uniforms[:, :1]).sum(dim=1, keepdim=True).clamp(max=n_mix - 1)
    z = torch.zeros(params.shape[0], n_bands, *params.shape[2:], dtype=params.dtype)
    out = torch.zeros(params.shape[0], n_bands, *params.shape[2:], dtype=torch.int64)
    for band in range(n_bands):
        loc = _band_location(means, coeffs, z, band, scale).gather(1, pick)
        s = _scale(log_scales, band, scale).gather(1, pick)
        u = uniforms[:, 1 + band : 2 + band].clamp(1e-12, 1 - 1e-12).to(params.dtype)
        draw = loc + s * quantile(u)
        level = torch.floor(draw + 0.5).clamp(0, scale.n_levels - 1)
        out[:, band : band + 1] = level.to(torch.int64)
        z[:, band : band + 1] = (level - scale.sky_level) / scale.sigma_levels
    return out
