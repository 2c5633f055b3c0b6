"""The classical baseline: a weighted least-squares fit of one PSF-convolved Sérsic profile.

The model image is :class:`~morpho.sersic.profile.SersicRenderer` (sub-pixel grid,
refined centre, FFT convolution with the effective PSF); the fit minimises
``Σ ((d - m) / σ)²`` with ``scipy.optimize.least_squares`` (trust-region reflective,
box bounds) over the internal parameters

.. math::

    z = (\\ln F,\\; x_0,\\; y_0,\\; \\ln r_e,\\; \\ln n,\\; η_1,\\; η_2), \\qquad
    (η_1, η_2) = t\\,(\\cos 2φ, \\sin 2φ), \\qquad
    q = \\exp(-L \\tanh(t / L)), \\; L = \\ln(1 / q_{\\min}),

which are well conditioned: logarithms for the scale parameters, and ellipse
components for the shape, smooth through round (no PA degeneracy, no ``q > 1``
ambiguity) and with ``q > q_min`` built in. The fit is started from the image's
adaptive moments and the best of a few trial indices, and reported in the
parameters of :data:`~morpho.sersic.profile.PARAMETER_NAMES` with 1σ errors from
the Jacobian at the solution.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch
from scipy.optimize import least_squares

from morpho.data.canonical import border_noise_sigma
from morpho.data.errors import DataError
from morpho.sersic.params import FitBounds, SersicParametrisation
from morpho.sersic.profile import PARAMETER_NAMES, SersicRenderer
from morpho.sersic.start import (
    RADIUS_PER_SIGMA,
    adaptive_moments,
    detection_snr,
    moment_shape,
)

__all__ = ["NoiseLike", "SersicFit", "fit_sersic"]

#: Smoothed-peak S/N below which a stamp is taken to hold no source (no false
#: detection in 500 pure-noise 64² stamps, whose highest peak was 4.7σ).
DETECTION_SNR = 5.0
#: Finite-difference step of the shape parameters (internal units).
FD_STEP = 1e-6


class NoiseLike(Protocol):
    """A CCD noise model, as :class:`morpho.data.simulate.NoiseModel` (ADU²)."""

    @property
    def background_variance(self) -> float:
        """Variance of a pixel holding only sky."""

    def variance(self, noiseless: np.ndarray) -> np.ndarray:
        """Per-pixel variance of the noisy image of ``noiseless``."""


@dataclass(frozen=True)
class SersicFit:
    """Result of :func:`fit_sersic`: best-fit parameters, 1σ errors and diagnostics.

    Attributes
    ----------
    flux, x0, y0, r_e, n, q, pa_deg : float
        Best fit (units of :data:`~morpho.sersic.profile.PARAMETER_NAMES`: image units,
        pixels, pixels, pixels, -, -, degrees in [0, 180)).
    flux_err, x0_err, y0_err, r_e_err, n_err, q_err, pa_deg_err : float
        1σ errors from the covariance ``(JᵀJ)⁻¹ χ²_red`` at the solution.
    chi2_reduced : float
        ``Σ ((d - m) / σ)² / (N_pixels - 7)``.
    success : bool
        Whether the optimiser reported convergence.
    at_bound : tuple of str
        Parameters stuck at a bound (``"q"`` when ``q < 1.2 q_min``).
    n_evaluations : int
        Model images rendered (residuals and finite-difference columns).
    seconds : float
        Wall time of the whole fit.
    message : str
        The optimiser's message.
    """

    flux: float
    x0: float
    y0: float
    r_e: float
    n: float
    q: float
    pa_deg: float
    flux_err: float
    x0_err: float
    y0_err: float
    r_e_err: float
    n_err: float
    q_err: float
    pa_deg_err: float
    chi2_reduced: float
    success: bool
    at_bound: tuple[str, ...]
    n_evaluations: int
    seconds: float
    message: str = ""

    @property
    def params(self) -> np.ndarray:
        """(7,) best-fit parameters in :data:`PARAMETER_NAMES` order."""
        return np.array([getattr(self, name) for name in PARAMETER_NAMES])

    @property
    def errors(self) -> np.ndarray:
        """(7,) 1σ errors in :data:`PARAMETER_NAMES` order."""
        return np.array([getattr(self, f"{name}_err") for name in PARAMETER_NAMES])

    def to_dict(self) -> dict[str, object]:
        """The fields as a plain dict (one catalog row)."""
        return asdict(self)


class _Problem:
    """Whitened residuals ``(d - m) / σ`` and their Jacobian in the internal parameters."""

    def __init__(
        self,
        renderer: SersicRenderer,
        data: np.ndarray,
        sigma: np.ndarray,
        parametrisation: SersicParametrisation,
    ) -> None:
        self.renderer, self.data, self.inv_sigma = renderer, data, 1.0 / sigma
        self.parametrisation = parametrisation
        self.evaluations = 0
        self._cache: tuple[bytes, tuple[np.ndarray, ...]] | None = None

    def _render(self, z: np.ndarray) -> np.ndarray:
        self.evaluations += 1
        return self.renderer(self.parametrisation.physical(z))

    def model(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """Model image and its derivatives along x0 and y0 (cached for the Jacobian)."""
        key = np.asarray(z, dtype=np.float64).tobytes()
        if self._cache is None or self._cache[0] != key:
            self.evaluations += 1
            rendered = self.renderer.with_centre_gradient(self.parametrisation.physical(z))
            self._cache = (key, rendered)
        return self._cache[1]

    def residuals(self, z: np.ndarray) -> np.ndarray:
        return ((self.data - self.model(z)[0]) * self.inv_sigma).ravel()

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        """``∂r/∂z``: exact for ln F and the centre, forward differences for the shape."""
        image, d_dx0, d_dy0 = self.model(z)
        columns = [image, d_dx0, d_dy0]
        for index in range(3, 7):
            step = FD_STEP if z[index] + FD_STEP <= self.parametrisation.upper[index] else -FD_STEP
            shifted = np.array(z, dtype=np.float64)
            shifted[index] += step
            columns.append((self._render(shifted) - image) / step)
        return -np.stack([(c * self.inv_sigma).ravel() for c in columns], axis=1)


def _check_image(image: np.ndarray, origin: str) -> np.ndarray:
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2 or min(data.shape) < 9:
        raise DataError(
            f"{origin}: image has shape {np.shape(image)}, expected a 2-D (H, W) stamp of at "
            "least 9×9 pixels; pass one band of one galaxy"
        )
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise DataError(
            f"{origin}: image holds {bad} NaN or infinite pixels; fill or mask them before "
            "fitting (e.g. morpho.data.dataset.fill_non_finite)"
        )
    return data


def _background_sigma(
    data: np.ndarray, noise_sigma: float | None, noise: NoiseLike | None, origin: str
) -> float:
    """Noise σ of a sky pixel: given, from the noise model, or from the border pixels."""
    if noise_sigma is not None and noise is not None:
        raise ValueError("pass noise_sigma or noise, not both")
    if noise_sigma is not None:
        if not (np.isfinite(noise_sigma) and noise_sigma > 0):
            raise ValueError(f"noise_sigma must be a positive number, got {noise_sigma}")
        return float(noise_sigma)
    if noise is not None:
        variance = noise.background_variance
        if not variance > 0:
            raise ValueError("the noise model has no background variance; pass noise_sigma")
        return float(np.sqrt(variance))
    sigma = float(border_noise_sigma(torch.from_numpy(data)[None, None])[0, 0])
    if not sigma > 0:
        raise DataError(
            f"{origin}: the border pixels have no scatter, so the noise level cannot be "
            "estimated; pass noise_sigma (or noise)"
        )
    return sigma


def _start(
    data: np.ndarray,
    renderer: SersicRenderer,
    sigma: np.ndarray,
    parametrisation: SersicParametrisation,
    peak: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Internal starting parameters and renders spent.

    Centre, axis ratio and PA from adaptive moments (PSF moments subtracted); for
    each trial index n of :data:`RADIUS_PER_SIGMA`, r_e from the moments and the
    linear best flux; the trial of least χ² wins.
    """
    centre, moments = adaptive_moments(data, centre=peak, sigma=3.0)
    psf = renderer.psf
    psf_centre = np.full(2, (psf.shape[0] - 1) / 2.0)
    _, psf_moments = adaptive_moments(psf, centre=psf_centre, sigma=2.0)
    sigma_major, q, pa_deg = moment_shape(moments, psf_moments)
    weight = sigma**-2.0
    best = (np.inf, None)
    for n, radius_per_sigma in RADIUS_PER_SIGMA.items():
        r_e = radius_per_sigma * sigma_major
        z = parametrisation.internal((1.0, *centre, r_e, n, q, pa_deg), clip=True)
        unit = renderer(parametrisation.physical(z))
        flux = max(np.sum(weight * data * unit) / np.sum(weight * unit**2), 1e-12)
        chi2 = np.sum(weight * (data - flux * unit) ** 2)
        if chi2 < best[0]:
            z[0] = np.log(flux)
            best = (chi2, z)
    return best[1], len(RADIUS_PER_SIGMA)


