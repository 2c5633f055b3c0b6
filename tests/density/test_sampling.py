"""The cached sampler draws exactly what the naive one draws, and completion keeps known pixels."""

from __future__ import annotations

import pytest
import torch

from morpho.density.quantize import Quantizer
from morpho.density.sampling import cached_sample, draw_uniforms, naive_sample
from morpho.nets.pixelcnn import PixelCNN

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
HEIGHT, WIDTH = 5, 7  # not square, so that rows and columns cannot be swapped unnoticed
# A wide background σ in levels: a level is then nearly the continuous draw, and any
# difference between the samplers' mixtures changes some levels.
QUANTIZER = Quantizer(offset=-2000.0, step=1.0, n_levels=4096, background_sigma=50.0)


def _net(n_bands: int, **kwargs) -> PixelCNN:
    """A tiny random PixelCNN in float64 whose output depends strongly on earlier pixels."""
    torch.manual_seed(n_bands)
    net = PixelCNN(in_channels=n_bands, channels=6, n_blocks=2, n_mix=2, dilations=[1, 2], **kwargs)
    with torch.no_grad():
        net.out.weight *= 2.0
    return net.double().eval()


def _both(net, uniforms, **kwargs) -> torch.Tensor:
    naive = naive_sample(net, QUANTIZER, uniforms, **kwargs)
    cached = cached_sample(net, QUANTIZER, uniforms, **kwargs)
    assert naive.dtype == cached.dtype == torch.int64
    assert torch.equal(cached, naive)
    return cached


@pytest.mark.parametrize("n_bands", [1, 2])
def test_cached_equals_naive_unconditional(n_bands):
    uniforms = draw_uniforms(3, n_bands, HEIGHT, WIDTH, seed=0)
    levels = _both(_net(n_bands), uniforms)
    assert levels.shape == (3, n_bands, HEIGHT, WIDTH)
    # The draws are spread out, as the wide σ makes them, and none is clipped: a real test.
    assert len(levels.unique()) > 0.6 * levels.numel()
    assert levels.min() > 0
    assert levels.max() < QUANTIZER.n_levels - 1


@pytest.mark.parametrize("n_bands", [1, 2])
def test_cached_equals_naive_conditioned_on_labels(n_bands):
    net = _net(n_bands, n_classes=3)
    uniforms = draw_uniforms(3, n_bands, HEIGHT, WIDTH, seed=1)
    levels = _both(net, uniforms, labels=torch.tensor([0, 2, 1]))
    other = _both(net, uniforms, labels=torch.tensor([1, 2, 0]))
    assert not torch.equal(levels[0], other[0])
    assert torch.equal(levels[1], other[1])


def test_cached_equals_naive_conditioned_on_vectors():
    net = _net(2, condition_dim=3)
    vectors = torch.randn(2, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    _both(net, draw_uniforms(2, 2, HEIGHT, WIDTH, seed=2), vectors=vectors)


@pytest.mark.parametrize("n_bands", [1, 2])
def test_cached_equals_naive_with_a_linear_predictor(n_bands):
    net = _net(n_bands, linear_predictor=True)
    with torch.no_grad():  # a prediction far from the baseline it starts from
        for layer in (net.predict_up, net.predict_left):
            layer.conv.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(5))
    levels = _both(net, draw_uniforms(3, n_bands, HEIGHT, WIDTH, seed=3))
    assert len(levels.unique()) > 0.6 * levels.numel()


@pytest.mark.parametrize("n_bands", [1, 2])
def test_cached_equals_naive_with_gaussian_components(n_bands):
    net = _net(n_bands, component="gaussian")
    uniforms = draw_uniforms(3, n_bands, HEIGHT, WIDTH, seed=4)
    levels = _both(net, uniforms)
    assert len(levels.unique()) > 0.6 * levels.numel()
    # The same network and uniforms draw other levels with logistic components.
    net.component = "logistic"
    assert not torch.equal(naive_sample(net, QUANTIZER, uniforms), levels)


@pytest.mark.parametrize("n_bands", [1, 2])
def test_completion_keeps_known_pixels_and_matches(n_bands):
    net = _net(n_bands, n_classes=2)
    generator = torch.Generator().manual_seed(3)
    known = torch.randint(1500, 2500, (2, n_bands, HEIGHT, WIDTH), generator=generator)
    mask = torch.rand(2, HEIGHT, WIDTH, generator=generator) < 0.4
    mask[0, :2] = True  # the first rows too: drawn before any known pixel
    uniforms = draw_uniforms(2, n_bands, HEIGHT, WIDTH, seed=3)
    before = known.clone()
    levels = _both(net, uniforms, labels=torch.tensor([1, 0]), known=known, mask=mask)
    assert torch.equal(known, before)  # the input is not modified
    keep = ~mask[:, None].expand_as(known)
    assert torch.equal(levels[keep], known[keep])
    drawn = mask[:, None].expand_as(known)
    assert (levels[drawn] != known[drawn]).float().mean() > 0.9
    # A drawn pixel is conditioned on the known pixels before it: change one known pixel
    # and the drawn pixels after it (within reach) change, those before it do not.
    changed = known.clone()
    row, col = 2, 3
    mask[:, row, col] = False
    changed[:, :, row, col] += 300
    again = cached_sample(
        net, QUANTIZER, uniforms, labels=torch.tensor([1, 0]), known=changed, mask=mask
    )
    first = levels.clone()
    first[:, :, row, col] = changed[:, :, row, col]
    raster = torch.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
    earlier = raster < raster[row, col]
    assert torch.equal(again[..., earlier], first[..., earlier])
    later = drawn & ~earlier & (raster != raster[row, col])
    assert (again[later] != first[later]).any()


def test_completion_needs_a_mask_of_the_right_shape():
    net = _net(1)
    known = torch.full((2, 1, HEIGHT, WIDTH), 2000)
    uniforms = draw_uniforms(2, 1, HEIGHT, WIDTH, seed=0)
    for sampler in (naive_sample, cached_sample):
        with pytest.raises(ValueError, match="completion needs a mask"):
            sampler(net, QUANTIZER, uniforms, known=known)
        with pytest.raises(ValueError, match=r"mask must have shape \(N, H, W\) = \(2, 5, 7\)"):
            sampler(
                net,
                QUANTIZER,
                uniforms,
                known=known,
                mask=torch.ones(HEIGHT, WIDTH, dtype=torch.bool),
            )
        with pytest.raises(ValueError, match=r"known span \[2000, 5000\]"):
            sampler(
                net,
                QUANTIZER,
                uniforms,
                known=known + torch.arange(2)[:, None, None, None] * 3000,
                mask=torch.ones(2, HEIGHT, WIDTH, dtype=torch.bool),
            )


def test_same_seed_same_images_and_other_seeds_other_images():
    net = _net(2)
    first = cached_sample(net, QUANTIZER, draw_uniforms(2, 2, HEIGHT, WIDTH, seed=7))
    again = cached_sample(net, QUANTIZER, draw_uniforms(2, 2, HEIGHT, WIDTH, seed=7))
    other = cached_sample(net, QUANTIZER, draw_uniforms(2, 2, HEIGHT, WIDTH, seed=8))
    assert torch.equal(first, again)
    assert (first != other).float().mean() > 0.9
    assert not torch.equal(first[0], first[1])  # images of one batch differ too
    assert torch.equal(draw_uniforms(2, 2, 3, 4, seed=5), draw_uniforms(2, 2, 3, 4, seed=5))
    assert draw_uniforms(2, 2, 3, 4, seed=5).shape == (2, 3, 3, 4)
