"""A small, fast convolutional encoder and the Sérsic regression head."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from morpho.nets.base import remember_init
from morpho.nets.layers import side_after_halvings

__all__ = ["FastEncoder", "SersicHead"]


def _conv(
    in_channels: int, out_channels: int, *, stride: int = 1, kernel: int = 3
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FastEncoder(nn.Module):
    """Images to a feature vector with few FLOPs: ``(N, C, S, S) -> (N, out_dim)``.

    A 5×5 stride-2 stem, then stages that each halve the image with a strided
    3×3 convolution followed by one more 3×3 convolution (BatchNorm and ReLU
    after each, which fold away at inference); the last feature map is
    flattened, so position within the stamp is kept. With the defaults at 64×64
    it costs about 13 MFLOP per image.

    An optional core branch sees the central ``core_size × core_size`` pixels at
    full resolution (a stride-1 3×3 convolution, then a strided one), where the
    stem's first halving would blur the cusp that sets a Sérsic index; its
    flattened features are appended.

    Parameters
    ----------
    in_channels : int
        Bands C.
    image_size : int
        Side S in pixels, divisible by ``2 ** (len(channels))``.
    channels : sequence of int
        Width of the stem, then of each further stage.
    core_size : int
        Side of the central crop of the core branch (even, at most S); 0: no branch.
    core_channels : (int, int)
        Widths of the core branch's two convolutions.
    """

    @remember_init
    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        channels: Sequence[int] = (12, 24, 48, 96),
        core_size: int = 0,
        core_channels: Sequence[int] = (16, 32),
    ) -> None:
        super().__init__()
        channels = list(channels)
        side = side_after_halvings(image_size, len(channels))
        if core_size < 0 or core_size % 2 or core_size > image_size:
            raise ValueError(f"core_size must be even and in [0, {image_size}], got {core_size}")
        layers = [_conv(in_channels, channels[0], stride=2, kernel=5)]
        for a, b in itertools.pairwise(channels):
            layers += [_conv(a, b, stride=2), _conv(b, b)]
        self.body = nn.Sequential(*layers)
        self.core_start = (image_size - core_size) // 2
        self.core_size = core_size
        self.core = None
        self.out_dim = channels[-1] * side * side
        if core_size:
            first, second = core_channels
            self.core = nn.Sequential(_conv(in_channels, first), _conv(first, second, stride=2))
            self.out_dim += second * (core_size // 2) ** 2

    def _crop(self, x: Tensor) -> Tensor:
        start, stop = self.core_start, self.core_start + self.core_size
        return x[..., start:stop, start:stop]

    def forward(self, x: Tensor) -> Tensor:
        features = torch.flatten(self.body(x), 1)
        if self.core is None:
            return features
        return torch.cat([features, torch.flatten(self.core(self._crop(x)), 1)], dim=1)

    @torch.no_grad()
    def fused(self) -> nn.Module:
        """An inference-only copy with every BatchNorm folded into its convolution.

        ``w' = w γ / sqrt(v + ε)`` and ``b' = β - μ γ / sqrt(v + ε)`` with the running
        mean μ and variance v: the same function in eval mode, one pass fewer.
        """
        core = None if self.core is None else _folded(self.core)
        return _FusedEncoder(_folded(self.body), core, self.core_start, self.core_size).eval()


@torch.no_grad()
def _folded(blocks: nn.Sequential) -> nn.Sequential:
    """``(conv, BatchNorm, ReLU)`` blocks as ``(conv with bias, ReLU)``, in eval mode."""
    layers: list[nn.Module] = []
    for conv, norm, _ in blocks:
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        folded = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            bias=True,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        folded.bias.copy_(norm.bias - norm.running_mean * scale)
        layers += [folded, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class _FusedEncoder(nn.Module):
    """What :meth:`FastEncoder.fused` returns: the folded body and core branch."""

    def __init__(self, body: nn.Module, core: nn.Module | None, start: int, size: int) -> None:
        super().__init__()
        self.body, self.core, self.start, self.size = body, core, start, size

    def forward(self, x: Tensor) -> Tensor:
        features = torch.flatten(self.body(x), 1)
        if self.core is None:
            return features
        crop = x[..., self.start : self.start + self.size, self.start : self.start + self.size]
        return torch.cat([features, torch.flatten(self.core(crop), 1)], dim=1)


class SersicHead(nn.Module):
    """Encoder features and scalar inputs to the raw Sérsic outputs.

    ``(N, in_dim), (N, n_features) -> (N, out_dim)``. The image features go
    through a linear layer to ``hidden_dim`` units; the scalars (PSF FWHM and wings,
    S/N, moment shape, ...) are standardised (batch statistics in training, running
    ones in evaluation) and *condition* those units through a small MLP giving a
    scale and a shift per unit, ``h = W f · (1 + γ(s)) + β(s)`` (FiLM, Perez et al.
    2018); two more layers give the outputs, decoded by
    :func:`morpho.sersic.likelihood.decode`.

    Why not simply concatenate the scalars to the 1536 image features: a network
    trained that way ignored the PSF's wing fraction altogether (its n changed by
    1% between a Gaussian's and a Moffat's wings, where the truth needs about 17%),
    leaving a ±9% n bias by PSF kind. The scale ``γ`` starts at zero, so training
    starts from the image features alone.

    Parameters
    ----------
    in_dim : int
        Size of the encoder's feature vector.
    n_features : int
        Scalars given beside the image (PSF FWHM, stamp S/N, moment shape, PSF wings,
        growth fractions): :attr:`morpho.sersic.inputs.SersicInputs.n_features`.
    hidden_dim : int
        Width of the hidden layers.
    out_dim : int
        Raw outputs (11 for the Sérsic posterior).
    """

    @remember_init
    def __init__(
        self, in_dim: int, n_features: int = 6, hidden_dim: int = 128, out_dim: int = 11
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.n_features = n_features
        self.scalar_norm = nn.BatchNorm1d(n_features)
        self.image = nn.Linear(in_dim, hidden_dim)
        self.condition = nn.Sequential(
            nn.Linear(n_features, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 2 * hidden_dim),
        )
        nn.init.zeros_(self.condition[-1].weight)
        nn.init.zeros_(self.condition[-1].bias)
        self.out = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def _standardised(self, scalars: Tensor) -> Tensor:
        # One galaxy in a training batch has no batch variance: use the running statistics.
        training = self.training and len(scalars) > 1
        norm = self.scalar_norm
        return F.batch_norm(
            scalars,
            norm.running_mean,
            norm.running_var,
            norm.weight,
            norm.bias,
            training=training,
            momentum=norm.momentum,
            eps=norm.eps,
        )

    def forward(self, features: Tensor, scalars: Tensor) -> Tensor:
        scale, shift = self.condition(self._standardised(scalars)).chunk(2, dim=1)
        return self.out(self.image(features) * (1 + scale) + shift)
