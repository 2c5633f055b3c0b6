"""The quantizer: exact inversion, the simulated ADC, clipping and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morpho.data.simulate.noise import NoiseModel
from morpho.density.quantize import Quantizer


def _flux(seed: int, shape=(4, 2, 16, 16), *, low: float = -30.0, high: float = 200.0):
    """Uniform flux in [low, high), float64, fresh each call."""
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize(("offset", "step"), [(-30.0, 1.0), (-17.3, 0.37), (5.0, 2.5)])
def test_round_trip_is_exact_to_half_a_step(offset, step):
    quantizer = Quantizer(offset=offset, step=step, n_levels=4096)
    lo, hi = quantizer.flux_range
    x = _flux(0, low=lo, high=hi)
    quantized = quantizer.quantize(x)
    assert quantized.levels.dtype == torch.int64
    assert quantized.clipped_low == quantized.clipped_high == 0.0
    back = quantizer.dequantize(quantized.levels)
    assert back.dtype == torch.float32
    error = (back.double() - x).abs()
    # Half a step, plus the float32 rounding of the dequantised flux.
    assert error.max() <= step / 2 + 1e-6 * max(abs(lo), abs(hi))
    # The error reaches almost half a step, and has no systematic shift.
    assert error.max() > 0.45 * step
    assert abs(float((back.double() - x).mean())) < 0.02 * step


def test_levels_of_the_flux_of_each_level_are_that_level():
    quantizer = Quantizer(offset=-17.3, step=0.37, n_levels=300)
    levels = torch.arange(300).reshape(1, 1, 3, 100)
    assert torch.equal(quantizer.quantize(quantizer.dequantize(levels)).levels, levels)


def test_default_quantizer_is_the_simulated_adc():
    noise = NoiseModel(sky_level=30.0, read_noise=3.0, gain=1.0)
    quantizer = Quantizer(offset=-noise.sky_level, step=1.0)
    rng = np.random.default_rng(1)
    noiseless = rng.uniform(0.0, 500.0, size=(3, 1, 24, 24))
    noisy = noise.sample(noiseless, rng)
    # Also exact half-integers (ties), where floor(x + b + 1/2) and rounding differ.
    ties = np.arange(-29.5, 40.0, 0.5).reshape(1, 1, 1, -1)
    for x in (noisy, ties, rng.uniform(-30.0, 3000.0, size=(2, 3, 8, 8))):
        expected = noise.quantize(x)
        assert torch.equal(quantizer.quantize(x).levels, torch.as_tensor(expected))


def test_clipped_fractions_are_counted_and_clipped_to_the_end_levels():
    quantizer = Quantizer(offset=-30.0, step=1.0, n_levels=256)
    x = torch.zeros(1, 1, 10, 10)
    x.view(-1)[:3] = torch.tensor([-31.0, -1000.0, -30.5001])  # 3 below
    x.view(-1)[3:8] = torch.tensor([226.0, 1e6, 225.5, 300.0, 230.0])  # 5 above
    x.view(-1)[8:10] = torch.tensor([-30.5, 225.49])  # on the edge: not clipped
    quantized = quantizer.quantize(x)
    assert quantized.clipped_low == pytest.approx(0.03)
    assert quantized.clipped_high == pytest.approx(0.05)
    assert quantized.clipped_fraction == pytest.approx(0.08)
    flat = quantized.levels.view(-1)
    assert flat[:3].tolist() == [0, 0, 0]
    assert flat[3:8].tolist() == [255] * 5
    assert flat[8:10].tolist() == [0, 255]
    assert (flat[10:] == 30).all()


def test_strict_refuses_clipping_and_names_the_range():
    quantizer = Quantizer(offset=-30.0, step=1.0, n_levels=256)
    x = torch.zeros(1, 1, 4, 4)
    assert quantizer.quantize(x, strict=True).clipped_fraction == 0.0
    x[0, 0, 0, 0] = 1000.0
    with pytest.raises(ValueError, match=r"6\.250% .*above the quantisation range \[-30, 225\]"):
        quantizer.quantize(x, strict=True)
    x[0, 0, 0, 0] = -40.0
    with pytest.raises(ValueError, match=r"6\.250% of pixels are below.*raise n_levels"):
        quantizer.quantize(x, strict=True)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_pixels_are_refused(bad):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        Quantizer().quantize(x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": 0.0}, "step must be a positive"),
        ({"step": -1.0}, "step must be a positive"),
        ({"step": math.nan}, "step must be a positive"),
        ({"offset": math.inf}, "offset must be finite"),
        ({"n_levels": 1}, "n_levels must be an integer >= 2"),
        ({"n_levels": 2.5}, "n_levels must be an integer >= 2"),
        ({"background_sigma": 0.0}, "background_sigma must be > 0"),
        ({"background_sigma": math.nan}, "background_sigma must be > 0"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Quantizer(**kwargs)


def test_check_levels_refuses_floats_bools_and_out_of_range():
    quantizer = Quantizer(n_levels=16)
    quantizer.check_levels(torch.tensor([0, 15]))
    quantizer.check_levels(torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"known must be integers, got torch\.float32"):
        quantizer.check_levels(torch.tensor([1.0]), name="known")
    with pytest.raises(ValueError, match=r"must be integers, got torch\.bool"):
        quantizer.check_levels(torch.tensor([True]))
    with pytest.raises(
        ValueError, match=r"span \[-1, 3\], outside the quantisation range \[0, 15\]"
    ):
        quantizer.check_levels(torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match=r"span \[0, 16\]"):
        quantizer.dequantize(torch.tensor([0, 16]))


def test_network_input_is_zero_at_the_sky_and_asinh_of_sigmas():
    quantizer = Quantizer(offset=-15.0, step=0.5, n_levels=1024, background_sigma=6.0)
    assert quantizer.sky_level == 30.0
    assert quantizer.sigma_levels == 12.0
    levels = torch.tensor([30, 42, 18, 30 + 12 * 100])
    got = quantizer.network_input(levels, dtype=torch.float64)
    expected = [0.0, math.asinh(1.0), -math.asinh(1.0), math.asinh(100.0)]
    assert got[0] == 0.0
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-15, atol=0)
    assert quantizer.network_input(levels).dtype == torch.float32
    # The sky of flux images quantises to the sky level.
    assert int(quantizer.quantize(torch.zeros(1, 1, 1, 1)).levels) == 30
    scale = quantizer.level_scale
    assert (scale.sky_level, scale.sigma_levels, scale.n_levels) == (30.0, 12.0, 1024)


def test_clipped_fraction_of_each_image():
    quantizer = Quantizer(offset=-30.0, step=1.0, n_levels=256)
    x = torch.zeros(3, 1, 10, 10)
    x[1].view(-1)[:4] = 1e6  # 4 of 100 pixels above the top level
    x[2].view(-1)[:10] = -1e3  # 10 below
    quantized = quantizer.quantize(x)
    assert quantized.clipped_per_image.tolist() == pytest.approx([0.0, 0.04, 0.10])
