"""Injected oddities: the flux they add, where they add it, and reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest

from morpho.density.oddities import (
    ODDITIES,
    add_hot_column,
    add_merger,
    add_star,
    add_streak,
    inject,
)


def _galaxy(size: int = 64, sigma: float = 3.0, peak: float = 200.0) -> np.ndarray:
    """A compact round Gaussian galaxy in two bands, centred, float32 ADU (fresh each call)."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    blob = peak * np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return np.stack([blob, 0.5 * blob]).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(ODDITIES))
def test_input_is_never_modified_and_seeds_reproduce(kind):
    image, companion = _galaxy(), _galaxy(sigma=2.0)
    before = image.copy()
    extra = {"companion": companion} if kind == "merger" else {}
    first = inject(kind, image, np.random.default_rng(7), **extra)
    second = inject(kind, image, np.random.default_rng(7), **extra)
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32
    assert first.shape == image.shape
    assert np.all(first >= image)
    assert (first - image).sum() > 0


def test_horizontal_streak_adds_its_flux_along_the_line():
    image = np.zeros((2, 48, 64))
    brightness, width, offset = 20.0, 1.2, 3.3
    added = add_streak(
        image,
        np.random.default_rng(0),
        surface_brightness=brightness,
        width_pix=width,
        angle_deg=0.0,
        offset_pix=offset,
    )
    # The line y = centre + offset crosses all 64 columns.
    expected = brightness * width * math.sqrt(2 * math.pi) * 64
    np.testing.assert_allclose(added.sum(axis=(1, 2)), expected, rtol=1e-6)
    row = (48 - 1) / 2 + offset
    near = np.abs(np.arange(48) - row) <= 3 * width
    assert added[:, near].sum() / added.sum() > 0.99
    assert np.all(added[0].argmax(axis=0) == round(row))


def test_random_streak_crosses_the_stamp():
    added = add_streak(np.zeros((1, 64, 64)), np.random.default_rng(5), width_pix=1.0)
    touched = added[0] > 1.0
    # A line crossing the stamp reaches two of its four edges.
    edges = [touched[0].any(), touched[-1].any(), touched[:, 0].any(), touched[:, -1].any()]
    assert sum(edges) >= 2


def test_star_core_flux_and_spike_flux_on_the_stamp():
    image = np.zeros((2, 101, 101))
    rng = np.random.default_rng(0)
    core = add_star(
        image, rng, flux=5e4, psf_fwhm_pix=3.0, spike_fraction=0.0, position=(50.0, 50.0)
    )
    np.testing.assert_allclose(core.sum(axis=(1, 2)), 5e4, rtol=1e-4)
    spiky = add_star(
        image,
        rng,
        flux=5e4,
        psf_fwhm_pix=3.0,
        spike_fraction=0.2,
        position=(50.0, 50.0),
        spike_angle_deg=0.0,
    )
    # Spikes ∝ 1 / (1 + (r / FWHM)²) keep (2/π) atan(L / FWHM) of their flux within L.
    kept = 0.8 + 0.2 * (2 / math.pi) * math.atan(50.5 / 3.0)
    np.testing.assert_allclose(spiky.sum(axis=(1, 2)), 5e4 * kept, rtol=1e-4)
    assert spiky[0, 50, 95] > 10 * core[0, 50, 95]
    assert spiky[0, 95, 50] > 10 * core[0, 95, 50]


def test_default_star_is_bright_off_centre_and_inside_the_stamp():
    for seed in range(5):
        added = add_star(np.zeros((1, 64, 64)), np.random.default_rng(seed))[0]
        y, x = np.unravel_index(added.argmax(), added.shape)
        radius = math.hypot(y - 31.5, x - 31.5)
        assert 0.25 * 64 - 1 <= radius <= 0.45 * 64 + 1
        assert added.max() > 100 * math.sqrt(39.0)


