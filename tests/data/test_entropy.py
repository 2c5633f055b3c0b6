"""The exact noise-entropy floor against closed forms and Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from morpho.data.entropy import noise_entropy_bits, pixel_entropy_bits, rate_entropy_bits
from morpho.data.simulate import NoiseModel


@pytest.mark.parametrize("rate", [0.5, 3.0, 30.0, 700.0])
def test_no_read_noise_unit_gain_is_the_poisson_entropy(rate):
    expected = stats.poisson(rate).entropy() / np.log(2)
    assert rate_entropy_bits(np.array([rate]), read_noise=0.0, gain=1.0)[0] == pytest.approx(
        expected, abs=1e-6
    )


def test_large_rates_reach_the_gaussian_limit():
    rate, read_noise, gain = 5e4, 3.0, 1.0
    limit = 0.5 * np.log2(2 * np.pi * np.e * (rate + read_noise**2) / gain**2)
    assert rate_entropy_bits(np.array([rate]), read_noise=read_noise, gain=gain)[0] == (
        pytest.approx(limit, abs=2e-5)
    )


@pytest.mark.parametrize(("sky", "read_noise", "gain"), [(30.0, 3.0, 1.0), (12.0, 5.0, 2.5)])
def test_entropy_matches_a_monte_carlo_estimate(sky, read_noise, gain):
    noise = NoiseModel(sky_level=sky, read_noise=read_noise, gain=gain)
    noiseless = np.array([0.0, 20.0, 400.0])
    rng = np.random.default_rng(0)
    draws = noise.quantize(noise.sample(np.repeat(noiseless[None], 400_000, axis=0), rng))
    plug_in = []
    for column in draws.T:
        _, counts = np.unique(column, return_counts=True)
        p = counts / counts.sum()
        # Miller-Madow bias correction of the plug-in estimate.
        plug_in.append(-(p * np.log2(p)).sum() + (len(p) - 1) / (2 * len(column) * np.log(2)))
    exact = pixel_entropy_bits(noiseless, sky_level=sky, read_noise=read_noise, gain=gain)
    assert exact == pytest.approx(plug_in, abs=0.004)


def test_image_entropy_is_the_mean_over_pixels():
    noiseless = np.array([[0.0, 10.0], [100.0, 1000.0]])
    per_pixel = pixel_entropy_bits(noiseless, sky_level=30.0, read_noise=3.0, gain=1.0)
    assert noise_entropy_bits(noiseless, sky_level=30.0, read_noise=3.0, gain=1.0) == (
        pytest.approx(per_pixel.mean())
    )
    assert np.all(np.diff(per_pixel.ravel()) > 0)  # brighter pixels are noisier


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="NaN or inf"):
        noise_entropy_bits(np.array([np.nan]), sky_level=1.0, read_noise=1.0, gain=1.0)
    with pytest.raises(ValueError, match="gain > 0"):
        rate_entropy_bits(np.array([1.0]), read_noise=1.0, gain=0.0)
