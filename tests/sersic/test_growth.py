"""Curves of growth in elliptical apertures: known answers for Gaussians, dihedral invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morpho.sersic.growth import elliptical_radius, growth_fractions
from morpho.sersic.inputs import N_FEATURES, SersicInputs
from morpho.sersic.pose import canonical_pose, weighted_moments
from tests.sersic.test_pose import DIHEDRAL

RADII = (2.0, 3.0, 4.0, 6.0, 28.0)


def _gaussian(sigma_x: float, sigma_y: float, pa_deg: float = 0.0, size: int = 64):
    y, x = np.indices((size, size), dtype=np.float64)
    x, y = x - (size - 1) / 2, y - (size - 1) / 2
    theta = np.deg2rad(pa_deg)
    major = x * np.cos(theta) + y * np.sin(theta)
    minor = -x * np.sin(theta) + y * np.cos(theta)
    image = np.exp(-(major**2) / (2 * sigma_x**2) - minor**2 / (2 * sigma_y**2))
    return torch.from_numpy(image)[None]


def _expected(sigma: float) -> list[float]:
    """Fraction of a round Gaussian's flux inside r, over that inside the last radius."""
    inside = [1 - math.exp(-(r**2) / (2 * sigma**2)) for r in RADII]
    return [f / inside[-1] for f in inside[:-1]]


@pytest.mark.parametrize(
    ("sigma_x", "sigma_y", "pa_deg"), [(3.0, 3.0, 0.0), (4.5, 2.0, 30.0), (6.0, 1.5, 117.0)]
)
def test_gaussians_give_the_analytic_curve_of_growth(sigma_x, sigma_y, pa_deg):
    # Unweighted moments (a very wide weight): the ellipse is exactly the Gaussian's, and the
    # circularised radius makes every such Gaussian the round one of σ = sqrt(σx σy).
    image = _gaussian(sigma_x, sigma_y, pa_deg)
    got = growth_fractions(image, RADII, weight_sigma=1e4)[0]
    expected = torch.tensor(_expected(math.sqrt(sigma_x * sigma_y)), dtype=got.dtype)
    torch.testing.assert_close(got, expected, atol=0.012, rtol=0)


def test_radii_are_circularised_along_the_moment_axes():
    # q = 0.25 along +x: 8 px out on the major axis is r = 8 sqrt(q) = 4, on the minor 8 / sqrt(q).
    r = elliptical_radius(_gaussian(6.0, 1.5, 0.0, size=65), weight_sigma=1e4)[0]
    assert r[32, 32] == 0
    assert r[32, 40].item() == pytest.approx(4.0, rel=1e-6)
    assert r[40, 32].item() == pytest.approx(16.0, rel=1e-6)
    turned = elliptical_radius(_gaussian(6.0, 1.5, 90.0, size=65), weight_sigma=1e4)[0]
    assert turned[40, 32].item() == pytest.approx(4.0, rel=1e-6)


def test_the_curve_is_the_same_for_every_rotation_and_mirror():
    generator = torch.Generator().manual_seed(0)
    image = _gaussian(5.0, 2.0, 23.0) * 40 + torch.randn(1, 64, 64, generator=generator)
    reference = growth_fractions(image)
    for name, transform in DIHEDRAL.items():
        torch.testing.assert_close(growth_fractions(transform(image)), reference, msg=name)


def test_the_canonical_pose_moments_give_the_recomputed_curve():
    # SersicInputs hands growth_fractions the pose's moments instead of measuring them again
    # on the canonical image: the same curve, in every orientation of a noisy galaxy.
    generator = torch.Generator().manual_seed(1)
    image = _gaussian(5.0, 2.0, 23.0) * 40 + torch.randn(1, 64, 64, generator=generator)
    for name, transform in DIHEDRAL.items():
        canonical, pose = canonical_pose(transform(image)[None])
        _, _, e1, e2, trace, i0 = weighted_moments(canonical[:, 0], 8.0)
        torch.testing.assert_close(pose.moments, torch.stack([e1, e2, trace, i0], dim=1), msg=name)
        torch.testing.assert_close(
            growth_fractions(canonical[:, 0], moments=pose.moments),
            growth_fractions(canonical[:, 0]),
            msg=name,
        )


def test_bad_radii_and_empty_stamps():
    image = _gaussian(3.0, 3.0)
    with pytest.raises(ValueError, match="increasing"):
        growth_fractions(image, (4.0, 2.0))
    with pytest.raises(ValueError, match="positive"):
        growth_fractions(image, (0.0, 2.0))
    with pytest.raises(ValueError, match="at least two radii"):
        SersicInputs(growth_radii=[3.0])
    assert torch.equal(growth_fractions(torch.zeros(2, 16, 16), (1.0, 2.0, 8.0)), torch.zeros(2, 2))


def test_inputs_append_the_growth_fractions():
    inputs = SersicInputs(growth_radii=RADII)
    assert inputs.n_features == N_FEATURES + len(RADII) - 1
    images = _gaussian(3.0, 3.0)[None].float() * 50
    batch = inputs(images, torch.tensor([3.0]))
    assert batch.features.shape == (1, inputs.n_features)
    assert SersicInputs().n_features == N_FEATURES


def test_inputs_anchor_the_flux_on_the_stamp_sum():
    images = _gaussian(3.0, 3.0)[None].float() * 50
    images = images + 0.5 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    batch = SersicInputs(anchors=True)(images, torch.tensor([3.0]))
    flux_over_sigma = images.sum() / batch.log_sigma.exp()
    torch.testing.assert_close(batch.anchor[0, 0], flux_over_sigma.log()[0])
    assert batch.anchor[0, 1:].isnan().all()
    assert SersicInputs()(images, torch.tensor([3.0])).anchor is None
