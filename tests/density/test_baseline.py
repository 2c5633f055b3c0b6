"""The neighbour-mean Gaussian baseline against closed forms and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from morpho.density.baseline import NeighbourGaussian, discretized_gaussian_log_prob

N_LEVELS = 4096
LEVEL, SIGMA = 1000, 5.0


def _noise_images(seed: int, shape=(120, 2, 32, 32)) -> np.ndarray:
    """Integer levels: i.i.d. Gaussian noise of σ = 5 levels around level 1000, rounded."""
    rng = np.random.default_rng(seed)
    return np.floor(LEVEL + SIGMA * rng.standard_normal(shape) + 0.5).astype(np.int64)


@pytest.fixture(scope="module")
def fitted() -> NeighbourGaussian:
    """A model fitted on 120 noise images (read-only)."""
    return NeighbourGaussian(n_levels=N_LEVELS).fit(_noise_images(0))


@pytest.mark.parametrize(("mean", "sigma"), [(3.3, 1.7), (0.0, 0.05), (-4.0, 2.0), (12.5, 30.0)])
def test_probabilities_of_all_levels_sum_to_one(mean, sigma):
    k = np.arange(10)
    p = np.exp(discretized_gaussian_log_prob(k, mean, sigma, 10))
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_bins_match_the_normal_cdf_and_edges_take_the_tails():
    k, mean, sigma = np.arange(6), 2.2, 1.3
    cdf = stats.norm(mean, sigma).cdf
    expected = cdf(k + 0.5) - cdf(k - 0.5)
    expected[0], expected[-1] = cdf(0.5), 1 - cdf(4.5)
    log_p = discretized_gaussian_log_prob(k, mean, sigma, 6)
    np.testing.assert_allclose(np.exp(log_p), expected, rtol=1e-12)


@pytest.mark.parametrize("z", [8.0, 40.0, 99.5])
def test_far_tails_keep_full_precision_on_both_sides(z):
    # ∫_z^{z+1} φ = φ(z) ∫_0^1 exp(-z s - s²/2) ds, integrated directly.
    integral, _ = integrate.quad(lambda s: math.exp(-z * s - s * s / 2), 0.0, 1.0)
    expected = -z * z / 2 - 0.5 * math.log(2 * math.pi) + math.log(integral)
    upper = discretized_gaussian_log_prob(np.array([100]), 99.5 - z, 1.0, 1000)
    lower = discretized_gaussian_log_prob(np.array([899]), 899.5 + z, 1.0, 1000)
    assert upper[0] == pytest.approx(expected, rel=1e-12)
    assert lower[0] == pytest.approx(expected, rel=1e-12)


def test_fitted_sigma_is_the_neighbour_residual_sigma(fitted):
    # Interior residuals k - (left + up)/2 have variance 1.5 s²; the first row and
    # column 2 s², the first pixel s². The ML σ² is their mean over the image.
    h = w = 32
    mixture = (1.5 * (h - 1) * (w - 1) + 2 * (h + w - 2) + 1) / (h * w)
    np.testing.assert_allclose(fitted.sigma_, SIGMA * math.sqrt(1.5), rtol=0.03)
    np.testing.assert_allclose(fitted.sigma_, SIGMA * math.sqrt(mixture), rtol=0.01)
    np.testing.assert_array_equal(fitted.first_level_, [LEVEL, LEVEL])


def test_bits_per_dim_is_the_entropy_of_the_fitted_gaussian(fitted):
    test = _noise_images(1, shape=(40, 2, 32, 32))
    k = np.arange(-200, 201) + LEVEL
    entropy = []
    for sigma in fitted.sigma_:
        log_p = discretized_gaussian_log_prob(k, float(LEVEL), sigma, N_LEVELS)
        entropy.append(-(np.exp(log_p) * log_p).sum() / math.log(2))
    assert fitted.bits_per_dim(test).mean() == pytest.approx(np.mean(entropy), abs=0.01)


def test_log_prob_matches_a_pixel_by_pixel_reference():
    rng = np.random.default_rng(3)
    levels = rng.integers(0, 8, size=(2, 1, 3, 4))
    model = NeighbourGaussian(n_levels=8, first_level=2.5).fit(levels)
    x, sigma = levels[:, 0].astype(float), model.sigma_[0]
    expected = np.zeros(2)
    for n in range(2):
        for i in range(3):
            for j in range(4):
                neighbours = [x[n, i - 1, j]] * (i > 0) + [x[n, i, j - 1]] * (j > 0)
                mean = np.mean(neighbours) if neighbours else 2.5
                expected[n] += discretized_gaussian_log_prob(levels[n, 0, i, j], mean, sigma, 8)
    np.testing.assert_allclose(model.log_prob(levels), expected, rtol=1e-12)
    np.testing.assert_allclose(
        model.bits_per_dim(levels), -expected / (12 * math.log(2)), rtol=1e-12
    )
    assert model.first_level_.tolist() == [2.5]


def test_fit_returns_self_and_init_only_stores():
    model = NeighbourGaussian(n_levels=1)
    assert model.n_levels == 1
    assert not hasattr(model, "sigma_")
    with pytest.raises(ValueError, match="n_levels"):
        model.fit(np.zeros((1, 1, 2, 2), dtype=np.int64))
    levels = _noise_images(2, shape=(2, 1, 8, 8))
    fresh = NeighbourGaussian(n_levels=N_LEVELS)
    assert fresh.fit(levels) is fresh


def test_bad_input_is_refused(fitted):
    good = _noise_images(4, shape=(1, 2, 8, 8))
    with pytest.raises(TypeError, match="integer"):
        fitted.log_prob(good.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        fitted.log_prob(good[0])
    bad = good.copy()
    bad[0, 0, 0, 0], bad[0, 1, 0, 0] = -3, N_LEVELS
    with pytest.raises(ValueError, match=f"min -3 and max {N_LEVELS}"):
        fitted.log_prob(bad)
    with pytest.raises(ValueError, match="bands"):
        fitted.log_prob(good[:, :1])
    with pytest.raises(RuntimeError, match="not fitted"):
        NeighbourGaussian(n_levels=N_LEVELS).log_prob(good)
    with pytest.raises(ValueError, match="sigma"):
        discretized_gaussian_log_prob(np.array([1]), 0.0, 0.0, 4)
