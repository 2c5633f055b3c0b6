"""Canonical orientation: exact invariance under the dihedral group, angles mapped back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from morpho.sersic.pose import (
    align_major_axis,
    canonical_pose,
    pa_from_canonical,
    pa_to_canonical,
)

# The 8 dihedral transforms of an (…, H, W) image.
DIHEDRAL = {
    "identity": lambda x: x,
    "rot90": lambda x: torch.rot90(x, 1, dims=(-2, -1)),
    "rot180": lambda x: torch.rot90(x, 2, dims=(-2, -1)),
    "rot270": lambda x: torch.rot90(x, 3, dims=(-2, -1)),
    "flip_x": lambda x: x.flip(-1),
    "flip_y": lambda x: x.flip(-2),
    "transpose": lambda x: x.transpose(-1, -2),
    "anti_transpose": lambda x: torch.rot90(x, 2, dims=(-2, -1)).transpose(-1, -2),
}


def _ellipse(pa_deg: float, *, q: float = 0.5, size: int = 32, offset=(0.7, -0.4)) -> torch.Tensor:
    """An elliptical Gaussian (σ_major 4 px) at position angle ``pa_deg`` from +x towards +y."""
    y, x = np.indices((size, size), dtype=np.float64)
    x = x - (size - 1) / 2 - offset[0]
    y = y - (size - 1) / 2 - offset[1]
    theta = np.deg2rad(pa_deg)
    major = x * np.cos(theta) + y * np.sin(theta)
    minor = -x * np.sin(theta) + y * np.cos(theta)
    return torch.tensor(np.exp(-0.5 * ((major / 4) ** 2 + (minor / (4 * q)) ** 2)))


def _moment_pa(image: torch.Tensor) -> float:
    """Position angle (degrees) of an image from its unweighted second moments."""
    y, x = np.indices(image.shape, dtype=np.float64)
    w = image.numpy() / image.sum().item()
    cx, cy = (w * x).sum(), (w * y).sum()
    ixx, iyy, ixy = (
        (w * (x - cx) ** 2).sum(),
        (w * (y - cy) ** 2).sum(),
        (w * (x - cx) * (y - cy)).sum(),
    )
    return float(np.rad2deg(0.5 * np.arctan2(2 * ixy, ixx - iyy)) % 180)


def test_every_dihedral_copy_has_the_same_canonical_image():
    generator = torch.Generator().manual_seed(0)
    image = _ellipse(33.0)[None, None] + 0.05 * torch.randn(1, 1, 32, 32, generator=generator)
    reference, reference_pose = canonical_pose(image)
    for name, transform in DIHEDRAL.items():
        canonical, pose = canonical_pose(transform(image))
        assert torch.equal(canonical, reference), name
        assert torch.allclose(pose.shape, reference_pose.shape, rtol=1e-5), name


@pytest.mark.parametrize("pa", [5.0, 33.0, 71.0, 100.0, 140.0, 172.0])
@pytest.mark.parametrize("name", list(DIHEDRAL))
def test_angles_map_to_and_from_the_canonical_frame(pa, name):
    # The true angle of the transformed image, measured from its moments.
    image = DIHEDRAL[name](_ellipse(pa))
    true_pa = torch.tensor([_moment_pa(image)], dtype=torch.float64)
    canonical, pose = canonical_pose(image[None, None])
    measured = _moment_pa(canonical[0, 0])
    mapped = pa_to_canonical(true_pa, pose)
    assert abs((mapped.item() - measured + 90) % 180 - 90) < 0.01
    assert 0 <= measured <= 45.01  # canonical angles lie in [0°, 45°]
    back = pa_from_canonical(mapped, pose)
    assert abs((back.item() - true_pa.item() + 90) % 180 - 90) < 1e-9


def test_non_square_images_are_refused():
    with pytest.raises(ValueError, match="square"):
        canonical_pose(torch.zeros(1, 1, 8, 10))


@pytest.mark.parametrize("pa", [5.0, 33.0, 71.0, 100.0, 140.0, 172.0])
@pytest.mark.parametrize("name", ["identity", "rot90", "flip_x", "anti_transpose"])
def test_aligned_images_lie_along_x_and_their_angles_map_back(pa, name):
    # Centred (the moments are taken about the stamp centre), size 48 and σ_major
    # 4 px: the reflected edges hold no light.
    image = DIHEDRAL[name](_ellipse(pa, size=48, offset=(0.0, 0.0)))
    true_pa = torch.tensor([_moment_pa(image)], dtype=torch.float64)
    canonical, pose = canonical_pose(image[None, None])
    aligned, aligned_pose = align_major_axis(canonical, pose)
    assert 0 <= aligned_pose.angle.item() <= 45.0
    # The galaxy's own axis now lies along x (to the bicubic interpolation's error),
    # and the mapped angle says the same.
    measured = _moment_pa(aligned[0, 0])
    assert abs((measured + 90) % 180 - 90) < 0.2
    mapped = pa_to_canonical(true_pa, aligned_pose)
    assert abs((mapped.item() - measured + 90) % 180 - 90) < 0.2
    back = pa_from_canonical(mapped, aligned_pose)
    assert abs((back.item() - true_pa.item() + 90) % 180 - 90) < 1e-9
    # A pure turn keeps the light (bicubic weights sum to one).
    assert aligned.sum().item() == pytest.approx(image.sum().item(), rel=1e-3)


def test_every_dihedral_copy_has_the_same_aligned_image():
    generator = torch.Generator().manual_seed(1)
    image = _ellipse(58.0)[None, None] + 0.05 * torch.randn(1, 1, 32, 32, generator=generator)
    reference, _ = align_major_axis(*canonical_pose(image))
    for name, transform in DIHEDRAL.items():
        aligned, _ = align_major_axis(*canonical_pose(transform(image)))
        assert torch.allclose(aligned, reference, atol=1e-6), name


def test_aligning_needs_the_moments():
    canonical, pose = canonical_pose(torch.rand(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="moments"):
        align_major_axis(canonical, dataclasses.replace(pose, moments=None))
