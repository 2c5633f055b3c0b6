"""Known-answer tests of the stretches, the power transforms and the Preprocessor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from morpho.data.pixels import sample_band_pixels
from morpho.data.power import box_cox, box_cox_inverse, yeo_johnson, yeo_johnson_inverse
from morpho.data.preprocess import Preprocessor
from morpho.data.stretches import (
    ArcsinhStretch,
    IdentityStretch,
    PowerStretch,
    make_stretch,
)

STRETCH_NAMES = ["arcsinh", "box-cox", "yeo-johnson", "none"]


@pytest.fixture(scope="module")
def flux_images() -> torch.Tensor:
    """(12, 2, 24, 24) float32 sky-subtracted flux_images: exponential discs of peak 20-300 σ
    plus unit Gaussian noise, seeded. Read-only: tests must not modify it in place."""
    generator = torch.Generator().manual_seed(0)
    coords = torch.arange(24, dtype=torch.float32) - 11.5
    radius = torch.hypot(coords[:, None], coords[None, :])
    peaks = 20.0 + 280.0 * torch.rand(12, 2, 1, 1, generator=generator)
    noise = torch.randn(12, 2, 24, 24, generator=generator)
    return peaks * torch.exp(-radius / 2.5) + noise


def _images_from_pixels(pixels: torch.Tensor, height: int = 25) -> torch.Tensor:
    """(C, P) pixels -> (P // (height·40), C, height, 40) float32 images."""
    bands = pixels.shape[0]
    return (
        pixels.T.reshape(-1, height * 40, bands)
        .permute(0, 2, 1)
        .reshape(-1, bands, height, 40)
        .float()
    )


# --- arcsinh -----------------------------------------------------------------------------


def test_arcsinh_known_values() -> None:
    stretch = ArcsinhStretch(scale=[2.0, 0.5])
    x = torch.tensor([[[2.0, 0.0, -2.0]], [[0.5, 0.0, -0.5]]])
    expected = torch.tensor([[[np.arcsinh(1.0), 0.0, -np.arcsinh(1.0)]]]).expand(2, 1, 3)
    torch.testing.assert_close(stretch(x), expected.float())


def test_arcsinh_inverse_round_trip(flux_images: torch.Tensor) -> None:
    stretch = ArcsinhStretch(scale=0.7)
    torch.testing.assert_close(
        stretch.inverse(stretch(flux_images)), flux_images, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), [], [[1.0]]])
def test_arcsinh_rejects_bad_scale(scale: object) -> None:
    with pytest.raises(ValueError, match="scale"):
        ArcsinhStretch(scale=scale)


def test_per_band_scale_checks_band_count() -> None:
    with pytest.raises(ValueError, match="2 bands but the images have 3 bands"):
        ArcsinhStretch(scale=[1.0, 2.0])(torch.ones(3, 4, 4))


# --- power transforms against scipy ---------------------------------------------------------

LAMBDAS = [-1.5, -0.5, -1e-9, 0.0, 1e-9, 0.5, 1.0, 2.0, 2.0 + 1e-9, 2.5]