def _solve(problem: _Problem, start: np.ndarray):
    """Trust-region reflective least squares from ``start`` (internal parameters)."""
    return least_squares(
        problem.residuals,
        start,
        jac=problem.jacobian,
        bounds=(problem.parametrisation.lower, problem.parametrisation.upper),
        method="trf",
        x_scale="jac",
        ftol=1e-7,
        xtol=1e-7,
        gtol=1e-8,
        max_nfev=200,
    )


def _covariance(jacobian: np.ndarray, chi2_reduced: float) -> np.ndarray:
    """``(JᵀJ)⁻¹ χ²_red`` by SVD, dropping singular directions (as ``curve_fit`` does)."""
    _, singular, vt = np.linalg.svd(jacobian, full_matrices=False)
    keep = singular > np.finfo(float).eps * max(jacobian.shape) * singular[0]
    vt = vt[keep] / singular[keep, None]
    return vt.T @ vt * chi2_reduced


def fit_sersic(
    image: np.ndarray,
    psf: np.ndarray,
    *,
    noise_sigma: float | None = None,
    noise: NoiseLike | None = None,
    oversample: int = 3,
    bounds: FitBounds | None = None,
    origin: str = "image",
) -> SersicFit:
    """Fit one PSF-convolved Sérsic profile to a galaxy image.

    Parameters
    ----------
    image : (H, W) array
        Sky-subtracted image (ADU or any linear unit), the galaxy on the stamp.
    psf : (P, P) or (1, P, P) array
        Effective PSF of the image (pixel response included), P odd, summing to 1.
    noise_sigma : float, optional
        Constant noise σ per pixel (image units).
    noise : NoiseLike, optional
        CCD noise model (``sky_level`` ADU, ``read_noise`` e-, ``gain`` e-/ADU) of a
        sky-subtracted image in ADU. The fit then runs twice: weighted first by the
        background variance ``b/g + r²/g²``, then by the variance of the first
        fit's model, ``(max(m, 0) + b)/g + r²/g²``. The data never set the weights
        (weights from the data correlate with its noise and bias fluxes low).
    oversample : int
        Sub-pixel grid points per pixel of the model (>= 3 recommended).
    bounds : FitBounds, optional
        Limits of r_e, n and q (default :class:`FitBounds`); the centre stays on
        the stamp and the flux positive.
    origin : str
        Name of the image (file, dataset, id) used in error messages.

    Returns
    -------
    SersicFit
        Best fit, 1σ errors from ``(JᵀJ)⁻¹ χ²_red`` (J the Jacobian of the whitened
        residuals at the solution; the ``χ²_red`` factor, as in ``curve_fit``'s
        default, inflates errors when the model or the noise level is off) and
        diagnostics. With neither ``noise_sigma`` nor ``noise`` the noise σ is
        estimated from the border pixels (1.4826 × MAD).

    Raises
    ------
    DataError
        If the image is not 2-D or holds NaN/inf, holds no source above the noise
        (brightest peak of the image smoothed at 1.5, 3 and 6 pixels below 5σ, see
        :func:`~morpho.sersic.start.detection_snr`), or the PSF is invalid; the
        message names ``origin``.
    ValueError
        If both ``noise_sigma`` and ``noise`` are given, or either is invalid.
    """
    started = time.perf_counter()
    data = _check_image(image, origin)
    renderer = SersicRenderer(psf, data.shape, oversample=oversample, origin=f"{origin} PSF")
    sigma_bg = _background_sigma(data, noise_sigma, noise, origin)
    snr, peak = detection_snr(data, sigma_bg)
    if snr < DETECTION_SNR:
        raise DataError(
            f"{origin}: no source above the noise (all sky?): the brightest smoothed peak is "
            f"{snr:.1f}σ, below {DETECTION_SNR:g}σ (σ = {sigma_bg:.3g}); check the cutout "
            "and the noise level"
        )
    parametrisation = SersicParametrisation(bounds or FitBounds(), data.shape)
    sigma = np.full(data.shape, sigma_bg)
    z, evaluations = _start(data, renderer, sigma, parametrisation, peak)
    problem = _Problem(renderer, data, sigma, parametrisation)
    result = _solve(problem, z)
    if noise is not None:
        evaluations += problem.evaluations
        sigma = np.sqrt(noise.variance(problem.model(result.x)[0]))
        problem = _Problem(renderer, data, sigma, parametrisation)
        result = _solve(problem, result.x)
    return _summary(result, parametrisation, evaluations + problem.evaluations, started)


def _summary(result, parametrisation: SersicParametrisation, evaluations: int, started: float):
    """The :class:`SersicFit` of a ``least_squares`` result in internal parameters."""
    dof = max(result.fun.size - len(PARAMETER_NAMES), 1)
    chi2_reduced = float(np.sum(result.fun**2) / dof)
    covariance = parametrisation.propagate(result.x, _covariance(result.jac, chi2_reduced))
    params = parametrisation.physical(result.x)
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    return SersicFit(
        **dict(zip(PARAMETER_NAMES, map(float, params), strict=True)),
        **{f"{k}_err": float(e) for k, e in zip(PARAMETER_NAMES, errors, strict=True)},
        chi2_reduced=chi2_reduced,
        success=bool(result.success),
        at_bound=parametrisation.at_bound(result.x, result.active_mask),
        n_evaluations=int(evaluations),
        seconds=time.perf_counter() - started,
        message=str(result.message),
    )
