"""The PixelCNN network: causal in raster order (tested by gradients), with no blind spot."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from morpho.density.logistic import (
    MIN_SCALE_LEVELS,
    discretized_logistic_log_prob,
    mixture_channels,
    mixture_log_prob,
)
from morpho.density.quantize import Quantizer
from morpho.nets.pixelcnn import PixelCNN, ShiftedConv2d

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
SIZE = 8


def _net(n_bands: int, **kwargs) -> PixelCNN:
    torch.manual_seed(0)
    options = {"channels": 6, "n_blocks": 2, "n_mix": 2, "dilations": [1, 2], **kwargs}
    return PixelCNN(in_channels=n_bands, **options).double().eval()


def _dependencies(net: PixelCNN, x: torch.Tensor, **conditioning) -> torch.Tensor:
    """(H, W, H, W) bool: whether any output at (i, j) has a non-zero gradient w.r.t. any band
    of input pixel (k, l). Each output pixel's channels are projected on a random vector,
    so that no dependence cancels."""
    _, _, h, w = x.shape
    x = x.clone().requires_grad_(True)
    out = net(x, **conditioning)
    weights = torch.randn(out.shape[1], generator=torch.Generator().manual_seed(1), dtype=F64)
    found = torch.zeros(h, w, h, w, dtype=torch.bool)
    for i, j in itertools.product(range(h), range(w)):
        (grad,) = torch.autograd.grad(out[0, :, i, j] @ weights, x, retain_graph=True)
        found[i, j] = grad[0].abs().amax(dim=0) > 0
    return found


@pytest.mark.parametrize(("n_bands", "linear_predictor"), [(1, False), (3, False), (2, True)])
def test_output_depends_only_on_earlier_pixels_and_on_all_nearby_ones(n_bands, linear_predictor):
    net = _net(n_bands, linear_predictor=linear_predictor)
    x = torch.randn(1, n_bands, SIZE, SIZE, generator=torch.Generator().manual_seed(0), dtype=F64)
    found = _dependencies(net, x)
    raster = torch.arange(SIZE * SIZE).reshape(SIZE, SIZE)
    for i, j in itertools.product(range(SIZE), range(SIZE)):
        later = raster >= raster[i, j]
        assert not found[i, j][later].any(), f"output at {(i, j)} sees pixel (i, j) or later"
        # Every earlier pixel of the three rows above within ±3 columns, and the three to
        # the left: no blind spot above-right, whatever the depth.
        near = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        near[max(i - 3, 0) : i, max(j - 3, 0) : j + 4] = True
        near[i, max(j - 3, 0) : j] = True
        missing = (near & ~found[i, j]).nonzero().tolist()
        assert not missing, f"output at {(i, j)} does not see {missing}"
    # The first pixel sees nothing; the last sees the whole row to its left, five pixels.
    assert not found[0, 0].any()
    assert found[SIZE - 1, SIZE - 1, SIZE - 1].tolist() == [False, False] + [True] * 5 + [False]


def _neighbour_mean(levels: torch.Tensor, quantizer: Quantizer) -> torch.Tensor:
    """The mean of the pixel above and the pixel to the left (zeros outside), in background σ."""
    z = (levels.double() - quantizer.sky_level) / quantizer.sigma_levels
    above = F.pad(z, (0, 0, 1, 0))[:, :, :-1]
    left = F.pad(z, (1, 0))[:, :, :, :-1]
    return (above + left) / 2


def test_linear_predictor_starts_as_the_neighbour_baseline():
    # With the blocks' location outputs at zero, every component's location is the sky
    # plus the mean of the pixel above and the pixel to the left (zeros outside the
    # image), in levels; the scales and weights are those of the plain network.
    quantizer = Quantizer(offset=-30.0, step=1.0, n_levels=4096, background_sigma=6.0)
    plain, predicting = _net(1), _net(1, linear_predictor=True)
    for net in (plain, predicting):
        with torch.no_grad():
            net.out.weight.zero_()
            net.out.bias.copy_(torch.linspace(-0.5, 0.5, net.out.bias.numel()))
            net.out.bias[[2, 4]] = 0.0  # per component (m̂, ŝ) after the 2 weights
    generator = torch.Generator().manual_seed(7)
    levels = torch.randint(0, 2000, (2, 1, 5, 6), generator=generator)
    x = quantizer.network_input(levels, dtype=F64)
    with torch.no_grad():
        moved, still = predicting(x), plain(x)
    expected = torch.asinh(_neighbour_mean(levels, quantizer))
    for channel in (2, 4):
        torch.testing.assert_close(moved[:, channel], expected[:, 0], rtol=1e-12, atol=1e-12)
        assert not still[:, channel].any()
    for channel in (0, 1, 3, 5):
        torch.testing.assert_close(moved[:, channel], still[:, channel])


def test_linear_predictor_runs_in_float32_under_bfloat16_autocast():
    # Bright pixels (up to 3000 levels, z up to 480 background σ): the prediction must
    # keep float32's 24 bits, where bfloat16's 8 would put it off by a σ or more.
    quantizer = Quantizer(offset=-30.0, step=1.0, n_levels=65536, background_sigma=6.245)
    torch.manual_seed(0)
    net = PixelCNN(channels=8, n_blocks=2, n_mix=2, dilations=[1, 2], linear_predictor=True)
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
    levels = 30 + torch.randint(0, 3000, (1, 1, 8, 8), generator=torch.Generator().manual_seed(8))
    x = quantizer.network_input(levels)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        params = net.eval()(x)
    assert params.dtype == torch.float32
    location = torch.sinh(params[:, 2].double())  # component 0's, in background σ
    assert float((location - _neighbour_mean(levels, quantizer)[:, 0]).abs().max()) < 1e-3


def test_dilated_up_stream_sees_further_up():
    # The up stream reaches 2 rows up at its input and d more per convolution (two per
    # block); the up-left stream's last convolution, fed the up stream, one more:
    # 2 + 2 + 2 + 1 = 7 rows undilated, 2 + 2 + 4 + 1 = 9 with dilations [1, 2].
    x = torch.randn(1, 1, 12, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    plain = _dependencies(_net(1, dilations=[1]), x)
    dilated = _dependencies(_net(1, dilations=[1, 2]), x)
    assert dilated[11, 2, 11 - 9].any()
    assert not dilated[11, 2, : 11 - 9].any()
    assert plain[11, 2, 11 - 7].any()
    assert not plain[11, 2, : 11 - 7].any()


def test_no_band_of_the_current_pixel_reaches_its_own_mixture():
    # Set the three bands of pixel (i, j) to every combination of K levels: the network's
    # mixture at (i, j) must not change, so the pixel's joint over its bands sums to one,
    # and band c's conditional law changes with the earlier bands b < c only.
    n_levels, n_bands, (i, j) = 8, 3, (3, 4)
    quantizer = Quantizer(offset=-3.0, step=1.0, n_levels=n_levels, background_sigma=1.5)
    net = _net(n_bands)
    with torch.no_grad():
        net.out.weight *= 4.0  # strong coefficients between bands
    generator = torch.Generator().manual_seed(3)
    image = torch.randint(0, n_levels, (1, n_bands, 6, 6), generator=generator)
    combos = torch.tensor(list(itertools.product(range(n_levels), repeat=n_bands)))
    levels = image.repeat(len(combos), 1, 1, 1)
    levels[:, :, i, j] = combos
    with torch.no_grad():
        params = net(quantizer.network_input(levels, dtype=F64))
        log_p = mixture_log_prob(levels, params, n_mix=2, scale=quantizer.level_scale)
    assert params.shape == (len(combos), mixture_channels(2, n_bands), 6, 6)
    assert (params[:, :, i, j] == params[:1, :, i, j]).all()
    joint = log_p[:, i, j].exp().reshape(n_levels, n_levels, n_levels)
    assert float(joint.sum()) == pytest.approx(1.0, abs=1e-10)
    # The first band's law is the mixture of its own logistics, whatever the later bands.
    n_mix, sky, sigma = 2, quantizer.sky_level, quantizer.sigma_levels
    pixel = params[0, :, i, j]
    rest = pixel[n_mix:].reshape(n_mix, -1)  # per component: m̂ (C), ŝ (C), coefficients
    locations = sky + sigma * torch.sinh(rest[:, 0])
    scales = (sigma * torch.exp(rest[:, n_bands])).clamp_min(MIN_SCALE_LEVELS)
    weights = torch.softmax(pixel[:n_mix], dim=0)
    k = torch.arange(n_levels)
    first = sum(
        weights[m] * discretized_logistic_log_prob(k, locations[m], scales[m], n_levels).exp()
        for m in range(n_mix)
    )
    torch.testing.assert_close(joint.sum(dim=(1, 2)), first, rtol=1e-10, atol=1e-15)
    # Conditional laws p(k_c | k_<c), by summing the joint over the later bands: each
    # changes with every earlier band.
    second = joint.sum(dim=2) / joint.sum(dim=(1, 2))[:, None]  # [k0, k1]
    third = joint / joint.sum(dim=2, keepdim=True)  # [k0, k1, k2]
    for a, b in ((second[2], second[5]), (third[2, 3], third[5, 3]), (third[2, 3], third[2, 6])):
        assert (a - b).abs().max() > 0.05


def test_conditioning_changes_the_output():
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(4), dtype=F64)
    labelled = _net(1, n_classes=3)
    with torch.no_grad():
        a = labelled(x, labels=torch.tensor([0, 1]))
        b = labelled(x, labels=torch.tensor([2, 1]))
    assert (a[0] - b[0]).abs().max() > 1e-3
    assert torch.equal(a[1], b[1])
    vectored = _net(1, condition_dim=4)
    vectors = torch.randn(2, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    with torch.no_grad():
        a = vectored(x, vectors=vectors)
        b = vectored(x, vectors=vectors + torch.tensor([[1.0], [0.0]], dtype=F64))
    assert (a[0] - b[0]).abs().max() > 1e-3
    assert torch.equal(a[1], b[1])


def test_wrong_conditioning_is_refused():
    x = torch.zeros(1, 1, 4, 4, dtype=F64)
    with pytest.raises(ValueError, match="conditioned on 3 class labels: pass labels"):
        _net(1, n_classes=3)(x)
    vectored = _net(1, condition_dim=4)
    with pytest.raises(ValueError, match=r"vectors of width 4; got None"):
        vectored(x)
    with pytest.raises(ValueError, match=r"vectors of width 4; got \(1, 5\)"):
        vectored(x, vectors=torch.zeros(1, 5, dtype=F64))
    with pytest.raises(ValueError, match="not conditioned"):
        _net(1)(x, labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="not conditioned"):
        _net(1)(x, vectors=torch.zeros(1, 4, dtype=F64))


def test_bad_shapes_and_sizes_are_refused():
    with pytest.raises(ValueError, match="kind must be 'down' or 'down_right', got 'up'"):
        ShiftedConv2d(1, 1, (2, 3), kind="up")
    with pytest.raises(ValueError, match="odd kernel width, got 2"):
        ShiftedConv2d(1, 1, (2, 2), kind="down")
    with pytest.raises(ValueError, match="must all be >= 1"):
        PixelCNN(n_blocks=0)


@pytest.mark.parametrize(
    ("kernel", "kind", "shift", "dilation"),
    [((2, 3), "down", (1, 0), 1), ((2, 3), "down", (0, 0), 2), ((2, 2), "down_right", (0, 1), 1)],
)
def test_shifted_convolution_reads_the_documented_window(kernel, kind, shift, dilation):
    torch.manual_seed(6)
    layer = ShiftedConv2d(2, 3, kernel, kind=kind, shift=shift, dilation=dilation).double()
    x = torch.randn(1, 2, 7, 9, generator=torch.Generator().manual_seed(7), dtype=F64)
    rows, cols = layer.window
    padded = F.pad(x, (cols, cols, rows, rows))  # zeros outside the image
    out = layer(x)
    assert out.shape == (1, 3, 7, 9)
    for i, j in itertools.product(range(7), range(9)):
        top, left = i - layer.top + rows, j - layer.left + cols
        window = padded[:, :, top : top + rows, left : left + cols]
        torch.testing.assert_close(
            out[:, :, i, j], layer.conv(window)[:, :, 0, 0], rtol=1e-12, atol=1e-14
        )


def test_mixed_precision_keeps_the_likelihood_of_bright_pixels():
    """Under bfloat16 autocast the input and output layers stay float32, so the mixture of
    a bright galaxy (peak 2000 levels above a sky of 100, σ 10 levels) keeps its float32
    log-probabilities to 0.02 nats per pixel on average; the blocks alone run in bfloat16
    (without the float32 ends, bfloat16 locations sinh(m̂) and levels would be off by
    several σ on the brightest pixels)."""
    torch.manual_seed(0)
    net = PixelCNN(in_channels=1, channels=16, n_blocks=2, n_mix=3).eval()
    quantizer = Quantizer(offset=-100.0, step=1.0, n_levels=65536, background_sigma=10.0)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    flux = 2000 * torch.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 8) + 10 * torch.randn(16, 16)
    levels = quantizer.quantize(flux[None, None]).levels
    x = quantizer.network_input(levels)

    def log_prob():
        params = net(x)
        assert params.dtype == torch.float32
        return mixture_log_prob(levels, params, n_mix=3, scale=quantizer.level_scale)

    with torch.no_grad():
        exact = log_prob()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = log_prob()
            assert net.u_blocks[0](net.u_in(x)).dtype == torch.bfloat16  # the blocks: bf16
    assert (levels > 1000).sum() > 5
    error = (mixed - exact).abs()
    # Measured: 0.006 mean and 0.13 largest; 0.077 and 1.47 with the whole net in bfloat16.
    assert error.mean() < 0.02
    assert error.max() < 0.3
