"""Canonicalisation and nuisance views against known answers."""

from __future__ import annotations

import math

import galsim
import pytest
import torch

from morpho.data.canonical import Canonicalize, adaptive_moments
from morpho.data.views import NuisanceViews, border_noise_sigma


def _gaussian(sigma=4.0, q=0.5, beta_deg=30.0, offset=(3.0, -2.0), size=64) -> torch.Tensor:
    profile = galsim.Gaussian(sigma=sigma).shear(q=q, beta=beta_deg * galsim.degrees)
    image = profile.drawImage(nx=size, ny=size, scale=1.0, offset=offset, method="no_pixel")
    return torch.tensor(image.array, dtype=torch.float64)[None, None]


def test_adaptive_moments_of_a_gaussian():
    mu, moments, flux = adaptive_moments(_gaussian()[:, 0])
    assert mu[0].tolist() == pytest.approx([3.0, -2.0], abs=5e-3)
    eig = torch.linalg.eigvalsh(moments[0])
    # Matched-weight moments of a Gaussian are half its covariance: 32/2 and 8/2.
    assert eig.tolist() == pytest.approx([4.0, 16.0], rel=1e-3)
    assert float(flux[0]) == pytest.approx(1.0, abs=1e-4)


def test_canonical_image_is_centred_aligned_and_rescaled():
    canon = Canonicalize(target_sigma=5.0)
    m = canon.measure(_gaussian())
    assert float(m["angle"][0]) == pytest.approx(math.radians(30.0), abs=1e-3)
    out = canon(_gaussian())
    mu, moments, _ = adaptive_moments(out[:, 0])
    assert mu[0].abs().max() < 0.05
    assert abs(float(moments[0, 0, 1])) < 0.05 * float(moments[0, 0, 0])
    assert float(moments[0, 0, 0]) > float(moments[0, 1, 1])  # major axis along x
    assert float(torch.linalg.det(moments[0]) ** 0.25) == pytest.approx(5.0, rel=0.02)


def test_canonical_images_forget_flux_and_orientation():
    canon = Canonicalize()
    a = canon(_gaussian(beta_deg=10.0, offset=(0.0, 0.0)))
    b = canon(50.0 * _gaussian(beta_deg=100.0, offset=(2.0, 1.0)))
    assert torch.allclose(a, b, atol=2e-3 * float(a.max()))
    c = canon(_gaussian(q=0.9, offset=(0.0, 0.0)))
    assert not torch.allclose(a, c, atol=2e-3 * float(a.max()))


def test_views_keep_geometry_and_add_the_stated_noise():
    torch.manual_seed(0)
    flat = torch.zeros(64, 1, 48, 48)
    noisy_sky = flat + torch.randn_like(flat) * 2.0
    views = NuisanceViews(max_noise_factor=1.5, max_blur=0.0, max_flux_factor=1.0, max_zoom=1.0)
    clean, noisy = views(noisy_sky)
    ratio = border_noise_sigma(noisy) / border_noise_sigma(clean)
    assert float(ratio.min()) >= 0.9
    assert float(ratio.max()) <= 1.65
    assert float(ratio.mean()) == pytest.approx(1.25, abs=0.1)


def test_views_conserve_flux_of_a_central_source():
    torch.manual_seed(1)
    image = _gaussian(sigma=3.0, offset=(0.0, 0.0)).float().repeat(8, 1, 1, 1)
    views = NuisanceViews(max_noise_factor=1.0, max_blur=1.0, max_flux_factor=1.0, max_shift=1.0)
    clean, noisy = views(image)
    assert clean.sum(dim=(1, 2, 3)).tolist() == pytest.approx([1.0] * 8, abs=0.01)
    assert noisy.sum(dim=(1, 2, 3)).tolist() == pytest.approx([1.0] * 8, abs=0.01)
    assert not torch.allclose(clean[0], clean[1])


def test_recorrupted_pairs_have_independent_noise_of_equal_signal():
    torch.manual_seed(2)
    signal = torch.zeros(32, 1, 48, 48)
    signal[..., 20:28, 20:28] = 10.0
    noisy = signal + torch.randn_like(signal) * 3.0
    target, view = NuisanceViews(
        max_blur=0.0,
        max_noise_factor=1.0,
        max_flux_factor=1.0,
        max_zoom=1.0,
        max_shift=0.0,
        rotate=False,
    ).recorrupt(noisy)
    noise_target, noise_view = target - signal, view - signal
    correlation = (noise_target * noise_view).mean() / (noise_target.std() * noise_view.std())
    assert abs(float(correlation)) < 0.02
    assert float((view - target).mean()) == pytest.approx(0.0, abs=0.05)


def test_noise_floor_equalises_the_noise_of_bright_galaxies():
    torch.manual_seed(3)
    clean = _gaussian(offset=(0.0, 0.0)).float().repeat(6, 1, 1, 1) * 1000.0
    noise = torch.randn_like(clean) * torch.tensor([0.2, 0.5, 1.0, 2.0, 4.0, 40.0]).view(6, 1, 1, 1)
    canon = Canonicalize(noise_floor=0.2).eval()
    out = canon(clean + noise)
    sigma = border_noise_sigma(out)[:, 0]
    assert sigma[:4].tolist() == pytest.approx([0.2] * 4, rel=0.15)
    assert float(sigma[5]) > 0.3  # noisier than the floor: left alone
    assert torch.equal(canon(clean + noise), out)  # reproducible in eval mode
