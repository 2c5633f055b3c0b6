"""Image statistics that start a Sérsic fit: detection and adaptive moments.

The shape of a galaxy comes from its adaptive (Gaussian-weighted) moments
(Bernstein & Jarvis 2002; Hirata & Seljak 2003): iterate an elliptical Gaussian
weight ``w`` of covariance ``2M`` matched to the galaxy, with

.. math::

    μ = \\frac{Σ w I x}{Σ w I}, \\qquad M = \\frac{Σ w I (x - μ)(x - μ)^T}{Σ w I}.

For Gaussians the moments of galaxy and PSF add, ``M_obs = M_gal + M_psf``, which
deconvolves the size; the major-axis half-light radius of a Sérsic profile of
index n is then ``k(n) sqrt(λ_max(M_gal))``, with ``k`` tabulated below (measured on
finely sampled profiles).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["adaptive_moments", "detection_snr", "moment_shape"]

#: Smoothing scales (Gaussian σ, pixels) at which sources are looked for.
DETECTION_SCALES: tuple[float, ...] = (1.5, 3.0, 6.0)

#: Ratio of the major-axis half-light radius to the adaptive moment σ_major, by n.
RADIUS_PER_SIGMA: dict[float, float] = {0.5: 1.665, 1.0: 2.043, 2.0: 3.558, 4.0: 10.72}


def detection_snr(
    image: np.ndarray, sigma: float, *, scales: Sequence[float] = DETECTION_SCALES
) -> tuple[float, np.ndarray]:
    """S/N and position of the brightest peak of the image smoothed at several scales.

    At each scale the image is smoothed with a Gaussian ``k`` (σ = scale in
    pixels) and its peak divided by the smoothed noise ``σ sqrt(Σ k²)``; the best
    scale wins (a small kernel finds compact sources, a wide one extended, faint
    disks).

    Parameters
    ----------
    image : (H, W) array
        Sky-subtracted image.
    sigma : float
        Background noise σ per pixel (image units).
    scales : sequence of float
        Smoothing σ in pixels.

    Returns
    -------
    snr : float
        Best smoothed-peak S/N.
    peak : (2,) ndarray
        Its (x, y) pixel coordinates.
    """
    data = np.asarray(image, dtype=np.float64)
    best = (-np.inf, np.zeros(2))
    for scale in scales:
        smoothed = gaussian_filter(data, scale, mode="constant")
        delta = np.zeros((2 * int(np.ceil(4 * scale)) + 1,) * 2)
        delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1.0
        norm = np.sqrt(np.sum(gaussian_filter(delta, scale, mode="constant") ** 2))
        row, col = np.unravel_index(np.argmax(smoothed), smoothed.shape)
        snr = float(smoothed[row, col] / (sigma * norm))
        if snr > best[0]:
            best = (snr, np.array([col, row], dtype=float))
    return best


def adaptive_moments(
    image: np.ndarray, *, centre: np.ndarray, sigma: float, iterations: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive centroid and second moments of one image.

    Parameters
    ----------
    image : (H, W) array
        Sky-subtracted image.
    centre : (2,) array
        Starting (x, y) in pixels.
    sigma : float
        Starting weight σ in pixels.
    iterations : int
        Fixed-point iterations of the matched weight.

    Returns
    -------
    centroid : (2,) ndarray
        (x, y) in pixels.
    moments : (2, 2) ndarray
        ``[[Mxx, Mxy], [Mxy, Myy]]`` in pixels², eigenvalues kept in
        ``[0.01, (min(H, W) / 3)²]``.
    """
    height, width = image.shape
    y, x = np.indices(image.shape, dtype=np.float64)
    limit = (min(height, width) / 3.0) ** 2
    mu = np.asarray(centre, dtype=np.float64).copy()
    cov = np.eye(2) * sigma**2
    moments = cov / 2.0
    for _ in range(iterations):
        inv = np.linalg.inv(cov)
        dx, dy = x - mu[0], y - mu[1]
        weighted = image * np.exp(
            -0.5 * (inv[0, 0] * dx * dx + 2.0 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy)
        )
        norm = weighted.sum()
        if not norm > 0:
            break
        mu = np.array([(weighted * x).sum(), (weighted * y).sum()]) / norm
        mu = np.clip(mu, 0.0, [width - 1.0, height - 1.0])
        dx, dy = x - mu[0], y - mu[1]
        mxx, myy = (weighted * dx * dx).sum() / norm, (weighted * dy * dy).sum() / norm
        mxy = (weighted * dx * dy).sum() / norm
        moments = _clamp(np.array([[mxx, mxy], [mxy, myy]]), low=0.01, high=limit)
        cov = _clamp(2.0 * moments, low=0.25, high=2.0 * limit)
    return mu, moments


def _clamp(matrix: np.ndarray, *, low: float, high: float) -> np.ndarray:
    """Clamp the eigenvalues of a symmetric 2×2 matrix into [low, high]."""
    eigval, eigvec = np.linalg.eigh(matrix)
    eigval = np.clip(np.nan_to_num(eigval, nan=low), low, high)
    return eigvec @ np.diag(eigval) @ eigvec.T


def moment_shape(moments: np.ndarray, psf_moments: np.ndarray) -> tuple[float, float, float]:
    """PSF-corrected size, axis ratio and position angle from adaptive moments.

    Parameters
    ----------
    moments, psf_moments : (2, 2) arrays
        Adaptive moments of the galaxy image and of the PSF image (pixels²).

    Returns
    -------
    sigma_major : float
        σ along the major axis of ``M_gal = M_obs - M_psf`` in pixels (at least 0.1).
    q : float
        Axis ratio ``sqrt(λ_min / λ_max)`` in (0, 1].
    pa_deg : float
        Major-axis angle in degrees from +x towards +y, in [0, 180).
    """
    eigval, eigvec = np.linalg.eigh(moments - psf_moments)
    eigval = np.clip(eigval, 0.01, None)
    major = eigvec[:, 1]
    pa_deg = float(np.degrees(np.arctan2(major[1], major[0])) % 180.0)
    return float(np.sqrt(eigval[1])), float(np.sqrt(eigval[0] / eigval[1])), pa_deg
