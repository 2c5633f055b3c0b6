"""A gated PixelCNN at full resolution, with no blind spot (plain ``nn.Module``\\ s).

Two streams, as in PixelCNN++ (Salimans et al. 2017) and the gated PixelCNN
(van den Oord et al. 2016): the *up* stream ``u`` at pixel (i, j) sees only the
rows above i (down-shifted convolutions), the *up-left* stream ``ul`` also sees
row i left of j (down-right-shifted convolutions) and is fed ``u`` at every
block. Each block is a gated residual unit
``x + a ⊙ σ(b)``, ``[a, b] = conv(elu(conv(elu(x)) + nin(elu(aux)))) + V c``
with an optional conditioning vector ``c`` (a class embedding or a given vector).

All layers keep the full resolution, so every activation at (i, j) depends only
on pixels before (i, j) in raster order: that is what lets
:mod:`morpho.density.sampling` update the activations of one new pixel instead of
recomputing the whole image. The up stream may be dilated (``dilations``) to
widen the vertical receptive field at no cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from morpho.density.logistic import check_component, mixture_channels, offset_locations
from morpho.nets.base import remember_init
from morpho.utils import full_precision

__all__ = ["GatedBlock", "PixelCNN", "ShiftedConv2d"]


class ShiftedConv2d(nn.Module):
    """A convolution whose output at (i, j) reads only input pixels above or left of it.

    ``kind="down"``: kernel (kh, kw), kw odd, centred on column j, rows i-(kh-1)d .. i.
    ``kind="down_right"``: rows i-(kh-1)d .. i, columns j-(kw-1)d .. j.
    ``shift=(s_row, s_col)`` then moves the output down/right by that many pixels,
    so that e.g. ``shift=(1, 0)`` excludes row i itself.

    The output at (i, j) is ``conv(window)`` with the input window
    ``x[i - top : i - top + (kh-1)d + 1, j - left : j - left + (kw-1)d + 1]``
    (zeros outside the image); :attr:`top` and :attr:`left` are attributes so that
    the cached sampler can evaluate single rows and pixels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        *,
        kind: str = "down",
        shift: tuple[int, int] = (0, 0),
        dilation: int = 1,
    ) -> None:
        super().__init__()
        kh, kw = kernel
        if kind == "down":
            if kw % 2 == 0:
                raise ValueError(f"a 'down' convolution needs an odd kernel width, got {kw}")
            left, right = (kw - 1) // 2 * dilation, (kw - 1) // 2 * dilation
        elif kind == "down_right":
            left, right = (kw - 1) * dilation, 0
        else:
            raise ValueError(f"kind must be 'down' or 'down_right', got {kind!r}")
        self.top = (kh - 1) * dilation + shift[0]
        self.left = left + shift[1]
        self._pad = (self.left, right - shift[1], self.top, -shift[0])
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, dilation=dilation)

    @property
    def window(self) -> tuple[int, int]:
        """Rows and columns of input that one output pixel reads."""
        kh, kw = self.conv.kernel_size
        d = self.conv.dilation[0]
        return (kh - 1) * d + 1, (kw - 1) * d + 1

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self._pad))


class GatedBlock(nn.Module):
    """Gated residual unit: ``x + a ⊙ σ(b)`` with ``[a, b]`` from two shifted convolutions.

    Parameters
    ----------
    channels : int
        Width of the stream.
    kernel, kind, dilation
        Of both convolutions (see :class:`ShiftedConv2d`).
    aux_channels : int
        Width of an auxiliary input added after the first convolution through a 1×1
        convolution (the up stream, for the up-left stream); 0 for none.
    condition_dim : int
        Width of a per-image conditioning vector added to the gates; 0 for none.
    dropout : float
        Dropout between the convolutions.
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel: tuple[int, int],
        kind: str,
        dilation: int = 1,
        aux_channels: int = 0,
        condition_dim: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv_in = ShiftedConv2d(channels, channels, kernel, kind=kind, dilation=dilation)
        self.aux = nn.Conv2d(aux_channels, channels, 1) if aux_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = ShiftedConv2d(channels, 2 * channels, kernel, kind=kind, dilation=dilation)
        self.condition = nn.Linear(condition_dim, 2 * channels) if condition_dim else None

    def hidden(self, conv_in: Tensor, aux: Tensor | None) -> Tensor:
        """The first convolution's output plus the auxiliary input (position-wise)."""
        if self.aux is not None:
            conv_in = conv_in + self.aux(F.elu(aux))
        return conv_in

    def gate(self, x: Tensor, conv_out: Tensor, condition: Tensor | None) -> Tensor:
        """``x + a ⊙ σ(b)`` (position-wise), with the conditioning bias."""
        if self.condition is not None:
            conv_out = conv_out + self.condition(condition)[:, :, None, None]
        a, b = conv_out.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)

    def forward(
        self, x: Tensor, aux: Tensor | None = None, condition: Tensor | None = None
    ) -> Tensor:
        h = self.hidden(self.conv_in(F.elu(x)), aux)
        h = self.conv_out(self.dropout(F.elu(h)))
        return self.gate(x, h, condition)