@pytest.mark.parametrize("lmbda", LAMBDAS)
def test_box_cox_matches_scipy(lmbda: float) -> None:
    x = np.geomspace(1e-3, 1e3, 61)
    ours = box_cox(torch.from_numpy(x), lmbda).numpy()
    np.testing.assert_allclose(ours, stats.boxcox(x, lmbda), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("lmbda", LAMBDAS)
def test_yeo_johnson_matches_scipy(lmbda: float) -> None:
    x = np.concatenate([-np.geomspace(1e3, 1e-3, 30), [0.0], np.geomspace(1e-3, 1e3, 30)])
    ours = yeo_johnson(torch.from_numpy(x), lmbda).numpy()
    np.testing.assert_allclose(ours, stats.yeojohnson(x, lmbda), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("lmbda", LAMBDAS)
def test_power_inverses_round_trip(lmbda: float) -> None:
    positive = torch.from_numpy(np.geomspace(1e-3, 1e3, 61))
    real = torch.cat([-positive.flip(0), torch.zeros(1), positive])
    torch.testing.assert_close(box_cox_inverse(box_cox(positive, lmbda), lmbda), positive)
    torch.testing.assert_close(yeo_johnson_inverse(yeo_johnson(real, lmbda), lmbda), real)


def test_power_transforms_are_continuous_at_special_lambdas() -> None:
    x = torch.tensor([-5.0, -0.3, 0.4, 7.0], dtype=torch.float64)
    for special in (0.0, 2.0):
        torch.testing.assert_close(
            yeo_johnson(x, special + 1e-7), yeo_johnson(x, special), rtol=1e-6, atol=0.0
        )
    torch.testing.assert_close(box_cox(x[2:], 1e-7), torch.log(x[2:]), rtol=1e-6, atol=0.0)


def test_box_cox_inverse_maps_out_of_range_to_boundary() -> None:
    y = torch.tensor([-3.0, -10.0])
    assert torch.equal(box_cox_inverse(y, 0.5), torch.zeros(2))
    assert torch.isposinf(box_cox_inverse(torch.tensor([3.0]), -0.5)).all()


# --- PowerStretch -----------------------------------------------------------------------------


def test_yeo_johnson_fit_recovers_lambda() -> None:
    rng = np.random.default_rng(1)
    true = torch.tensor([[0.4], [1.6]], dtype=torch.float64)
    pixels = yeo_johnson_inverse(torch.from_numpy(rng.normal(size=(2, 20_000))), true)
    stretch = PowerStretch("yeo-johnson").fit(_images_from_pixels(pixels))
    np.testing.assert_allclose(stretch.lmbda.numpy(), true.flatten().numpy(), atol=0.05)


def test_box_cox_fit_recovers_lambda() -> None:
    rng = np.random.default_rng(2)
    true = torch.tensor([[0.3], [-0.5]], dtype=torch.float64)
    normal = rng.normal(loc=[[3.0], [0.0]], scale=[[1.0], [0.4]], size=(2, 20_000))
    pixels = box_cox_inverse(torch.from_numpy(normal), true)
    stretch = PowerStretch("box-cox").fit(_images_from_pixels(pixels))
    np.testing.assert_allclose(stretch.lmbda.numpy(), true.flatten().numpy(), atol=0.05)
    assert torch.equal(stretch.shift, torch.zeros(2)), "positive data need no shift"


@pytest.mark.parametrize("method", ["box-cox", "yeo-johnson"])
def test_power_stretch_round_trip(flux_images: torch.Tensor, method: str) -> None:
    stretch = PowerStretch(method).fit(flux_images)
    assert torch.isfinite(stretch(flux_images)).all()
    torch.testing.assert_close(
        stretch.inverse(stretch(flux_images)), flux_images, rtol=1e-4, atol=1e-3
    )


def test_box_cox_shift_makes_training_pixels_positive_and_clamps_below(
    flux_images: torch.Tensor,
) -> None:
    stretch = PowerStretch("box-cox").fit(flux_images)
    low = flux_images.amin(dim=(0, 2, 3))
    high = flux_images.amax(dim=(0, 2, 3))
    torch.testing.assert_close(stretch.floor, 1e-3 * (high - low))
    torch.testing.assert_close(stretch.shift, stretch.floor - low)
    at_min = stretch(low.view(1, 2, 1, 1))
    below = stretch((low - 5.0).view(1, 2, 1, 1))
    assert torch.equal(below, at_min)


def test_power_stretch_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        PowerStretch("box-cox")(torch.ones(1, 4, 4))


def test_power_stretch_rejects_constant_band() -> None:
    images = torch.randn(2, 2, 8, 8)
    images[:, 1] = 3.0
    with pytest.raises(ValueError, match=r"band\(s\) \[1\]"):
        PowerStretch("yeo-johnson").fit(images)


def test_power_stretch_state_keeps_its_method(flux_images: torch.Tensor) -> None:
    state = PowerStretch("box-cox").fit(flux_images).state_dict()
    with pytest.raises(ValueError, match="'box-cox' PowerStretch"):
        PowerStretch("yeo-johnson").load_state_dict(state, strict=False)


def test_fit_rejects_non_finite_pixels() -> None:
    images = torch.randn(2, 1, 8, 8)
    images[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        PowerStretch().fit(images)


# --- factory and sampling -------------------------------------------------------------------


def test_make_stretch_builds_each_name() -> None:
    assert isinstance(make_stretch("arcsinh", scale=2.0), ArcsinhStretch)
    assert make_stretch("box-cox").method == "box-cox"
    assert make_stretch("yeo-johnson").method == "yeo-johnson"
    assert isinstance(make_stretch("none"), IdentityStretch)
    with pytest.raises(ValueError, match="unknown stretch 'log'"):
        make_stretch("log")


def test_sample_band_pixels_is_uniform_subset_and_seeded(flux_images: torch.Tensor) -> None:
    everything = flux_images.movedim(1, -1).reshape(-1, 2).double()
    whole = sample_band_pixels(flux_images, max_pixels=10**6)
    assert torch.equal(whole, everything)
    batches = list(flux_images.split(5))
    first = sample_band_pixels(batches, max_pixels=1000, seed=3)
    again = sample_band_pixels(batches, max_pixels=1000, seed=3)
    assert first.shape == (1000, 2)
    assert torch.equal(first, again)
    assert not torch.equal(first, sample_band_pixels(batches, max_pixels=1000, seed=4))
    rows = {tuple(row) for row in everything.tolist()}
    assert all(tuple(row) in rows for row in first.tolist())
    assert len({tuple(row) for row in first.tolist()}) == 1000, "sampled without replacement"


# --- Preprocessor -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", STRETCH_NAMES)
def test_preprocessor_standardises_training_pixels(flux_images: torch.Tensor, name: str) -> None:
    processed = Preprocessor(make_stretch(name)).fit(flux_images)(flux_images)
    torch.testing.assert_close(processed.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        processed.std(dim=(0, 2, 3), correction=0), torch.ones(2), atol=1e-5, rtol=0
    )


def test_preprocessor_standardises_approximately_from_a_subsample(
    flux_images: torch.Tensor,
) -> None:
    processed = Preprocessor(make_stretch("arcsinh"), max_pixels=3000).fit(flux_images)(flux_images)
    torch.testing.assert_close(processed.mean(dim=(0, 2, 3)), torch.zeros(2), atol=0.05, rtol=0)
    torch.testing.assert_close(processed.std(dim=(0, 2, 3)), torch.ones(2), atol=0.05, rtol=0)


@pytest.mark.parametrize("name", STRETCH_NAMES)
def test_preprocessor_state_dict_round_trip(flux_images: torch.Tensor, name: str) -> None:
    kwargs = {"scale": [3.0, 0.5]} if name == "arcsinh" else {}
    fitted = Preprocessor(make_stretch(name, **kwargs)).fit(flux_images)
    fresh = Preprocessor(make_stretch(name))
    fresh.load_state_dict(fitted.state_dict())
    assert torch.equal(fresh(flux_images), fitted(flux_images))
    assert torch.equal(fresh.inverse(flux_images), fitted.inverse(flux_images))


@pytest.mark.parametrize("name", STRETCH_NAMES)
def test_preprocessor_inverse_round_trip(flux_images: torch.Tensor, name: str) -> None:
    preprocessor = Preprocessor(make_stretch(name)).fit(flux_images)
    restored = preprocessor.inverse(preprocessor(flux_images[0]))
    torch.testing.assert_close(restored, flux_images[0], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", STRETCH_NAMES)
def test_preprocessor_propagates_nan(flux_images: torch.Tensor, name: str) -> None:
    preprocessor = Preprocessor(make_stretch(name)).fit(flux_images)
    image = flux_images[0].clone()
    image[1, 5, 7] = float("nan")
    processed = preprocessor(image)
    assert torch.isnan(processed[1, 5, 7])
    assert torch.isfinite(processed).sum() == image.numel() - 1


def test_preprocessor_before_fit_raises(flux_images: torch.Tensor) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        Preprocessor(make_stretch("arcsinh"))(flux_images)


def test_preprocessor_wrong_band_count_raises(flux_images: torch.Tensor) -> None:
    preprocessor = Preprocessor(make_stretch("none")).fit(flux_images)
    with pytest.raises(ValueError, match="fitted on 2 bands but images has 3 bands"):
        preprocessor(torch.zeros(3, 24, 24))


def test_preprocessor_fits_from_batches_like_whole_tensor(flux_images: torch.Tensor) -> None:
    whole = Preprocessor(make_stretch("yeo-johnson")).fit(flux_images)
    from_batches = Preprocessor(make_stretch("yeo-johnson")).fit(iter(flux_images.split(5)))
    from_images = Preprocessor(make_stretch("yeo-johnson")).fit(list(flux_images))
    for other in (from_batches, from_images):
        torch.testing.assert_close(other(flux_images), whole(flux_images), rtol=1e-5, atol=1e-5)


def test_preprocessor_subsampled_batches_approximate_whole_tensor(
    flux_images: torch.Tensor,
) -> None:
    whole = Preprocessor(make_stretch("arcsinh")).fit(flux_images)
    sampled = Preprocessor(make_stretch("arcsinh"), max_pixels=2000).fit(flux_images.split(3))
    torch.testing.assert_close(sampled.mean, whole.mean, atol=0.05, rtol=0)
    torch.testing.assert_close(sampled.std, whole.std, rtol=0.05, atol=0)


def test_preprocessor_without_normalisation_is_the_stretch(flux_images: torch.Tensor) -> None:
    stretch = ArcsinhStretch(scale=2.0)
    preprocessor = Preprocessor(stretch, normalize=False).fit(flux_images)
    assert torch.equal(preprocessor(flux_images), stretch(flux_images))


def test_preprocessor_rejects_bad_input(flux_images: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="Stretch"):
        Preprocessor(torch.nn.Identity())
    with pytest.raises(TypeError, match="expected image tensors"):
        Preprocessor(make_stretch("none")).fit([{"image": flux_images}])
    with pytest.raises(ValueError, match="no pixels"):
        Preprocessor(make_stretch("none")).fit([])