@pytest.mark.parametrize("start_row", [0, 20])
def test_hot_column_touches_only_one_column(start_row):
    image = _galaxy()
    out = add_hot_column(
        image, np.random.default_rng(1), level=35.0, column=10, start_row=start_row
    )
    diff = out.astype(np.float64) - image
    changed = np.nonzero(np.abs(diff).sum(axis=(0, 1)))[0]
    assert changed.tolist() == [10]
    np.testing.assert_allclose(diff[:, start_row:, 10], 35.0, rtol=1e-6)
    assert np.all(diff[:, :start_row, 10] == 0)


def test_random_hot_columns_are_one_column_each():
    for seed in range(5):
        image = np.zeros((3, 32, 32))
        diff = add_hot_column(image, np.random.default_rng(seed))
        columns = np.nonzero(diff.sum(axis=(0, 1)))[0]
        assert len(columns) == 1
        assert 20.0 <= diff.max() <= 60.0


def test_merger_adds_the_scaled_companion_exactly_when_it_stays_inside():
    image, companion = _galaxy(), _galaxy(sigma=2.0, peak=300.0)
    companion[companion < 1e-3] = 0.0
    out = add_merger(image, companion, np.random.default_rng(0), flux_scale=0.5, shift_pix=(5, -9))
    added = out.astype(np.float64) - image
    np.testing.assert_allclose(
        added.sum(axis=(1, 2)), 0.5 * companion.sum(axis=(1, 2), dtype=np.float64), rtol=1e-6
    )
    np.testing.assert_allclose(added[:, 5:, :55], 0.5 * companion[:, :59, 9:], atol=1e-4)
    y, x = np.mgrid[:64, :64]
    centroid = [(added[0] * y).sum() / added[0].sum(), (added[0] * x).sum() / added[0].sum()]
    np.testing.assert_allclose(centroid, [31.5 + 5, 31.5 - 9], atol=1e-3)


def test_merger_shift_loses_flux_off_the_stamp_without_wrapping():
    image = np.zeros((1, 16, 16))
    companion = np.zeros((1, 16, 16))
    companion[0, 8, 14] = 1.0
    companion[0, 8, 2] = 2.0
    out = add_merger(image, companion, np.random.default_rng(0), flux_scale=1.0, shift_pix=(0, 4))
    assert out.sum() == pytest.approx(2.0)
    assert out[0, 8, 6] == 2.0


def test_default_merger_separation_is_a_fraction_of_the_half_side():
    image = np.zeros((1, 65, 65))
    companion = np.zeros((1, 65, 65))
    companion[0, 32, 32] = 1.0
    for seed in range(10):
        added = add_merger(image, companion, np.random.default_rng(seed))[0]
        y, x = np.unravel_index(added.argmax(), added.shape)
        assert 0.3 * 32 - 1 <= math.hypot(y - 32, x - 32) <= 0.6 * 32 + 1
        assert 0.3 <= added.max() <= 1.0


def test_inject_dispatches_and_refuses_what_it_cannot_do():
    image = _galaxy()
    direct = add_star(image, np.random.default_rng(3), flux=1e4)
    via = inject("star", image, np.random.default_rng(3), flux=1e4)
    np.testing.assert_array_equal(direct, via)
    with pytest.raises(ValueError, match="unknown oddity 'comet'"):
        inject("comet", image, np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs companion"):
        inject("merger", image, np.random.default_rng(0))
    with pytest.raises(ValueError, match="only used by the 'merger'"):
        inject("streak", image, np.random.default_rng(0), companion=image)


def test_bad_images_and_options_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        add_streak(np.zeros((8, 8)), rng)
    bad = np.zeros((1, 8, 8))
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        add_star(bad, rng)
    with pytest.raises(ValueError, match="low <= high"):
        add_hot_column(np.zeros((1, 8, 8)), rng, level=(60.0, 20.0))
    with pytest.raises(ValueError, match="companion has shape"):
        add_merger(np.zeros((1, 8, 8)), np.zeros((1, 9, 9)), rng)
    with pytest.raises(ValueError, match="stamp"):
        add_hot_column(np.zeros((1, 8, 8)), rng, column=8)
