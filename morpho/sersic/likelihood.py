"""The Sérsic head's probabilistic outputs: bounded Gaussians and a von Mises angle.

The network's raw outputs are turned into a posterior for five parameters:

- four Gaussians in transformed variables, their means bounded to physical ranges:
  ``ln(F / σ)`` (total flux over the image's noise σ), ``ln r_e`` (pixels, major
  axis), ``ln n`` and ``q``;
- the position angle θ through a von Mises distribution on ``2θ`` (period 180°),
  whose mean direction is a unit vector ``(cos 2θ, sin 2θ)`` and whose
  concentration κ plays the role of ``1/σ²``.

Or, with ``shape="ellipse"`` (:data:`SHAPE_LIKELIHOODS`), q and θ together through
one two-dimensional Gaussian of the ellipticity ``ε = (1 - q) / (1 + q) · (cos 2θ,
sin 2θ)``, with its own σ along the mean's direction (radial: q) and across it
(tangential: the angle). Shape measurement works in these components because they
are smooth through round galaxies, and because q and θ then share one term of the
loss: the angle cannot lose its share of the gradient to the other parameters. The
posterior still reports q's mean and σ and the angle's direction and κ, propagated
from the ellipticity's (``q`` from ``|ε|``, ``κ = (|ε| / σ_t)²``).

Training minimises the negative log-likelihood, with the β-NLL weighting of
Seitzer et al. (2022, ICLR) on the Gaussian terms so that the means keep
learning where the predicted σ is large. Uncertainties are calibrated
afterwards with one temperature per parameter (:func:`fit_temperatures`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GAUSSIAN_BOUNDS",
    "N_RAW_OUTPUTS",
    "PARAMETERS",
    "SHAPE_LIKELIHOODS",
    "SersicPosterior",
    "circular_sigma",
    "coverage",
    "decode",
    "fit_binned_temperatures",
    "fit_temperatures",
    "negative_log_likelihood",
    "raw_output_count",
    "z_scores",
]

#: Parameters in output order: four Gaussian ones, then the position angle.
PARAMETERS = ("flux", "r_e", "n", "q", "pa")

#: Ranges of the Gaussian means in their transformed variables:
#: ln(F/σ), ln(r_e / pixel), ln n, q.
GAUSSIAN_BOUNDS = (
    (0.0, math.log(1e6)),
    (math.log(0.3), math.log(64.0)),
    (math.log(0.2), math.log(10.0)),
    (0.02, 1.0),
)

#: Raw outputs the network must give: 4 means, 4 log-σ, 2 for the angle, 1 for κ.
N_RAW_OUTPUTS = 11

#: How q and the angle are modelled: apart (a Gaussian and a von Mises) or as one
#: Gaussian of the ellipticity components.
SHAPE_LIKELIHOODS = ("separate", "ellipse")

#: Largest |ε| of the ellipse likelihood: that of the smallest q of GAUSSIAN_BOUNDS.
_MAX_ELLIPTICITY = (1.0 - GAUSSIAN_BOUNDS[3][0]) / (1.0 + GAUSSIAN_BOUNDS[3][0])

_MAX_KAPPA = 1e5


def raw_output_count(shape: str = "separate") -> int:
    """Raw outputs the network must give for a shape likelihood: 11 (separate) or 10.

    Ellipse layout: 3 means (flux, r_e, n), their 3 log-σ, the ellipticity's 2
    components and its 2 log-σ (radial, tangential).
    """
    if shape not in SHAPE_LIKELIHOODS:
        raise ValueError(f"shape likelihood must be one of {SHAPE_LIKELIHOODS}, got {shape!r}")
    return N_RAW_OUTPUTS if shape == "separate" else 10


def axis_ratio(ellipticity: Tensor) -> Tensor:
    """q of ellipticity magnitudes ``|ε| = (1 - q) / (1 + q)``."""
    return (1.0 - ellipticity) / (1.0 + ellipticity)


def ellipticity(q: Tensor) -> Tensor:
    """``|ε| = (1 - q) / (1 + q)`` of axis ratios."""
    return (1.0 - q) / (1.0 + q)


@dataclass
class SersicPosterior:
    """Predicted distribution of the parameters of N galaxies.

    Attributes
    ----------
    mean : (N, 4) tensor
        Means of ``ln(F/σ)``, ``ln r_e``, ``ln n``, ``q``.
    sigma : (N, 4) tensor
        Their standard deviations (before any temperature).
    direction : (N, 2) tensor
        Unit vector ``(cos 2θ, sin 2θ)`` of the mean position angle.
    kappa : (N,) tensor
        Von Mises concentration of ``2θ``.
    ellipticity : (N, 2) tensor or None
        With the ellipse likelihood: the mean ellipticity components, from which q's
        mean, the direction and κ were derived.
    ellipticity_sigma : (N, 2) tensor or None
        Their σ along the mean's direction and across it.
    """

    mean: Tensor
    sigma: Tensor
    direction: Tensor
    kappa: Tensor
    ellipticity: Tensor | None = None
    ellipticity_sigma: Tensor | None = None

    @property
    def pa_deg(self) -> Tensor:
        """Mean position angle in degrees, in [0, 180)."""
        angle = torch.atan2(self.direction[:, 1], self.direction[:, 0])
        return torch.remainder(torch.rad2deg(angle) / 2, 180.0)


def decode(raw: Tensor, anchor: Tensor | None = None, shape: str = "separate") -> SersicPosterior:
    """Turn raw network outputs ``(N, raw_output_count(shape))`` into a :class:`SersicPosterior`.

    ``anchor`` (N, 4), optional: first guesses of the four Gaussian means in their
    transformed variables (NaN: none; the ellipse likelihood uses the first three).
    A raw output of 0 then decodes to the anchor (its logit within the bounds is
    added), so the network learns a correction to it.
    """
    count = raw_output_count(shape)
    if raw.ndim != 2 or raw.shape[1] != count:
        raise ValueError(
            f"expected raw outputs (N, {count}) for the {shape} shape likelihood, "
            f"got {tuple(raw.shape)}"
        )
    gaussians = 4 if shape == "separate" else 3
    bounds = torch.tensor(GAUSSIAN_BOUNDS[:gaussians], dtype=raw.dtype, device=raw.device)
    low, span = bounds[:, 0], bounds[:, 1] - bounds[:, 0]
    logits = raw[:, :gaussians]
    if anchor is not None:
        fraction = ((anchor[:, :gaussians].to(raw.dtype) - low) / span).clamp(0.01, 0.99)
        logits = logits + torch.logit(fraction).nan_to_num(0.0)
    mean = low + span * torch.sigmoid(logits)
    sigma = span * _sigma_fraction(raw[:, gaussians : 2 * gaussians])
    if shape == "ellipse":
        return _ellipse_posterior(mean, sigma, raw[:, 6:8], raw[:, 8:10])
    direction = F.normalize(raw[:, 8:10], dim=1, eps=1e-6)
    kappa = (F.softplus(raw[:, 10] + 2.0) + 1e-3).clamp(max=_MAX_KAPPA)
    return SersicPosterior(mean=mean, sigma=sigma, direction=direction, kappa=kappa)


def _sigma_fraction(raw: Tensor) -> Tensor:
    """σ as a fraction of its range, from 1e-5 to 0.5, starting near 5%."""
    return torch.exp(-3.0 + 0.5 * raw.clamp(-17.0, 9.0)).clamp(1e-5, 0.5)


def _ellipse_posterior(
    mean: Tensor, sigma: Tensor, raw_components: Tensor, raw_sigma: Tensor
) -> SersicPosterior:
    """The posterior of the ellipse likelihood, with q and the angle derived from ε.

    ``ε = ε_max tanh(|v|) v / |v|`` keeps ``|ε|`` below that of the smallest q and
    is smooth through ``v = 0`` (round).
    """
    length = raw_components.norm(dim=1, keepdim=True).clamp(min=1e-6)  # tanh(x)/x -> 1
    components = _MAX_ELLIPTICITY * torch.tanh(length) / length * raw_components
    magnitude = components.norm(dim=1)
    # σ of the ellipticity, in units of the components' range (0 to 1).
    e_sigma = _sigma_fraction(raw_sigma)
    q = axis_ratio(magnitude)
    q_sigma = e_sigma[:, 0] * 2.0 / (1.0 + magnitude) ** 2
    kappa = ((magnitude / e_sigma[:, 1]) ** 2).clamp(1e-3, _MAX_KAPPA)
    return SersicPosterior(
        mean=torch.cat([mean, q[:, None]], dim=1),
        sigma=torch.cat([sigma, q_sigma[:, None]], dim=1),
        direction=F.normalize(components, dim=1, eps=1e-12),
        kappa=kappa,
        ellipticity=components,
        ellipticity_sigma=e_sigma,
    )


def _log_i0(kappa: Tensor) -> Tensor:
    """ln I0(κ), stable for large κ."""
    return torch.log(torch.special.i0e(kappa)) + kappa


def negative_log_likelihood(
    posterior: SersicPosterior,
    targets: Tensor,
    pa_deg: Tensor,
    *,
    beta: float = 0.5,
    pa_weight: float = 1.0,
) -> Tensor:
    """Per-galaxy negative log-likelihood, (N,).

    Parameters
    ----------
    posterior : SersicPosterior
    targets : (N, 4) tensor
        True ``ln(F/σ)``, ``ln r_e``, ``ln n``, ``q``.
    pa_deg : (N,) tensor
        True position angles in degrees (any period-180° representative).
    beta : float, default 0.5
        β-NLL exponent: each Gaussian term is weighted by ``σ^{2β}`` (not
        differentiated); 0 gives the plain negative log-likelihood.
    pa_weight : float, default 1.0
        Weight of the position angle's von Mises term (not β-weighted), or with the
        ellipse likelihood of its tangential half: above 1 the training gives the
        angle more of the network's attention than its likelihood share; 1 is the
        plain likelihood.
    """
    two_theta = torch.deg2rad(2 * pa_deg)
    unit = torch.stack([two_theta.cos(), two_theta.sin()], 1)
    ellipse = posterior.ellipticity is not None
    n = 3 if ellipse else 4  # with the ellipse, q is in the shape's term
    mean, sigma = posterior.mean[:, :n], posterior.sigma[:, :n]
    gaussian = _gaussian_terms(mean, sigma, targets[:, :n])
    if beta:
        gaussian = gaussian * sigma.detach() ** (2 * beta)
    if ellipse:
        true_components = ellipticity(targets[:, 3])[:, None] * unit
        return gaussian.sum(dim=1) + _ellipse_term(posterior, true_components, beta, pa_weight)
    cos_delta = (posterior.direction * unit).sum(1)
    kappa = posterior.kappa
    von_mises = -kappa * cos_delta + _log_i0(kappa) + math.log(2 * math.pi)
    return gaussian.sum(dim=1) + pa_weight * von_mises


def _gaussian_terms(mean: Tensor, sigma: Tensor, targets: Tensor) -> Tensor:
    z = (targets - mean) / sigma
    return 0.5 * z**2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)


def _ellipse_term(
    posterior: SersicPosterior, true_components: Tensor, beta: float, pa_weight: float
) -> Tensor:
    """(N,) negative log-density of the true ellipticity under the 2-D Gaussian.

    β-weighted by ``(σ_r σ_t)^β``, the 2-D analogue of ``σ^{2β}``.
    """
    radial = posterior.direction
    tangential = torch.stack([-radial[:, 1], radial[:, 0]], dim=1)
    residual = true_components - posterior.ellipticity
    sigma = posterior.ellipticity_sigma
    along = _gaussian_terms(0.0, sigma[:, 0], (residual * radial).sum(1))
    across = _gaussian_terms(0.0, sigma[:, 1], (residual * tangential).sum(1))
    term = along + pa_weight * across
    if beta:
        term = term * (sigma[:, 0] * sigma[:, 1]).detach() ** beta
    return term


def circular_sigma(kappa: Tensor) -> Tensor:
    """Circular standard deviation (radians) of a von Mises of concentration κ.

    ``sqrt(-2 ln(I1(κ)/I0(κ)))`` (Mardia & Jupp 2000, §2.3.4); tends to ``1/sqrt(κ)``.
    """
    ratio = torch.special.i1e(kappa) / torch.special.i0e(kappa)
    return torch.sqrt(-2 * torch.log(ratio.clamp(1e-12, 1.0 - 1e-12)))


def _angle_error_rad(pa_deg: Tensor, true_pa_deg: Tensor) -> Tensor:
    """Signed difference of ``2θ`` in radians, wrapped to (-π, π]."""
    delta = torch.deg2rad(2 * (pa_deg - true_pa_deg))
    return torch.atan2(torch.sin(delta), torch.cos(delta))


def z_scores(posterior: SersicPosterior, targets: Tensor, pa_deg: Tensor) -> Tensor:
    """Standardised errors of the five parameters, (N, 5), before any temperature.

    The angle's error is that of ``2θ`` over its circular standard deviation.
    """
    gaussian = (targets - posterior.mean) / posterior.sigma
    angle = _angle_error_rad(posterior.pa_deg, pa_deg) / circular_sigma(posterior.kappa)
    return torch.cat([gaussian, angle[:, None]], dim=1)


def coverage(z: Tensor, *, level: float) -> Tensor:
    """Fraction of |z| inside the central ``level`` interval of a unit Gaussian, per column."""
    half_width = math.sqrt(2) * torch.special.erfinv(torch.tensor(level, dtype=z.dtype))
    return (z.abs() <= half_width).to(z.dtype).mean(dim=0)


def fit_temperatures(z: Tensor, *, levels: tuple[float, ...] = (0.68, 0.95)) -> Tensor:
    """One σ multiplier per parameter so that the intervals hold what they claim.

    For each column of ``z`` (standardised validation errors), the temperature
    ``T`` minimises the squared misses of the coverage of ``|z| / T`` at the
    given levels, searched on a log grid from 0.2 to 20. Dividing ``z`` by the
    result is what the calibrated model reports.

    Parameters
    ----------
    z : (N, P) tensor
        Standardised errors on the validation split (finite).
    levels : tuple of float
        Interval probabilities to match.

    Returns
    -------
    (P,) tensor
        Temperatures.
    """
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"need (N, P) z-scores with N > 0, got shape {tuple(z.shape)}")
    grid = torch.logspace(math.log10(0.2), math.log10(20.0), 801, dtype=z.dtype)
    misses = torch.zeros(len(grid), z.shape[1], dtype=z.dtype)
    for level in levels:
        half_width = math.sqrt(2) * torch.special.erfinv(torch.tensor(level, dtype=z.dtype))
        inside = (z.abs()[None] <= half_width * grid[:, None, None]).to(z.dtype).mean(dim=1)
        misses += (inside - level) ** 2
    return grid[misses.argmin(dim=0)]


def fit_binned_temperatures(
    z: Tensor, key: Tensor, *, n_bins: int, min_count: int = 200
) -> tuple[Tensor, Tensor]:
    """Temperatures per bin of a signal-to-noise ``key``: faint and bright galaxies apart.

    A single temperature leaves the intervals too wide at high S/N and too narrow
    at low S/N when the network's σ does not scale exactly with the noise; one per
    quantile bin of ``key`` (e.g. the stamp's summed S/N) fixes both.

    Parameters
    ----------
    z : (N, P) tensor
        Standardised validation errors.
    key : (N,) tensor
        What to bin on.
    n_bins : int
        Quantile bins of ``key``.
    min_count : int
        A bin with fewer galaxies takes the temperatures fitted on all of them.

    Returns
    -------
    edges : (n_bins - 1,) tensor
        Inner bin edges (use with :func:`torch.bucketize`).
    temperatures : (n_bins, P) tensor
    """
    everyone = fit_temperatures(z)
    quantiles = torch.linspace(0, 1, n_bins + 1, dtype=key.dtype)[1:-1]
    edges = torch.quantile(key, quantiles) if n_bins > 1 else key.new_zeros(0)
    bins = torch.bucketize(key, edges)
    rows = [
        fit_temperatures(z[bins == b]) if (bins == b).sum() >= min_count else everyone
        for b in range(n_bins)
    ]
    return edges, torch.stack(rows)
