"""The discretised logistic mixture against direct computations and known sums."""

from __future__ import annotations

import itertools
import math

import mpmath
import pytest
import torch
from scipy import stats

from morpho.density.logistic import (
    MIN_SCALE_LEVELS,
    LevelScale,
    discretized_gaussian_log_prob,
    discretized_logistic_log_prob,
    mixture_channels,
    mixture_log_prob,
    sample_mixture,
)

F64 = torch.float64


def _direct(k, loc: float, s: float, n_levels: int) -> torch.Tensor:
    """``σ((k+½-μ)/s) - σ((k-½-μ)/s)`` with the tails at the end levels, float64 (no care)."""
    k = torch.as_tensor(k, dtype=F64)
    upper = torch.sigmoid((k + 0.5 - loc) / s)
    lower = torch.sigmoid((k - 0.5 - loc) / s)
    upper = torch.where(k >= n_levels - 1, torch.ones_like(upper), upper)
    lower = torch.where(k <= 0, torch.zeros_like(lower), lower)
    return upper - lower


def _pack(logits, means, log_scales, coeffs=None) -> torch.Tensor:
    """Network output of one pixel, (1, P, 1, 1) float64, from its parts.

    ``logits`` (M,), ``means`` and ``log_scales`` (M, C), ``coeffs`` (M, C(C-1)/2) before the
    tanh, ordered (c, b) = (1, 0), (2, 0), (2, 1), ...: the layout the network writes.
    """
    logits, means, log_scales = (torch.as_tensor(v, dtype=F64) for v in (logits, means, log_scales))
    n_mix, n_bands = means.shape
    if coeffs is None:
        coeffs = torch.zeros(n_mix, n_bands * (n_bands - 1) // 2, dtype=F64)
    coeffs = torch.as_tensor(coeffs, dtype=F64)
    per_component = torch.cat([means, log_scales, coeffs], dim=1).reshape(-1)
    return torch.cat([logits, per_component])[None, :, None, None]


def _hand_log_prob(levels, logits, means, log_scales, coeffs, scale: LevelScale) -> float:
    """ln p of one pixel's levels (C,), by the formula of the module docstring, in plain Python."""
    weights = torch.softmax(torch.as_tensor(logits, dtype=F64), dim=0).tolist()
    n_bands = len(levels)
    z = [(k - scale.sky_level) / scale.sigma_levels for k in levels]
    total = 0.0
    for m, weight in enumerate(weights):
        p = weight
        for c in range(n_bands):
            first = c * (c - 1) // 2
            shift = sum(math.tanh(coeffs[m][first + b]) * z[b] for b in range(c))
            loc = scale.sky_level + scale.sigma_levels * (math.sinh(means[m][c]) + shift)
            s = max(scale.sigma_levels * math.exp(log_scales[m][c]), MIN_SCALE_LEVELS)
            p *= float(_direct(levels[c], loc, s, scale.n_levels))
        total += p
    return math.log(total)


def _grid(n_levels: int, n_bands: int) -> torch.Tensor:
    """Every combination of levels as (K^C, C, 1, 1) int64 images of one pixel."""
    combos = list(itertools.product(range(n_levels), repeat=n_bands))
    return torch.tensor(combos, dtype=torch.int64)[:, :, None, None]


LOCATIONS = [-40.0, -3.0, 0.0, 0.3, 127.5, 200.2, 255.0, 258.0, 400.0]
SCALES = [MIN_SCALE_LEVELS, 0.3, 1.0, 7.0, 1e3, 1e5]


@pytest.mark.parametrize("scale", SCALES)
def test_probabilities_of_all_levels_sum_to_one(scale):
    k = torch.arange(256)
    for loc in LOCATIONS:
        log_p = discretized_logistic_log_prob(
            k, torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64), 256
        )
        assert log_p.dtype == F64
        assert torch.isfinite(log_p).all(), (loc, scale)
        assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-10), (loc, scale)


