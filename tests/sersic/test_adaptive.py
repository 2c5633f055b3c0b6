"""Adaptive-moment scalars: known answers for Gaussians, the NumPy reference, the inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morpho.data.canonical import adaptive_moments as batch_adaptive_moments
from morpho.sersic.adaptive import N_ADAPTIVE_FEATURES, adaptive_features
from morpho.sersic.inputs import N_FEATURES, SersicInputs
from morpho.sersic.start import adaptive_moments
from tests.sersic.test_growth import _gaussian


@pytest.mark.parametrize(
    ("sigma_x", "sigma_y", "pa_deg"), [(3.0, 3.0, 0.0), (4.5, 2.0, 30.0), (6.0, 1.5, 117.0)]
)
def test_an_elliptical_gaussian_gives_its_own_covariance(sigma_x, sigma_y, pa_deg):
    # The matched weight of a Gaussian is the Gaussian: the moments are half its covariance.
    image = _gaussian(sigma_x, sigma_y, pa_deg)
    _, moments, _ = batch_adaptive_moments(image, iterations=30, initial_sigma=3.0)
    theta = math.radians(pa_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    expected = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T / 2
    mxx, mxy, myy = moments[0, 0, 0].item(), moments[0, 0, 1].item(), moments[0, 1, 1].item()
    want = [expected[0, 0], expected[0, 1], expected[1, 1]]
    np.testing.assert_allclose([mxx, mxy, myy], want, atol=2e-3)


def test_the_batch_matches_the_numpy_moments_of_the_classical_start():
    rng = np.random.default_rng(3)
    images = torch.stack(
        [_gaussian(4.0, 2.5, 40.0)[0], _gaussian(2.0, 2.0)[0], _gaussian(7.0, 3.0, 160.0)[0]]
    )
    images = images * 30 + torch.from_numpy(rng.normal(size=images.shape))
    centre, moments, _ = batch_adaptive_moments(images, iterations=12, initial_sigma=3.0)
    for image, mu, got in zip(images.numpy(), centre.numpy(), moments.numpy(), strict=True):
        ref_mu, ref = adaptive_moments(image, centre=np.array([31.5, 31.5]), sigma=3.0)
        np.testing.assert_allclose(mu, ref_mu - 31.5, atol=1e-6)
        np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_the_features_give_the_axis_ratio_and_angle_through_a_gaussian_psf():
    # A Gaussian galaxy (σ 4 × 2, PA 30°) seen through a round Gaussian PSF of σ 1.5: the
    # observed covariance is their sum, and the PSF-corrected axis ratio is the galaxy's 0.5.
    psf_sigma = 1.5
    image = _gaussian(math.hypot(4.0, psf_sigma), math.hypot(2.0, psf_sigma), 30.0)
    fwhm = torch.tensor([psf_sigma * 2 * math.sqrt(2 * math.log(2))], dtype=torch.float64)
    e1, e2, q, log_size = adaptive_features(image, fwhm, iterations=30, window=64)[0].tolist()
    assert math.degrees(0.5 * math.atan2(e2, e1)) == pytest.approx(30.0, abs=0.05)
    assert q == pytest.approx(0.5, abs=2e-3)
    observed = (4.0**2 + 2.0**2 + 2 * psf_sigma**2) / 2
    assert log_size == pytest.approx(0.5 * math.log(observed), abs=1e-3)


def test_an_empty_or_negative_stamp_keeps_finite_moments():
    images = torch.stack([torch.zeros(32, 32), -torch.ones(32, 32)])
    centre, moments, flux = batch_adaptive_moments(images)
    assert torch.isfinite(centre).all()
    assert torch.isfinite(moments).all()
    assert (flux <= 0).all()
    assert torch.isfinite(adaptive_features(images, torch.tensor([3.0, 3.0]))).all()


def test_inputs_append_the_adaptive_scalars():
    inputs = SersicInputs(adaptive=True)
    assert inputs.n_features == N_FEATURES + N_ADAPTIVE_FEATURES
    images = _gaussian(4.0, 2.0, 30.0)[None].float() * 50
    batch = inputs(images, torch.tensor([3.0]))
    assert batch.features.shape == (1, inputs.n_features)
    assert torch.isfinite(batch.features).all()
    # Measured on the canonical image: the same scalars for every rotation and mirror.
    turned = inputs(images.rot90(1, dims=(-2, -1)), torch.tensor([3.0]))
    torch.testing.assert_close(turned.features, batch.features)
