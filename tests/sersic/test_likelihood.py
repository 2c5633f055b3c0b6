"""The Sérsic posterior: bounds, likelihood against torch.distributions, calibration."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, VonMises

from morpho.sersic.likelihood import (
    GAUSSIAN_BOUNDS,
    circular_sigma,
    coverage,
    decode,
    fit_binned_temperatures,
    fit_temperatures,
    negative_log_likelihood,
    z_scores,
)


def _raw(n: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    return scale * torch.randn(
        n, 11, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def test_means_stay_inside_the_physical_ranges():
    posterior = decode(_raw(1000, scale=50.0))
    bounds = torch.tensor(GAUSSIAN_BOUNDS, dtype=torch.float64)
    assert (posterior.mean >= bounds[:, 0]).all()
    assert (posterior.mean <= bounds[:, 1]).all()
    assert (posterior.sigma > 0).all()
    assert (posterior.kappa > 0).all()
    assert torch.allclose(posterior.direction.norm(dim=1), torch.ones(1000, dtype=torch.float64))
    assert ((posterior.pa_deg >= 0) & (posterior.pa_deg < 180)).all()


def _draw(n: int, seed: int):
    """A decoded posterior, truths drawn from its Gaussians and uniform angles."""
    posterior = decode(_raw(n, seed=seed))
    generator = torch.Generator().manual_seed(seed + 1)
    targets = posterior.mean + posterior.sigma * torch.randn(
        n, 4, generator=generator, dtype=torch.float64
    )
    pa = 180 * torch.rand(n, generator=generator, dtype=torch.float64)
    return posterior, targets, pa


def _angle_nll(posterior, pa):
    """The von Mises negative log-likelihood of ``2·pa``, by torch.distributions."""
    loc = 2 * torch.deg2rad(posterior.pa_deg)
    return -VonMises(loc, posterior.kappa).log_prob(torch.deg2rad(2 * pa) - 2 * math.pi)


def test_negative_log_likelihood_matches_torch_distributions():
    posterior, targets, pa = _draw(64, seed=0)
    expected = -Normal(posterior.mean, posterior.sigma).log_prob(targets).sum(1)
    expected = expected + _angle_nll(posterior, pa)
    got = negative_log_likelihood(posterior, targets, pa, beta=0.0)
    # torch evaluates log I0 by a polynomial approximation (about 1e-7 relative)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_pa_weight_scales_the_angle_term_only():
    posterior, targets, pa = _draw(32, seed=3)
    plain = negative_log_likelihood(posterior, targets, pa, beta=0.5)
    weighted = negative_log_likelihood(posterior, targets, pa, beta=0.5, pa_weight=3.0)
    assert torch.allclose(weighted - plain, 2.0 * _angle_nll(posterior, pa), rtol=1e-6, atol=1e-6)


def test_circular_sigma_tends_to_one_over_root_kappa_and_matches_samples():
    big = torch.tensor([1e4], dtype=torch.float64)
    assert torch.allclose(circular_sigma(big), big.rsqrt(), rtol=1e-3)
    kappa = torch.tensor(3.0, dtype=torch.float64)
    samples = VonMises(torch.tensor(0.0, dtype=torch.float64), kappa).sample((200_000,))
    resultant = torch.cos(samples).mean()  # E[cos] = I1/I0 for a von Mises
    assert abs(math.sqrt(-2 * math.log(resultant)) - circular_sigma(kappa).item()) < 0.01


def test_temperatures_recover_a_known_overconfidence():
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(20_000, 3, generator=generator, dtype=torch.float64) * torch.tensor(
        [0.5, 1.0, 2.0]
    )
    temperature = fit_temperatures(z)
    assert torch.allclose(
        temperature, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), rtol=0.03
    )
    calibrated = z / temperature
    assert torch.allclose(
        coverage(calibrated, level=0.68), torch.full((3,), 0.68, dtype=torch.float64), atol=0.01
    )
    assert torch.allclose(
        coverage(calibrated, level=0.95), torch.full((3,), 0.95, dtype=torch.float64), atol=0.01
    )


def test_binned_temperatures_follow_each_bin():
    generator = torch.Generator().manual_seed(3)
    key = torch.rand(40_000, generator=generator, dtype=torch.float64)
    scale = torch.where(key < 0.5, 0.5, 2.0)[:, None]  # overconfident at one end only
    z = torch.randn(40_000, 2, generator=generator, dtype=torch.float64) * scale
    edges, temperatures = fit_binned_temperatures(z, key, n_bins=4)
    assert torch.allclose(edges, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), atol=0.01)
    expected = torch.tensor([[0.5, 0.5], [0.5, 0.5], [2.0, 2.0], [2.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(temperatures, expected, rtol=0.05)
    few = fit_binned_temperatures(z[:300], key[:300], n_bins=4)[1]
    assert torch.allclose(few, fit_temperatures(z[:300]).expand(4, 2))  # too few per bin


def test_angle_errors_wrap_at_180_degrees():
    posterior = decode(_raw(1))
    true_pa = posterior.pa_deg + 180.0  # the same orientation
    z = z_scores(posterior, posterior.mean, true_pa)
    assert torch.allclose(z, torch.zeros_like(z), atol=1e-6)


def test_raw_outputs_of_zero_decode_to_the_anchor():
    anchor = torch.tensor([[5.0, math.nan, math.nan, math.nan], [12.0, 1.0, 0.5, 0.3]])
    posterior = decode(torch.zeros(2, 11), anchor)
    bounds = torch.tensor(GAUSSIAN_BOUNDS)
    middle = (bounds[:, 0] + bounds[:, 1]) / 2
    torch.testing.assert_close(posterior.mean[0, 0], torch.tensor(5.0))
    torch.testing.assert_close(posterior.mean[0, 1:], middle[1:])  # NaN: no guess
    torch.testing.assert_close(posterior.mean[1], anchor[1])
    # The network's output moves the mean from there, within the bounds.
    moved = decode(torch.full((2, 11), 40.0), anchor)
    torch.testing.assert_close(moved.mean[:, 0], bounds[0, 1].expand(2))


def _ellipse_raw(n: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 10, generator=generator, dtype=torch.float64)


def test_ellipse_posterior_derives_q_and_the_angle_from_the_ellipticity():
    posterior = decode(_ellipse_raw(1000, scale=20.0), shape="ellipse")
    e = posterior.ellipticity
    magnitude = e.norm(dim=1)
    assert (magnitude < 1).all()
    torch.testing.assert_close(posterior.mean[:, 3], (1 - magnitude) / (1 + magnitude))
    assert (posterior.mean[:, 3] >= GAUSSIAN_BOUNDS[3][0] - 1e-12).all()
    assert (posterior.mean[:, 3] <= 1).all()
    expected_pa = torch.remainder(torch.rad2deg(torch.atan2(e[:, 1], e[:, 0])) / 2, 180)
    difference = torch.remainder(posterior.pa_deg - expected_pa + 90, 180) - 90
    assert difference.abs().max() < 1e-9
    # Round: components of zero give q = 1 exactly, and a finite loss and gradient.
    raw = torch.zeros(2, 10, dtype=torch.float64, requires_grad=True)
    round_posterior = decode(raw, shape="ellipse")
    assert torch.equal(round_posterior.mean[:, 3], torch.ones(2, dtype=torch.float64))
    targets = torch.tensor([[5.0, 1.0, 0.5, 0.7]] * 2, dtype=torch.float64)
    loss = negative_log_likelihood(round_posterior, targets, torch.tensor([10.0, 100.0])).sum()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(raw.grad).all()


def test_ellipse_likelihood_is_the_two_dimensional_gaussian_density():
    posterior = decode(_ellipse_raw(64, seed=1), shape="ellipse")
    generator = torch.Generator().manual_seed(2)
    q = 0.1 + 0.9 * torch.rand(64, generator=generator, dtype=torch.float64)
    pa = 180 * torch.rand(64, generator=generator, dtype=torch.float64)
    others = posterior.mean[:, :3] + posterior.sigma[:, :3] * torch.randn(
        64, 3, generator=generator, dtype=torch.float64
    )
    targets = torch.cat([others, q[:, None]], dim=1)
    # The true ellipticity under a Gaussian whose axes are along and across the mean's.
    two_theta = torch.deg2rad(2 * pa)
    true_e = ((1 - q) / (1 + q))[:, None] * torch.stack([two_theta.cos(), two_theta.sin()], 1)
    u = posterior.direction
    rotation = torch.stack([u, torch.stack([-u[:, 1], u[:, 0]], 1)], dim=2)  # columns: axes
    covariance = rotation @ torch.diag_embed(posterior.ellipticity_sigma**2) @ rotation.mT
    shape_nll = -MultivariateNormal(posterior.ellipticity, covariance).log_prob(true_e)
    expected = -Normal(posterior.mean[:, :3], posterior.sigma[:, :3]).log_prob(others).sum(1)
    got = negative_log_likelihood(posterior, targets, pa, beta=0.0)
    torch.testing.assert_close(got, expected + shape_nll)
    # β weights the shape term by (σ_r σ_t)^β.
    weighted = negative_log_likelihood(posterior, targets, pa, beta=0.5)
    weights = posterior.sigma[:, :3] ** 1.0
    gaussian = -Normal(posterior.mean[:, :3], posterior.sigma[:, :3]).log_prob(others)
    sigma = posterior.ellipticity_sigma
    torch.testing.assert_close(
        weighted, (gaussian * weights).sum(1) + shape_nll * (sigma[:, 0] * sigma[:, 1]) ** 0.5
    )


def test_ellipse_uncertainties_are_propagated_to_q_and_the_angle():
    posterior = decode(_ellipse_raw(200, seed=4), shape="ellipse")
    magnitude = posterior.ellipticity.norm(dim=1)
    sigma_radial, sigma_tangential = posterior.ellipticity_sigma.unbind(1)
    # |dq/d|ε||, by a central difference of q = (1 - |ε|) / (1 + |ε|); an angle step of
    # 2θ moves ε by |ε| per radian.
    h = 1e-6
    slope = ((1 - magnitude + h) / (1 + magnitude - h)) - (1 - magnitude - h) / (1 + magnitude + h)
    torch.testing.assert_close(posterior.sigma[:, 3], sigma_radial * slope / (2 * h))
    wide = magnitude / sigma_tangential < 300  # κ inside its clamp
    torch.testing.assert_close(
        posterior.kappa[wide], (magnitude[wide] / sigma_tangential[wide]) ** 2
    )


def test_a_raw_output_count_that_does_not_fit_the_shape_likelihood_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, 10\) for the ellipse shape likelihood"):
        decode(torch.zeros(3, 11), shape="ellipse")
    with pytest.raises(ValueError, match="shape likelihood must be one of"):
        decode(torch.zeros(3, 11), shape="elliptic")