@pytest.mark.parametrize("scale", SCALES)
def test_bins_match_the_direct_sigmoid_differences(scale):
    k = torch.arange(256)
    for loc in LOCATIONS:
        expected = _direct(k, loc, scale, 256)
        got = discretized_logistic_log_prob(
            k, torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64), 256
        ).exp()
        resolved = expected > 1e-6  # where the direct difference keeps 10 digits
        assert resolved.any()
        torch.testing.assert_close(got[resolved], expected[resolved], rtol=1e-9, atol=0)
        assert (got[~resolved] < 2e-6).all()


@pytest.mark.parametrize(
    ("level", "loc", "scale"),
    [(200, 0.0, 1.0), (3, 250.0, 1.0), (0, 300.0, 2.0), (255, -100.0, 3.0), (120, 100.0, 0.05)],
)
def test_far_tails_keep_full_precision(level, loc, scale):
    def sigmoid(t):
        return 1 / (1 + mpmath.exp(-t))

    with mpmath.workdps(500):  # enough digits to take 1 - σ(a) apart for a up to ~1000
        upper = 1 if level == 255 else sigmoid(mpmath.mpf(level + 0.5 - loc) / scale)
        lower = 0 if level == 0 else sigmoid(mpmath.mpf(level - 0.5 - loc) / scale)
        expected = float(mpmath.log(upper - lower))
    got = discretized_logistic_log_prob(
        torch.tensor(level), torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64), 256
    )
    assert expected < -50
    assert float(got) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("n_mix", "n_bands", "expected"), [(1, 1, 3), (5, 1, 15), (2, 2, 12), (5, 3, 50), (1, 4, 15)]
)
def test_mixture_channels_counts_weights_locations_scales_and_coefficients(
    n_mix, n_bands, expected
):
    assert mixture_channels(n_mix, n_bands) == expected


def test_wrong_channel_count_is_refused():
    scale = LevelScale(10.0, 3.0, 32)
    with pytest.raises(
        ValueError, match=r"params have 7 channels; 2 mixture components over 1 band\(s\) need 6"
    ):
        mixture_log_prob(
            torch.zeros(1, 1, 2, 2, dtype=torch.int64),
            torch.zeros(1, 7, 2, 2),
            n_mix=2,
            scale=scale,
        )


def test_one_band_mixture_is_the_logsumexp_of_its_components():
    scale = LevelScale(sky_level=12.0, sigma_levels=4.0, n_levels=32)
    logits = [0.4, -1.0, 1.3]
    means = [[0.0], [math.asinh(2.5)], [-0.7]]
    log_scales = [[-0.3], [0.5], [-10.0]]  # the last one is clamped to MIN_SCALE_LEVELS
    params = _pack(logits, means, log_scales).expand(1, -1, 1, 32)
    levels = torch.arange(32).reshape(1, 1, 1, 32)
    got = mixture_log_prob(levels, params, n_mix=3, scale=scale)
    assert got.shape == (1, 1, 32)
    expected = [_hand_log_prob([k], logits, means, log_scales, [[]] * 3, scale) for k in range(32)]
    torch.testing.assert_close(got[0, 0], torch.tensor(expected, dtype=F64), rtol=1e-10, atol=0)
    assert float(got.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    # The clamped component puts its weight on one level: level round(12 + 4 sinh(-0.7)).
    spike = round(12 + 4 * math.sinh(-0.7))
    weight = torch.softmax(torch.tensor(logits), dim=0)[2]
    assert float(got[0, 0, spike].exp()) > float(weight) * 0.999


@pytest.mark.parametrize("n_mix", [1, 3])
def test_band_coupling_follows_the_coefficients(n_mix):
    scale = LevelScale(sky_level=9.0, sigma_levels=3.0, n_levels=20)
    generator = torch.Generator().manual_seed(n_mix)
    logits = torch.randn(n_mix, generator=generator, dtype=F64).tolist()
    means = (0.5 * torch.randn(n_mix, 3, generator=generator, dtype=F64)).tolist()
    log_scales = (0.3 * torch.randn(n_mix, 3, generator=generator, dtype=F64)).tolist()
    coeffs = (1.5 * torch.randn(n_mix, 3, generator=generator, dtype=F64)).tolist()
    levels = _grid(20, 3)[::37]
    params = _pack(logits, means, log_scales, coeffs).expand(len(levels), -1, -1, -1)
    got = mixture_log_prob(levels, params, n_mix=n_mix, scale=scale)[:, 0, 0]
    expected = [
        _hand_log_prob(k[:, 0, 0].tolist(), logits, means, log_scales, coeffs, scale)
        for k in levels
    ]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=F64), rtol=1e-10, atol=0)


