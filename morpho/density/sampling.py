"""Drawing images from a PixelCNN, pixel by pixel: the naive and the cached sampler.

Both draw pixel (i, j)'s bands from the mixture the network gives for it, with the
uniforms ``U[:, :, i, j]`` drawn up front from a seeded generator, so that for the
same seed they give the same images (exactly, up to the floating-point summation
order of the convolutions; bit for bit in float64, tested).

- The **naive** sampler runs the whole network on the whole image for every pixel:
  H·W full passes.
- The **cached** sampler (after Ramachandran et al. 2017, *Fast generation for
  convolutional autoregressive models*) keeps every convolution's input in a buffer
  and evaluates only what a new pixel changes: once per row, the up stream of that row
  (it depends only on the rows above); once per pixel, the up-left stream at that
  pixel. Every layer of :class:`morpho.nets.pixelcnn.PixelCNN` keeps full resolution,
  so both are single windows of the buffers.

Completion uses the same loops with ``known`` levels and a ``mask``: masked pixels
are drawn, every other pixel keeps its value, so each drawn pixel is conditioned
on all the pixels before it in raster order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from morpho.density.logistic import sample_mixture
from morpho.density.quantize import Quantizer
from morpho.nets.pixelcnn import PixelCNN, ShiftedConv2d
from morpho.utils import torch_threads

__all__ = ["cached_sample", "draw_uniforms", "naive_sample"]


def draw_uniforms(
    n: int, n_bands: int, height: int, width: int, *, seed: int, dtype=torch.float64
) -> Tensor:
    """The uniforms ``(N, 1 + C, H, W)`` that both samplers consume, from a seeded generator."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.rand(n, 1 + n_bands, height, width, generator=generator, dtype=dtype)


def _start(
    net: PixelCNN, quantizer: Quantizer, n: int, size: tuple[int, int], known, mask
) -> tuple[Tensor, Tensor]:
    h, w = size
    if known is None:
        levels = torch.full(
            (n, net.in_channels, h, w), round(quantizer.sky_level), dtype=torch.int64
        )
        levels.clamp_(0, quantizer.n_levels - 1)
        return levels, torch.ones(n, h, w, dtype=torch.bool)
    levels = torch.as_tensor(known).clone()
    quantizer.check_levels(levels, name="known")
    if mask is None:
        raise ValueError("completion needs a mask (N, H, W): True where pixels are to be drawn")
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != (levels.shape[0], *levels.shape[2:]):
        expected = (levels.shape[0], *levels.shape[2:])
        raise ValueError(f"mask must have shape (N, H, W) = {expected}, got {tuple(mask.shape)}")
    return levels, mask


def _draw(net, quantizer, params, uniforms) -> Tensor:
    return sample_mixture(
        params,
        uniforms,
        n_mix=net.n_mix,
        n_bands=net.in_channels,
        scale=quantizer.level_scale,
        component=net.component,
    )


@torch.no_grad()
def naive_sample(
    net: PixelCNN,
    quantizer: Quantizer,
    uniforms: Tensor,
    *,
    labels: Tensor | None = None,
    vectors: Tensor | None = None,
    known: Tensor | None = None,
    mask: Tensor | None = None,
    pixels: int | None = None,
) -> Tensor:
    """Sample by running the whole network once per pixel.

    Parameters
    ----------
    net : PixelCNN
        In eval mode.
    quantizer : Quantizer
        The model's quantisation (network input and level scale).
    uniforms : (N, 1 + C, H, W) float tensor
        From :func:`draw_uniforms`; their dtype is the computation's dtype.
    labels, vectors : tensor, optional
        Conditioning, (N,) int64 or (N, D) float.
    known, mask : optional
        Completion: (N, C, H, W) int64 levels and (N, H, W) bool, True where to draw.
    pixels : int, optional
        Stop after this many raster positions (for timing the naive sampler).

    Returns
    -------
    (N, C, H, W) int64 tensor
        Levels.
    """
    n, _, h, w = uniforms.shape
    levels, mask = _start(net, quantizer, n, (h, w), known, mask)
    positions = [(i, j) for i in range(h) for j in range(w)][:pixels]
    for i, j in positions:
        draw = mask[:, i, j]
        if not draw.any():
            continue
        params = net(quantizer.network_input(levels, dtype=uniforms.dtype), labels, vectors)
        new = _draw(
            net, quantizer, params[:, :, i : i + 1, j : j + 1], uniforms[:, :, i : i + 1, j : j + 1]
        )
        levels[:, :, i, j] = torch.where(draw[:, None], new[:, :, 0, 0], levels[:, :, i, j])
    return levels


