"""Curves of growth in elliptical apertures: the light profile a Sérsic index is read from.

The Sérsic index sets how concentrated a galaxy's light is: the fraction of the
flux inside a given radius. A network that sees the image only after a stride-2
stem blurs the core where that is decided, so the fraction is also measured
directly and given to the head as scalars.

Apertures are ellipses about the stamp centre with the shape of the image's
Gaussian-weighted second moments (see :mod:`morpho.sersic.pose`); radii are
*circularised*, ``r = sqrt(q x'^2 + y'^2 / q)`` along the moment axes, so an
aperture of radius r has the area of a circle of radius r. Pixels on an aperture's
edge count with the fraction of a pixel-wide ramp inside it. The moments and
the apertures turn with the image, so the curve is the same for every rotation
by 90° and mirror image of a stamp (up to float rounding).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from morpho.sersic.pose import weighted_moments

__all__ = ["DEFAULT_GROWTH_RADII", "check_radii", "elliptical_radius", "growth_fractions"]

#: Aperture radii (pixels) for 64×64 stamps of galaxies with r_e 2–10 pixels: dense in
#: the core, where the index shows; the last is the reference (the "total").
DEFAULT_GROWTH_RADII = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)


def check_radii(radii: Sequence[float]) -> tuple[float, ...]:
    """``radii`` as floats; ValueError unless at least two, increasing and positive."""
    radii = tuple(float(r) for r in radii)
    if len(radii) < 2 or any(b <= a for a, b in itertools.pairwise(radii)):
        raise ValueError(
            f"growth radii must be at least two radii in increasing order (the last is the "
            f"reference), got {list(radii)}"
        )
    if radii[0] <= 0:
        raise ValueError(f"growth radii must be positive, got {list(radii)}")
    return radii


def elliptical_radius(
    images: Tensor, *, weight_sigma: float = 8.0, moments: Tensor | None = None
) -> Tensor:
    """Circularised elliptical radius (pixels) of every pixel, ``(N, H, W)``.

    The ellipse is that of the Gaussian-weighted (σ = ``weight_sigma``) second
    moments of each square ``(N, S, S)`` image about the stamp centre, or of
    ``moments`` (N, 4) ``(e1, e2, trace, i0)`` of these images when already computed
    (:attr:`morpho.sersic.pose.Pose.moments` for canonical images). Where the moments
    are not those of an ellipse (no positive weighted flux, or a degenerate
    matrix) the radius is circular.
    """
    if moments is None:
        _, _, e1, e2, trace, i0 = weighted_moments(images, weight_sigma)
    else:
        e1, e2, trace, i0 = moments.to(images.dtype).unbind(dim=1)
    ixx, iyy, ixy = (trace + e1) / (2 * i0), (trace - e1) / (2 * i0), e2 / (2 * i0)
    det = ixx * iyy - ixy**2
    valid = (i0 > 0) & (ixx > 0) & (iyy > 0) & (det > 1e-6 * (ixx + iyy) ** 2)
    one, zero = torch.ones_like(ixx), torch.zeros_like(ixx)
    ixx, iyy = torch.where(valid, ixx, one), torch.where(valid, iyy, one)
    ixy, det = torch.where(valid, ixy, zero), torch.where(valid, det, one)
    # r² = sqrt(det M) · vᵀ M⁻¹ v: the Mahalanobis radius scaled to the circle of equal area.
    scale = det.rsqrt()
    a, b, c = iyy * scale, -ixy * scale, ixx * scale  # sqrt(det) M⁻¹ = [[a, b], [b, c]]
    side = images.shape[-1]  # square stamps, as weighted_moments assumes
    offsets = torch.arange(side, dtype=images.dtype, device=images.device) - (side - 1) / 2
    xx, yy = offsets[None, None, :], offsets[None, :, None]
    r2 = a.view(-1, 1, 1) * xx**2 + 2 * b.view(-1, 1, 1) * xx * yy + c.view(-1, 1, 1) * yy**2
    return r2.clamp_min(0).sqrt()


def growth_fractions(
    images: Tensor,
    radii: Sequence[float] = DEFAULT_GROWTH_RADII,
    *,
    weight_sigma: float = 8.0,
    moments: Tensor | None = None,
) -> Tensor:
    """Flux inside each aperture over the flux inside the last one, ``(N, len(radii) - 1)``.

    Parameters
    ----------
    images : (N, H, W) tensor
        Sky-subtracted images (any flux unit; noise units suit the network).
    radii : increasing sequence of float
        Circularised aperture radii in pixels; the last is the reference.
    weight_sigma : float
        σ (pixels) of the Gaussian weight of the moments that shape the ellipses.
    moments : (N, 4) tensor, optional
        These moments when already computed (see :func:`elliptical_radius`).

    Returns
    -------
    (N, len(radii) - 1) tensor
        The fractions, clamped to [-1, 2] (noise can push a faint galaxy's outside
        them); 0 where the reference flux is not positive.
    """
    radii = check_radii(radii)
    r = elliptical_radius(images, weight_sigma=weight_sigma, moments=moments).flatten(1)  # (N, P)
    pixels = images.flatten(1)
    # One aperture at a time: (N, P) per radius, not (N, K, P), for large batches.
    flux = torch.stack([((radius + 0.5 - r).clamp(0, 1) * pixels).sum(1) for radius in radii], 1)
    total = flux[:, -1:]
    fractions = torch.where(total > 0, flux[:, :-1] / total.clamp_min(1e-30), 0.0)
    return fractions.clamp(-1.0, 2.0)
