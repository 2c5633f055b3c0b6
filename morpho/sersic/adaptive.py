"""Adaptive second moments of a batch of images, as scalars for the Sérsic network.

The network's canonical orientation comes from moments with a round weight
(:mod:`morpho.sersic.pose`), whose position angle is poor (median error 5.1° at
S/N 20–200, against 4.1° for adaptive moments and 3.7° for the trained network,
measured on the ``--quick`` test set of ``benchmarks/sersic.py``; given to the
network, they did not improve it: ``benchmarks/RESULTS.md``, Sérsic Q19).
Adaptive moments iterate the weight to the galaxy's own elliptical Gaussian (the
matched filter of a Gaussian profile): :func:`morpho.data.canonical.adaptive_moments`,
batched in torch, measured here inside a central square crop (``window`` pixels).

The PSF correction treats the PSF as a round Gaussian of its FWHM. At the fixed
point the moments of a Gaussian of covariance C are C / 2 (the image times its
matched weight), so ``M_gal = M_obs - σ_psf² I / 2`` with ``σ_psf = FWHM / 2.3548``
(exact for a Gaussian galaxy and PSF); the network learns what is left from the
PSF's FWHM and wing fraction, which it also receives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from morpho.data.canonical import adaptive_moments

__all__ = ["N_ADAPTIVE_FEATURES", "adaptive_features"]

#: Scalars :func:`adaptive_features` gives per galaxy.
N_ADAPTIVE_FEATURES = 4

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def adaptive_features(
    images: Tensor,
    psf_fwhm_pix: Tensor,
    *,
    window: int = 40,
    iterations: int = 8,
    initial_sigma: float = 3.0,
) -> Tensor:
    """Four scalars per galaxy from the adaptive moments of ``(N, H, W)`` images, (N, 4).

    ``e1 = (Mxx - Myy) / T`` and ``e2 = 2 Mxy / T`` of the observed moments
    (``T = Mxx + Myy``; they carry the position angle, ``½ atan2(e2, e1)``), the
    PSF-corrected axis ratio ``sqrt(λ_min / λ_max)`` of ``M - σ_psf² I / 2``
    (eigenvalues at least 0.01 pixel²), and ``ln sqrt(T)``, the observed size: the
    σ in pixels of a round Gaussian image. The moments are measured in the central
    ``window × window`` pixels (the whole image if smaller), starting from a round
    weight of σ ``initial_sigma``.
    """
    height, width = images.shape[-2:]
    top, left = max(0, (height - window) // 2), max(0, (width - window) // 2)
    crop = images[:, top : top + min(window, height), left : left + min(window, width)]
    _, moments, _ = adaptive_moments(crop, iterations=iterations, initial_sigma=initial_sigma)
    mxx, mxy, myy = moments[:, 0, 0], moments[:, 0, 1], moments[:, 1, 1]
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