class _Buffered:
    """A convolution's input held in a zero-padded buffer, evaluated one row or one pixel at a time.

    A row is one small convolution; a pixel is one matrix product of its flattened
    window with the flattened kernel (far less overhead than a 1×1-output convolution).
    """

    def __init__(self, layer: ShiftedConv2d, n: int, height: int, width: int, dtype) -> None:
        self.layer = layer
        self.rows, self.cols = layer.window
        conv = layer.conv
        shape = (
            n,
            conv.in_channels,
            layer.top + height + self.rows,
            layer.left + width + self.cols,
        )
        self.buffer = torch.zeros(shape, dtype=dtype)
        self.width = width
        self.dilation = conv.dilation[0]
        self.weight_t = conv.weight.reshape(conv.out_channels, -1).t().contiguous()
        self.bias = conv.bias

    def put_row(self, i: int, values: Tensor) -> None:
        """values (N, Cin, 1, W): the input at row i."""
        top, left = self.layer.top, self.layer.left
        self.buffer[:, :, top + i : top + i + 1, left : left + self.width] = values

    def put_pixel(self, i: int, j: int, values: Tensor) -> None:
        """values (N, Cin): the input at (i, j)."""
        self.buffer[:, :, self.layer.top + i, self.layer.left + j] = values

    def row(self, i: int) -> Tensor:
        """The output at row i, (N, Cout, 1, W)."""
        window = self.buffer[:, :, i : i + self.rows, : self.width + self.cols - 1]
        return self.layer.conv(window)

    def pixel(self, i: int, j: int) -> Tensor:
        """The output at (i, j), (N, Cout)."""
        d = self.dilation
        window = self.buffer[:, :, i : i + self.rows : d, j : j + self.cols : d]
        return torch.addmm(self.bias, window.reshape(len(window), -1), self.weight_t)


def _matrix(conv: torch.nn.Conv2d) -> tuple[Tensor, Tensor]:
    """A 1×1 convolution as (bias, weight transposed) for ``addmm``."""
    return conv.bias, conv.weight.reshape(conv.out_channels, -1).t().contiguous()


class _PixelBlock:
    """An up-left :class:`GatedBlock` evaluated at one pixel, on (N, C) vectors."""

    def __init__(self, block, n: int, h: int, w: int, dtype, condition: Tensor | None) -> None:
        self.first = _Buffered(block.conv_in, n, h, w, dtype)
        self.second = _Buffered(block.conv_out, n, h, w, dtype)
        self.aux = _matrix(block.aux)
        self.bias = None if block.condition is None else block.condition(condition)

    def __call__(self, i: int, j: int, x: Tensor, aux: Tensor) -> Tensor:
        self.first.put_pixel(i, j, F.elu(x))
        hidden = self.first.pixel(i, j) + torch.addmm(*self.aux[:1], F.elu(aux), self.aux[1])
        self.second.put_pixel(i, j, F.elu(hidden))
        out = self.second.pixel(i, j)
        if self.bias is not None:
            out = out + self.bias
        a, b = out.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


@torch.no_grad()
def cached_sample(
    net: PixelCNN,
    quantizer: Quantizer,
    uniforms: Tensor,
    *,
    labels: Tensor | None = None,
    vectors: Tensor | None = None,
    known: Tensor | None = None,
    mask: Tensor | None = None,
    threads: int | None = 1,
) -> Tensor:
    """Sample with cached activations: one row update of the up stream per row and one
    pixel update of the up-left stream per pixel.

    Same arguments and result as :func:`naive_sample`, and ``threads``: torch threads
    while sampling (None: unchanged). The per-pixel steps are far too small to share
    between threads: one thread is fastest unless the batch holds hundreds of images.
    """
    with torch_threads(threads):
        return _cached(net, quantizer, uniforms, labels, vectors, known, mask)


def _cached(net, quantizer, uniforms, labels, vectors, known, mask) -> Tensor:
    n, _, h, w = uniforms.shape
    dtype = uniforms.dtype
    levels, mask = _start(net, quantizer, n, (h, w), known, mask)
    cond = net.condition(labels, vectors)
    cond = None if cond is None else cond.to(dtype)
    inputs = [
        _Buffered(layer, n, h, w, dtype) for layer in (net.u_in, net.ul_in_up, net.ul_in_left)
    ]
    u_blocks = [
        (b, _Buffered(b.conv_in, n, h, w, dtype), _Buffered(b.conv_out, n, h, w, dtype))
        for b in net.u_blocks
    ]
    ul_blocks = [_PixelBlock(b, n, h, w, dtype, cond) for b in net.ul_blocks]
    predictors = (
        [_Buffered(layer, n, h, w, dtype) for layer in (net.predict_up, net.predict_left)]
        if net.linear_predictor
        else []
    )
    out = _matrix(net.out)
    for i in range(h):
        u = inputs[0].row(i)
        u_rows = []
        for block, first, second in u_blocks:
            first.put_row(i, F.elu(u))
            second.put_row(i, F.elu(block.hidden(first.row(i), None)))
            u = block.gate(u, second.row(i), cond)
            u_rows.append(u[:, :, 0])
        for j in range(w):
            ul = inputs[1].pixel(i, j) + inputs[2].pixel(i, j)
            for block, u_row in zip(ul_blocks, u_rows, strict=True):
                ul = block(i, j, ul, u_row[:, :, j])
            draw = mask[:, i, j]
            if draw.any():
                params = torch.addmm(out[0], F.elu(ul), out[1])[:, :, None, None]
                if predictors:
                    prediction = sum(p.pixel(i, j) for p in predictors)[:, :, None, None]
                    params = net.locate(params, prediction)
                new = _draw(net, quantizer, params, uniforms[:, :, i : i + 1, j : j + 1])
                levels[:, :, i, j] = torch.where(draw[:, None], new[:, :, 0, 0], levels[:, :, i, j])
            value = quantizer.network_input(levels[:, :, i, j], dtype=dtype)
            for buffer in inputs:
                buffer.put_pixel(i, j, value)
            for buffer in predictors:
                buffer.put_pixel(i, j, torch.sinh(value))
    return levels