@pytest.mark.parametrize(("n_bands", "n_levels"), [(2, 32), (3, 10)])
def test_joint_of_all_bands_sums_to_one(n_bands, n_levels):
    # Several pixels, each its own mixture, some with locations beyond the end levels and
    # strong band coefficients: the band coupling must keep the joint normalised.
    scale = LevelScale(sky_level=n_levels / 3, sigma_levels=n_levels / 8, n_levels=n_levels)
    n_mix, pixels = 3, 5
    generator = torch.Generator().manual_seed(n_bands)
    params = torch.randn(
        1, mixture_channels(n_mix, n_bands), 1, pixels, generator=generator, dtype=F64
    )
    params[:, n_mix:] *= 2.0
    levels = _grid(n_levels, n_bands).expand(-1, -1, 1, pixels)
    log_p = mixture_log_prob(
        levels, params.expand(len(levels), -1, -1, -1), n_mix=n_mix, scale=scale
    )
    totals = log_p.exp().sum(dim=0)[0]
    torch.testing.assert_close(totals, torch.ones(pixels, dtype=F64), rtol=0, atol=1e-10)
    # The first band's marginal does not depend on the later bands' parameters.
    logits = params[0, :n_mix, 0, 0]
    marginal = log_p.exp().reshape(n_levels, -1, pixels).sum(dim=1)[:, 0]
    rest = params[0, n_mix:, 0, 0].reshape(n_mix, -1)
    first_band = sum(
        torch.softmax(logits, dim=0)[m]
        * _direct(
            torch.arange(n_levels),
            scale.sky_level + scale.sigma_levels * math.sinh(rest[m, 0]),
            max(scale.sigma_levels * math.exp(rest[m, n_bands]), MIN_SCALE_LEVELS),
            n_levels,
        )
        for m in range(n_mix)
    )
    torch.testing.assert_close(marginal, first_band, rtol=1e-9, atol=1e-14)


def _two_component_params(n: int) -> tuple[torch.Tensor, LevelScale]:
    scale = LevelScale(sky_level=20.0, sigma_levels=5.0, n_levels=64)
    params = _pack([0.3, -0.2], [[0.0], [math.asinh(4.0)]], [[-0.5], [0.2]])
    return params.expand(n, -1, -1, -1), scale


