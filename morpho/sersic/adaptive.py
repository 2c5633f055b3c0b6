"""Adaptive second moments of a batch of images, as scalars for the Sérsic network.

The network's canonical orientation comes from moments with a round weight
(:mod:`morpho.sersic.pose`), whose position angle is poor (median error 5.1° at
S/N 20–200, against 4.1° for adaptive moments and 3.7° for the trained network,
measured on the ``--quick`` test set of ``benchmarks/sersic.py``; given to the
network, they did not improve it: ``benchmarks/RESULTS.md``, Sérsic Q19).
Adaptive moments iterate the weight to the galaxy's own elliptical Gaussian (the
matched filter of a Gaussian profile), as the classical fit's starting guess does
(:func:`morpho.sersic.start.adaptive_moments`, one image in NumPy); here in torch for
a whole batch, with a fixed number of iterations and no branch, so that it compiles
into the network's prediction.

The moments are measured inside a central square crop (``window`` pixels), the
weight centred on the stamp centre and then on the weighted centroid. The PSF
correction treats the PSF as a round Gaussian of its FWHM. At the fixed point the
moments of a Gaussian of covariance C are C / 2 (the image times its matched
weight), so ``M_gal = M_obs - σ_psf² I / 2`` with ``σ_psf = FWHM / 2.3548`` (exact
for a Gaussian galaxy and PSF); the network learns what is left from the PSF's
FWHM and wing fraction, which it also receives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["N_ADAPTIVE_FEATURES", "adaptive_features", "batch_adaptive_moments"]

#: Scalars :func:`adaptive_features` gives per galaxy.
N_ADAPTIVE_FEATURES = 4

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _clamp_eigen(a: Tensor, b: Tensor, c: Tensor, low: float, high: float) -> tuple[Tensor, ...]:
    """Clamp the eigenvalues of symmetric ``[[a, b], [b, c]]`` (each (N,)) into [low, high]."""
    mean = (a + c) / 2
    radius = torch.sqrt(((a - c) / 2) ** 2 + b**2)
    major = (mean + radius).clamp(low, high)
    minor = (mean - radius).clamp(low, high)
    new_mean, new_radius = (major + minor) / 2, (major - minor) / 2
    # M = mean I + radius R with R traceless and unit-norm; R kept, its size replaced.
    scale = new_radius / radius.clamp_min(1e-12)
    return new_mean + (a - mean) * scale, b * scale, new_mean + (c - mean) * scale


def batch_adaptive_moments(
    images: Tensor, *, sigma: float = 3.0, iterations: int = 8, window: int = 40
) -> tuple[Tensor, Tensor, Tensor]:
    """Adaptive centroid offsets and second moments of ``(N, H, W)`` images.

    Parameters
    ----------
    images : (N, H, W) tensor
        Background-subtracted images (any units).
    sigma : float
        σ (pixels) of the round starting weight.
    iterations : int
        Fixed-point iterations: the weight's covariance becomes twice the measured
        moments (the matched Gaussian's), its centre the weighted centroid.
    window : int
        Side of the central crop the moments are measured in (the whole image if larger).

    Returns
    -------
    centre : (N, 2) tensor
        ``(x, y)`` of the weighted centroid from the stamp centre, pixels.
    moments : (N, 3) tensor
        ``(Mxx, Mxy, Myy)`` in pixels², eigenvalues kept in ``[0.01, (window / 3)²]``;
        half the covariance of a Gaussian image.
    weighted_flux : (N,) tensor
        ``Σ w I`` of the last weight (not positive: the moments mean nothing).
    """
    height, width = images.shape[-2:]
    top, left = max(0, (height - window) // 2), max(0, (width - window) // 2)
    crop = images[:, top : top + min(window, height), left : left + min(window, width)]
    rows, cols = crop.shape[-2:]
    y = (torch.arange(rows, dtype=crop.dtype, device=crop.device) + top - (height - 1) / 2)[:, None]
    x = (torch.arange(cols, dtype=crop.dtype, device=crop.device) + left - (width - 1) / 2)[None, :]
    limit = (min(rows, cols) / 3.0) ** 2
    n = crop.shape[0]
    mu_x = crop.new_zeros(n)
    mu_y = crop.new_zeros(n)
    cxx, cxy, cyy = crop.new_full((n,), sigma**2), crop.new_zeros(n), crop.new_full((n,), sigma**2)
    mxx, mxy, myy = cxx / 2, cxy, cyy / 2
    norm = crop.new_zeros(n)
    for _ in range(iterations):
        det = (cxx * cyy - cxy**2).clamp_min(1e-12)
        ixx, ixy, iyy = (v[:, None, None] / det[:, None, None] for v in (cyy, -cxy, cxx))
        dx, dy = x - mu_x[:, None, None], y - mu_y[:, None, None]
        weighted = crop * torch.exp(-0.5 * (ixx * dx * dx + 2 * ixy * dx * dy + iyy * dy * dy))
        norm = weighted.sum(dim=(-2, -1))
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        mu_x = torch.where(norm > 0, (weighted * x).sum(dim=(-2, -1)) / safe, mu_x)
        mu_y = torch.where(norm > 0, (weighted * y).sum(dim=(-2, -1)) / safe, mu_y)
        dx, dy = x - mu_x[:, None, None], y - mu_y[:, None, None]
        new = [(weighted * u).sum(dim=(-2, -1)) / safe for u in (dx * dx, dx * dy, dy * dy)]
        new = _clamp_eigen(*new, low=0.01, high=limit)
        mxx, mxy, myy = (
            torch.where(norm > 0, v, old) for v, old in zip(new, (mxx, mxy, myy), strict=True)
        )
        cxx, cxy, cyy = _clamp_eigen(2 * mxx, 2 * mxy, 2 * myy, low=0.25, high=2 * limit)
    return torch.stack([mu_x, mu_y], dim=1), torch.stack([mxx, mxy, myy], dim=1), norm


def adaptive_features(images: Tensor, psf_fwhm_pix: Tensor, **kwargs) -> Tensor:
    """Four scalars per galaxy from the adaptive moments of ``(N, H, W)`` images, (N, 4).

    ``e1 = (Mxx - Myy) / T`` and ``e2 = 2 Mxy / T`` of the observed moments
    (``T = Mxx + Myy``; they carry the position angle, ``½ atan2(e2, e1)``), the
    PSF-corrected axis ratio ``sqrt(λ_min / λ_max)`` of ``M - σ_psf² I / 2``
    (eigenvalues at least 0.01 pixel²), and ``ln sqrt(T)``, the observed size: the
    σ in pixels of a round Gaussian image.
    ``kwargs`` go to :func:`batch_adaptive_moments`.
    """
    _, moments, _ = batch_adaptive_moments(images, **kwargs)
    mxx, mxy, myy = moments.unbind(dim=1)
    trace = (mxx + myy).clamp_min(1e-6)
    psf_moment = (psf_fwhm_pix.to(moments) / _FWHM_PER_SIGMA) ** 2 / 2
    mean = (mxx + myy) / 2 - psf_moment
    radius = torch.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    major = (mean + radius).clamp_min(0.01)
    minor = (mean - radius).clamp_min(0.01)
    return torch.stack(
        [(mxx - myy) / trace, 2 * mxy / trace, torch.sqrt(minor / major), 0.5 * torch.log(trace)],
        dim=1,
    )
