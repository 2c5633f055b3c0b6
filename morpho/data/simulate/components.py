"""GalSim building blocks of simulated galaxies: Sérsic components, arms, knots, tails.

Conventions (used by every truth column):

- lengths are in pixels, positions relative to the galaxy centre, +x along image
  columns and +y along rows;
- ``r_e`` is the half-light radius along the major axis, ``q = b/a``;
- position angles are in degrees in [0, 180), from +x towards +y;
- a component's profile has unit flux; :class:`Component.fraction` says which share
  of the galaxy's flux (in the first band) it carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import galsim
import numpy as np

__all__ = [
    "GSPARAMS",
    "Component",
    "arm_pattern",
    "blobs",
    "project",
    "projected_gaussian_shape",
    "sersic",
]

#: Accuracy settings shared by every profile (GalSim's defaults, with FFT folding
#: relaxed to 5e-3 of the flux, invisible under noise at S/N <= 1000).
GSPARAMS = galsim.GSParams(folding_threshold=5e-3, maxk_threshold=1e-3, maximum_fft_size=8192)


@dataclass
class Component:
    """One light component of a simulated galaxy.

    Attributes
    ----------
    name : str
        Truth-column prefix (``"bulge"``, ``"disk"``, ``"arms"``, ...).
    profile : galsim.GSObject
        Unit-flux profile in arcsec, already projected and positioned.
    fraction : float
        Share of the galaxy's first-band flux.
    population : {"old", "young"}
        Stellar population, which sets its colour across bands.
    truth : dict
        Sérsic truth (``r_e_pix``, ``n``, ``q``, ``pa_deg``) and any other parameters.
    """

    name: str
    profile: galsim.GSObject
    fraction: float
    population: str
    truth: dict[str, float] = field(default_factory=dict)


def project(profile: galsim.GSObject, q: float, pa_deg: float) -> galsim.GSObject:
    """Project a round (face-on) profile to axis ratio ``q`` at position angle ``pa_deg``.

    A face-on radius R becomes the semi-major axis R (and the semi-minor axis qR);
    flux is conserved.
    """
    return profile.dilate(np.sqrt(q)).shear(q=q, beta=pa_deg * galsim.degrees)


def sersic(
    n: float, r_e_pix: float, q: float, pa_deg: float, *, pixel_scale: float
) -> galsim.GSObject:
    """Unit-flux Sérsic profile with major-axis half-light radius ``r_e_pix`` (pixels)."""
    round_profile = galsim.Sersic(
        n=n, half_light_radius=r_e_pix * pixel_scale, flux=1.0, gsparams=GSPARAMS
    )
    return project(round_profile, q, pa_deg)


def blobs(
    positions_pix: np.ndarray, sigmas_pix: np.ndarray, weights: np.ndarray, *, pixel_scale: float
) -> galsim.GSObject:
    """Unit-flux sum of round Gaussian blobs (knots, clumps, tails).

    Parameters
    ----------
    positions_pix : (K, 2) ndarray
        Blob centres (x, y) in pixels.
    sigmas_pix : (K,) ndarray
        Gaussian σ of each blob in pixels.
    weights : (K,) ndarray
        Relative fluxes (normalised to sum 1).
    """
    weights = np.asarray(weights, dtype=float) / np.sum(weights)
    parts = [
        galsim.Gaussian(sigma=s * pixel_scale, flux=w, gsparams=GSPARAMS).shift(
            x * pixel_scale, y * pixel_scale
        )
        for (x, y), s, w in zip(positions_pix, sigmas_pix, weights, strict=True)
    ]
    return galsim.Add(parts, gsparams=GSPARAMS)


def arm_pattern(
    *,
    r_e_pix: float,
    n_arms: int,
    pitch_deg: float,
    phase: float,
    r_start_pix: float,
    pixel_scale: float,
    sharpness: float = 6.0,
    oversample: int = 2,
) -> galsim.GSObject:
    """Face-on logarithmic spiral arms riding on an exponential disk, unit flux.

    The surface brightness is ``exp(-1.678 r / r_e) · (1 - exp(-(r/r_start)^3)) ·
    [(1 + cos(m (θ - ln(r) / tan p) - φ)) / 2]^s``: ``m`` arms of pitch angle ``p``
    whose crests pass through ``θ = (φ + 2πj) / m + ln(r) / tan p``, switched on
    beyond ``r_start``.
    """
    half = int(np.ceil(3.2 * r_e_pix * oversample))
    step = 1.0 / oversample
    y, x = (np.mgrid[-half : half + 1, -half : half + 1] * step).astype(np.float64)
    radius = np.hypot(x, y) + 1e-6
    theta = np.arctan2(y, x)
    winding = np.log(radius) / np.tan(np.radians(pitch_deg))
    crest = (0.5 * (1.0 + np.cos(n_arms * (theta - winding) - phase))) ** sharpness
    taper = 1.0 - np.exp(-((radius / r_start_pix) ** 3))
    light = np.exp(-1.678 * radius / r_e_pix) * taper * crest
    image = galsim.Image(light, scale=pixel_scale * step)
    return galsim.InterpolatedImage(image, flux=1.0, gsparams=GSPARAMS)


def projected_gaussian_shape(
    r_e_pix: float, q: float, pa_deg: float, outer_q: float, outer_pa_deg: float
) -> tuple[float, float, float]:
    """Major-axis r_e, q and PA of an elliptical Gaussian seen through a second projection.

    An elliptical Gaussian (Sérsic n = 0.5, e.g. a bar in the disk plane) stays an
    elliptical Gaussian under the disk's projection ``R(pa) diag(1, q)``; its new
    shape follows from the projected covariance ``M Σ Mᵀ``.
    """

    def rotation(angle_deg: float) -> np.ndarray:
        a = np.radians(angle_deg)
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    inner = rotation(pa_deg) @ np.diag([1.0, q**2]) @ rotation(pa_deg).T * r_e_pix**2
    outer = rotation(outer_pa_deg) @ np.diag([1.0, outer_q])
    cov = outer @ inner @ outer.T
    eigval, eigvec = np.linalg.eigh(cov)
    major = eigvec[:, 1]
    pa = float(np.degrees(np.arctan2(major[1], major[0])) % 180.0)
    return float(np.sqrt(eigval[1])), float(np.sqrt(eigval[0] / eigval[1])), pa
