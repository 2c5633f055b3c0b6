"""Known-answer tests of the augmentations: exact rotations, shifts, flux and determinism."""

from __future__ import annotations

import pytest
import torch

from morpho.data.augment import Augment, dihedral_views, rotate_shift


def _gaussian(height: int, width: int, centre: tuple[float, float], sigma: tuple[float, float]):
    """(1, H, W) float32 elliptical Gaussian; ``centre``, ``sigma`` in (row, col) pixels."""
    rows = torch.arange(height, dtype=torch.float32)[:, None] - centre[0]
    cols = torch.arange(width, dtype=torch.float32)[None, :] - centre[1]
    return torch.exp(-0.5 * ((rows / sigma[0]) ** 2 + (cols / sigma[1]) ** 2))[None]


def _random_images(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# Resampling at exact pixel centres is exact up to rounding of the sampling grid: about 1e-6
# pixels in float32, i.e. ~1e-5 on unit-variance noise, and ~1e-15 in float64.
TOLERANCES = [(torch.float32, 1e-4), (torch.float64, 1e-10)]


@pytest.mark.parametrize("size", [32, 33])
@pytest.mark.parametrize(("dtype", "atol"), TOLERANCES)
def test_rotation_by_90_degrees_matches_rot90(size: int, dtype: torch.dtype, atol: float) -> None:
    x = _random_images(2, 3, size, size, dtype=dtype)
    rotated = rotate_shift(x, 90.0, (0.0, 0.0))
    expected = torch.rot90(x, 1, dims=(-2, -1))
    torch.testing.assert_close(
        rotated[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2], atol=atol, rtol=0
    )


def test_rotation_by_90_degrees_is_rigid_on_non_square_images() -> None:
    delta = torch.zeros(1, 20, 30)
    delta[0, 12, 18] = 1.0  # (u, v) = (3.5, 2.5) from the centre (14.5, 9.5)
    rotated = rotate_shift(delta, 90.0, (0.0, 0.0))
    # q = M p with M = [[0, -1], [1, 0]]: content at (3.5, 2.5) moves to (2.5, -3.5).
    assert divmod(int(rotated.argmax()), 30) == (6, 17)
    torch.testing.assert_close(rotated.max(), torch.tensor(1.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("angle", [17.0, 45.0, 123.0, 301.5])
def test_arbitrary_rotation_conserves_flux(angle: float) -> None:
    source = _gaussian(48, 48, centre=(23.2, 24.7), sigma=(1.5, 2.5))
    rotated = rotate_shift(source, angle, (0.3, -0.7))
    torch.testing.assert_close(rotated.sum(), source.sum(), rtol=2e-3, atol=0)
    assert not torch.allclose(rotated, source, atol=1e-2), "the source did rotate"


@pytest.mark.parametrize(("dtype", "atol"), TOLERANCES)
def test_zero_rotation_and_shift_is_identity(dtype: torch.dtype, atol: float) -> None:
    x = _random_images(4, 2, 21, 17, dtype=dtype)
    torch.testing.assert_close(rotate_shift(x, 0.0, (0.0, 0.0)), x, atol=atol, rtol=0)
    disabled = Augment(flips=False, rot90=False, rotate=False, max_shift=0.0)
    assert torch.equal(disabled(x), x)


@pytest.mark.parametrize(("dx", "dy"), [(3, -2), (-1, 4), (0, 1)])
def test_integer_shift_moves_a_delta_exactly(dx: int, dy: int) -> None:
    delta = torch.zeros(2, 20, 32)
    delta[:, 12, 18] = 1.0
    shifted = rotate_shift(delta, 0.0, (float(dx), float(dy)))
    expected = torch.zeros_like(delta)
    expected[:, 12 + dy, 18 + dx] = 1.0
    torch.testing.assert_close(shifted, expected, atol=1e-5, rtol=0)


def test_reflection_padding_keeps_a_uniform_sky_uniform() -> None:
    sky = torch.full((1, 24, 30), 3.0)
    torch.testing.assert_close(rotate_shift(sky, 45.0, (1.5, -0.5)), sky, atol=1e-5, rtol=0)


def test_per_image_angles_and_shifts() -> None:
    x = _random_images(2, 1, 16, 16)
    out = rotate_shift(x, torch.tensor([0.0, 90.0]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(out[1], torch.rot90(x[1], 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, :, :, 1:], x[0, :, :, :-1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="angle_deg"):
        rotate_shift(x, torch.zeros(3), (0.0, 0.0))


def test_same_seed_same_output_different_seed_different_output() -> None:
    x = _random_images(3, 2, 24, 24)

    def augment(seed: int) -> torch.Tensor:
        return Augment(generator=torch.Generator().manual_seed(seed))(x)

    assert torch.equal(augment(7), augment(7))
    assert not torch.allclose(augment(7), augment(8))


def test_all_bands_get_the_same_transform() -> None:
    band = _random_images(1, 24, 24)
    augmented = Augment(generator=torch.Generator().manual_seed(0))(band.expand(3, 24, 24))
    assert augmented.shape == (3, 24, 24)
    assert torch.equal(augmented[0], augmented[1])
    assert torch.equal(augmented[0], augmented[2])


def test_batch_images_get_independent_transforms() -> None:
    image = _random_images(1, 24, 24)
    augmented = Augment(generator=torch.Generator().manual_seed(0))(image.expand(6, 1, 24, 24))
    assert not torch.allclose(augmented[0], augmented[1])


def _moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centroid (x, y) offsets from the centre and second-moment orientation (degrees)."""
    flux = images[:, 0]
    height, width = flux.shape[-2:]
    rows = torch.arange(height, dtype=flux.dtype)[:, None] - (height - 1) / 2
    cols = torch.arange(width, dtype=flux.dtype)[None, :] - (width - 1) / 2
    total = flux.sum(dim=(-2, -1))
    x = (flux * cols).sum(dim=(-2, -1)) / total
    y = (flux * rows).sum(dim=(-2, -1)) / total
    xx = (flux * cols**2).sum(dim=(-2, -1)) / total - x**2
    yy = (flux * rows**2).sum(dim=(-2, -1)) / total - y**2
    xy = (flux * cols * rows).sum(dim=(-2, -1)) / total - x * y
    return x, y, torch.rad2deg(0.5 * torch.atan2(2 * xy, xx - yy))


def test_random_angles_cover_all_orientations() -> None:
    bar = _gaussian(40, 40, centre=(19.5, 19.5), sigma=(1.5, 5.0)).expand(64, 1, 40, 40)
    rotate_only = Augment(
        flips=False, rot90=False, max_shift=0.0, generator=torch.Generator().manual_seed(0)
    )
    _, _, orientation = _moments(rotate_only(bar))
    counts = torch.histc(orientation, bins=4, min=-90.0, max=90.0)
    assert counts.min() >= 5, f"orientations bunched: {counts.tolist()}"


def test_random_shifts_stay_within_max_shift() -> None:
    blob = _gaussian(32, 32, centre=(15.5, 15.5), sigma=(2.0, 2.0)).expand(64, 1, 32, 32)
    shift_only = Augment(
        flips=False,
        rot90=False,
        rotate=False,
        max_shift=1.5,
        generator=torch.Generator().manual_seed(0),
    )
    x, y, _ = _moments(shift_only(blob))
    for offset in (x, y):
        assert offset.abs().max() <= 1.5 + 1e-3
        assert offset.std() > 0.5, "shifts should spread over [-1.5, 1.5]"


def test_flips_and_quarter_turns_only_permute_pixels() -> None:
    x = torch.arange(5 * 16 * 16, dtype=torch.float32).reshape(5, 1, 16, 16)
    out = Augment(rotate=False, max_shift=0.0, generator=torch.Generator().manual_seed(1))(x)
    for before, after in zip(x, out, strict=True):
        assert any(torch.equal(after, view) for view in dihedral_views(before[None])[:, 0])


def test_augment_validates_input() -> None:
    with pytest.raises(ValueError, match="square"):
        Augment()(torch.zeros(1, 8, 10))
    with pytest.raises(ValueError, match="max_shift"):
        Augment(max_shift=-1.0)
    with pytest.raises(TypeError, match="floating-point"):
        Augment()(torch.zeros(1, 8, 8, dtype=torch.int64))


def test_dihedral_views_are_eight_distinct_exact_permutations() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    views = dihedral_views(x)
    assert views.shape == (8, 2, 3, 5, 5)
    assert torch.equal(views[0], x)
    for view in views:
        assert torch.equal(view.flatten().sort().values, x.flatten().sort().values)
    distinct = {tuple(view.flatten().tolist()) for view in views}
    assert len(distinct) == 8
    torch.testing.assert_close(views[1], torch.rot90(x, 1, dims=(-2, -1)), atol=0, rtol=0)
    torch.testing.assert_close(views[4], x.flip(-1), atol=0, rtol=0)
    with pytest.raises(ValueError, match="square"):
        dihedral_views(torch.zeros(1, 1, 4, 5))