def test_sampling_with_fixed_uniforms_is_deterministic():
    params, scale = _two_component_params(50)
    uniforms = torch.rand(50, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    first = sample_mixture(params, uniforms, n_mix=2, n_bands=1, scale=scale)
    second = sample_mixture(params, uniforms.clone(), n_mix=2, n_bands=1, scale=scale)
    assert first.dtype == torch.int64
    assert first.shape == (50, 1, 1, 1)
    assert torch.equal(first, second)
    # A band uniform of ½ draws the (rounded) location of the component picked.
    uniforms[:, 1] = 0.5
    uniforms[:, 0] = torch.linspace(0.01, 0.99, 50, dtype=F64)[:, None, None]
    draws = sample_mixture(params, uniforms, n_mix=2, n_bands=1, scale=scale)[:, 0, 0, 0]
    weight_0 = float(torch.softmax(torch.tensor([0.3, -0.2]), dim=0)[0])
    expected = torch.where(uniforms[:, 0, 0, 0] <= weight_0, 20, 40)
    assert torch.equal(draws, expected)


def test_histogram_of_draws_matches_the_probabilities():
    n = 200_000
    params, scale = _two_component_params(n)
    uniforms = torch.rand(n, 2, 1, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    draws = sample_mixture(params, uniforms, n_mix=2, n_bands=1, scale=scale).flatten()
    frequencies = torch.bincount(draws, minlength=64).double() / n
    levels = torch.arange(64).reshape(1, 1, 1, 64)
    probabilities = (
        mixture_log_prob(levels, params[:1].expand(1, -1, 1, 64), n_mix=2, scale=scale)
        .exp()
        .flatten()
    )
    assert (frequencies - probabilities).abs().max() < 0.003
    counted = probabilities * n > 5
    chi2 = float((((frequencies - probabilities) * n) ** 2 / (probabilities * n))[counted].sum())
    dof = int(counted.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


def test_second_band_is_drawn_given_the_first_as_the_coefficients_say():
    scale = LevelScale(sky_level=10.0, sigma_levels=4.0, n_levels=40)
    n = 30
    uniforms = torch.full((n, 3, 1, 1), 0.5, dtype=F64)
    uniforms[:, 1] = torch.linspace(0.002, 0.998, n, dtype=F64)[:, None, None]
    for alpha in (0.8, -0.5, 0.0):
        params = _pack([0.0], [[0.1, 0.3]], [[0.0, -1.0]], [[math.atanh(alpha)]]).expand(
            n, -1, -1, -1
        )
        draws = sample_mixture(params, uniforms, n_mix=1, n_bands=2, scale=scale)[:, :, 0, 0]
        first, second = draws[:, 0], draws[:, 1]
        assert len(first.unique()) > 10
        loc = 10.0 + 4.0 * (math.sinh(0.3) + alpha * (first.double() - 10.0) / 4.0)
        assert torch.equal(second, torch.floor(loc + 0.5).clamp(0, 39).long()), alpha
        assert (len(second.unique()) == 1) == (alpha == 0.0)


def test_joint_histogram_of_two_bands_matches_the_probabilities():
    scale = LevelScale(sky_level=6.0, sigma_levels=2.0, n_levels=16)
    n = 200_000
    params = _pack(
        [0.2, -0.4], [[0.0, 0.2], [1.0, -0.3]], [[0.0, -0.3], [-0.5, 0.1]], [[1.0], [-0.8]]
    )
    uniforms = torch.rand(n, 3, 1, 1, generator=torch.Generator().manual_seed(2), dtype=F64)
    draws = sample_mixture(params.expand(n, -1, -1, -1), uniforms, n_mix=2, n_bands=2, scale=scale)
    cells = draws[:, 0, 0, 0] * 16 + draws[:, 1, 0, 0]
    frequencies = torch.bincount(cells, minlength=256).double() / n
    grid = _grid(16, 2)
    probabilities = (
        mixture_log_prob(grid, params.expand(256, -1, -1, -1), n_mix=2, scale=scale).exp().flatten()
    )
    assert (frequencies - probabilities).abs().max() < 0.003
    counted = probabilities * n > 5
    chi2 = float((((frequencies - probabilities) * n) ** 2 / (probabilities * n))[counted].sum())
    dof = int(counted.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


# The Gaussian components: the same contract as the logistic ones, against scipy and mpmath.


def _direct_gaussian(k, loc: float, s: float, n_levels: int) -> torch.Tensor:
    """``Φ((k+½-μ)/s) - Φ((k-½-μ)/s)`` with the tails at the end levels (scipy, float64)."""
    k = torch.as_tensor(k, dtype=F64).numpy()
    upper = stats.norm.cdf((k + 0.5 - loc) / s)
    lower = stats.norm.cdf((k - 0.5 - loc) / s)
    upper[k >= n_levels - 1] = 1.0
    lower[k <= 0] = 0.0
    return torch.as_tensor(upper - lower)


@pytest.mark.parametrize("scale", SCALES)
def test_gaussian_probabilities_sum_to_one_and_match_scipy(scale):
    k = torch.arange(256)
    for loc in LOCATIONS:
        log_p = discretized_gaussian_log_prob(
            k, torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64), 256
        )
        assert torch.isfinite(log_p).all(), (loc, scale)
        assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-10), (loc, scale)
        expected = _direct_gaussian(k, loc, scale, 256)
        resolved = expected > 1e-6
        assert resolved.any()
        torch.testing.assert_close(log_p.exp()[resolved], expected[resolved], rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    ("level", "loc", "scale"),
    [(200, 0.0, 1.0), (3, 250.0, 1.0), (0, 300.0, 2.0), (255, -100.0, 3.0), (120, 100.0, 0.05)],
)
def test_gaussian_far_tails_keep_full_precision(level, loc, scale):
    def cdf(t):  # Φ(t) through erfc, exact in the lower tail
        return mpmath.erfc(-t / mpmath.sqrt(2)) / 2

    with mpmath.workdps(60):
        a = mpmath.mpf(level + 0.5 - loc) / scale
        b = mpmath.mpf(level - 0.5 - loc) / scale
        if level > loc:  # the upper tail: P = Φ(-b) - Φ(-a), without 1 - Φ's cancellation
            a, b = -b, -a
            lower_end, upper_end = level == 255, level == 0
        else:
            lower_end, upper_end = level == 0, level == 255
        above = 1 if upper_end else cdf(a)
        below = 0 if lower_end else cdf(b)
        expected = float(mpmath.log(above - below))
    got = discretized_gaussian_log_prob(
        torch.tensor(level), torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64), 256
    )
    assert expected < -50
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_gaussian_mixture_is_the_logsumexp_of_its_components():
    scale = LevelScale(sky_level=12.0, sigma_levels=4.0, n_levels=32)
    logits = [0.4, -1.0]
    means, log_scales = [[0.0], [math.asinh(2.5)]], [[-0.3], [0.5]]
    params = _pack(logits, means, log_scales).expand(1, -1, 1, 32)
    levels = torch.arange(32).reshape(1, 1, 1, 32)
    got = mixture_log_prob(levels, params, n_mix=2, scale=scale, component="gaussian")[0, 0]
    weights = torch.softmax(torch.tensor(logits, dtype=F64), dim=0)
    expected = sum(
        weights[m]
        * _direct_gaussian(
            torch.arange(32),
            12.0 + 4.0 * math.sinh(means[m][0]),
            4.0 * math.exp(log_scales[m][0]),
            32,
        )
        for m in range(2)
    )
    torch.testing.assert_close(got.exp(), expected, rtol=1e-9, atol=0)
    logistic = mixture_log_prob(levels, params, n_mix=2, scale=scale)[0, 0]
    assert (got - logistic).abs().max() > 0.05  # the component shape matters


def test_gaussian_draws_follow_the_probabilities():
    n = 200_000
    params, scale = _two_component_params(n)
    uniforms = torch.rand(n, 2, 1, 1, generator=torch.Generator().manual_seed(2), dtype=F64)
    draws = sample_mixture(
        params, uniforms, n_mix=2, n_bands=1, scale=scale, component="gaussian"
    ).flatten()
    frequencies = torch.bincount(draws, minlength=64).double() / n
    levels = torch.arange(64).reshape(1, 1, 1, 64)
    log_p = mixture_log_prob(
        levels, params[:1].expand(1, -1, 1, 64), n_mix=2, scale=scale, component="gaussian"
    )
    probabilities = log_p.exp().flatten()
    counted = probabilities * n > 5
    chi2 = float((((frequencies - probabilities) * n) ** 2 / (probabilities * n))[counted].sum())
    dof = int(counted.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


def test_unknown_component_is_refused():
    params, scale = _two_component_params(1)
    levels = torch.zeros(1, 1, 1, 1, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"component must be one of .*got 'laplace'"):
        mixture_log_prob(levels, params, n_mix=2, scale=scale, component="laplace")
    with pytest.raises(ValueError, match="component must be one of"):
        sample_mixture(
            params, torch.rand(1, 2, 1, 1), n_mix=2, n_bands=1, scale=scale, component="laplace"
        )