class PixelCNN(nn.Module):
    """Autoregressive density network: image ``(N, C, H, W)`` -> mixture parameters per pixel.

    Parameters
    ----------
    in_channels : int
        Bands C.
    channels : int
        Width of both streams.
    n_blocks : int
        Gated blocks per stream (two shifted convolutions each).
    n_mix : int
        Mixture components per pixel.
    kernel : int
        Width of the up stream's kernels (odd); the up-left stream uses 2×2.
    dilations : sequence of int, optional
        Dilation of each up-stream block (cycled); all 1 if None.
    n_classes : int
        Class labels 0 .. n_classes-1 to condition on (0: none).
    condition_dim : int
        Width of a conditioning vector (e.g. a galaxy embedding; 0: none).
    dropout : float
        Dropout inside the blocks.
    linear_predictor : bool
        Give the mixture's locations as offsets from a linear prediction of each band
        from its earlier neighbours (the two rows above within ``kernel // 2`` columns
        and the two pixels to the left), computed in float32 from the levels relative
        to the sky: ``m̂ -> asinh(p + sinh(m̂))`` with ``p`` in background σ (see
        :func:`morpho.density.logistic.offset_locations`). It starts as the neighbour
        baseline (half the pixel above, half the pixel to the left) and is learned
        with the rest. The blocks then give a correction of a few σ on bright
        pixels, where without it they must give the whole location, thousands of
        levels, to a fraction of the noise.
    component : {"logistic", "gaussian"}
        The shape of each discretised mixture component (see
        :mod:`morpho.density.logistic`): PixelCNN++'s logistics, or Gaussians, the
        exact law of sky and photon noise at many counts per level.

    Notes
    -----
    ``forward(x, labels=None, vectors=None)`` takes the network input of
    :meth:`morpho.density.quantize.Quantizer.network_input` and returns
    ``(N, mixture_channels(n_mix, C), H, W)`` parameters; the output at (i, j)
    depends only on pixels before (i, j) in raster order (tested by gradients).

    Under mixed precision (``torch.autocast``) the input convolutions and the output
    layer still run in float32, and the parameters come out in float32: the input
    holds ``asinh`` of up to 65 536 levels, and a mixture location ``sinh(m̂)`` read
    from a bfloat16 ``m̂`` (8 significant bits) would be off by several noise σ on
    bright pixels. The blocks between them run in the autocast dtype.
    """

    @remember_init
    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 64,
        n_blocks: int = 6,
        n_mix: int = 5,
        kernel: int = 3,
        dilations: Sequence[int] | None = None,
        n_classes: int = 0,
        condition_dim: int = 0,
        dropout: float = 0.0,
        linear_predictor: bool = False,
        component: str = "logistic",
    ) -> None:
        super().__init__()
        self.component = check_component(component)
        if n_blocks < 1 or channels < 1 or n_mix < 1 or in_channels < 1:
            raise ValueError("in_channels, channels, n_blocks and n_mix must all be >= 1")
        if n_classes and condition_dim:
            raise ValueError(
                "condition on labels (n_classes) or on vectors (condition_dim), not both"
            )
        self.in_channels = in_channels
        self.n_mix = n_mix
        self.n_classes = n_classes
        self.condition_dim = condition_dim
        width = condition_dim or (channels if n_classes else 0)
        self.label_embedding = nn.Embedding(n_classes, channels) if n_classes else None
        dil = list(dilations or [1])
        self.u_in = ShiftedConv2d(in_channels, channels, (2, kernel), kind="down", shift=(1, 0))
        self.ul_in_up = ShiftedConv2d(in_channels, channels, (1, kernel), kind="down", shift=(1, 0))
        self.ul_in_left = ShiftedConv2d(
            in_channels, channels, (2, 1), kind="down_right", shift=(0, 1)
        )
        self.u_blocks = nn.ModuleList(
            GatedBlock(
                channels,
                kernel=(2, kernel),
                kind="down",
                dilation=dil[i % len(dil)],
                condition_dim=width,
                dropout=dropout,
            )
            for i in range(n_blocks)
        )
        self.ul_blocks = nn.ModuleList(
            GatedBlock(
                channels,
                kernel=(2, 2),
                kind="down_right",
                aux_channels=channels,
                condition_dim=width,
                dropout=dropout,
            )
            for _ in range(n_blocks)
        )
        self.out = nn.Conv2d(channels, mixture_channels(n_mix, in_channels), 1)
        self.predict_up = self.predict_left = None
        if linear_predictor:
            self.predict_up = ShiftedConv2d(
                in_channels, in_channels, (2, kernel), kind="down", shift=(1, 0)
            )
            self.predict_left = ShiftedConv2d(
                in_channels, in_channels, (1, 2), kind="down_right", shift=(0, 1)
            )
            with torch.no_grad():
                for layer in (self.predict_up, self.predict_left):
                    layer.conv.weight.zero_()
                    layer.conv.bias.zero_()
                bands = torch.arange(in_channels)
                # The neighbour baseline: the pixel above (row i-1, centre column) and
                # the pixel to the left (i, j-1), half each.
                self.predict_up.conv.weight[bands, bands, 1, kernel // 2] = 0.5
                self.predict_left.conv.weight[bands, bands, 0, 1] = 0.5

    @property
    def linear_predictor(self) -> bool:
        """Whether the locations are offsets from a linear prediction (see the class)."""
        return self.predict_up is not None

    def predict(self, z: Tensor) -> Tensor:
        """The linear prediction ``(N, C, H, W)`` from levels relative to the sky in
        background σ, ``z``; call in float32 or float64."""
        return self.predict_up(z) + self.predict_left(z)

    def locate(self, params: Tensor, prediction: Tensor | None) -> Tensor:
        """The output layer's parameters with the locations moved by the prediction, if any."""
        if prediction is None:
            return params
        return offset_locations(params, prediction, n_mix=self.n_mix, n_bands=self.in_channels)

    def condition(
        self, labels: Tensor | None = None, vectors: Tensor | None = None
    ) -> Tensor | None:
        """The per-image conditioning vector (N, width) of labels or vectors, or None."""
        if self.label_embedding is not None:
            if labels is None:
                raise ValueError(
                    f"this PixelCNN is conditioned on {self.n_classes} class labels: pass labels"
                )
            return self.label_embedding(labels)
        if self.condition_dim:
            if vectors is None or vectors.shape[-1] != self.condition_dim:
                got = None if vectors is None else tuple(vectors.shape)
                raise ValueError(
                    f"this PixelCNN is conditioned on vectors of width {self.condition_dim}; "
                    f"got {got}"
                )
            return vectors
        if labels is not None or vectors is not None:
            raise ValueError(
                "this PixelCNN is not conditioned (n_classes=0, condition_dim=0): "
                "pass neither labels nor vectors"
            )
        return None

    def forward(
        self, x: Tensor, labels: Tensor | None = None, vectors: Tensor | None = None
    ) -> Tensor:
        cond = self.condition(labels, vectors)
        with full_precision(x) as x32:
            u = self.u_in(x32)
            ul = self.ul_in_up(x32) + self.ul_in_left(x32)
            prediction = self.predict(torch.sinh(x32)) if self.linear_predictor else None
        for u_block, ul_block in zip(self.u_blocks, self.ul_blocks, strict=True):
            u = u_block(u, condition=cond)
            ul = ul_block(ul, aux=u, condition=cond)
        with full_precision(F.elu(ul)) as features:
            return self.locate(self.out(features), prediction)
