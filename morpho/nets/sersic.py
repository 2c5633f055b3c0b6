"""A small, fast convolutional encoder and the Sérsic regression head."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from morpho.nets.base import remember_init
from morpho.nets.layers import ScalarNorm, side_after_halvings

__all__ = ["FastEncoder", "SersicHead"]


def _conv(
    in_channels: int, out_channels: int, *, stride: int = 1, kernel: int = 3
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class StageConditioning(nn.Module):
    """Scalars to a scale and a shift per channel of each encoder stage (FiLM).

    ``(N, F) -> [(scale, shift), ...]``, one ``(N, C_k, 1, 1)`` pair per stage of
    ``widths``; the scalars are standardised first (:class:`ScalarNorm`). Both start
    at zero, so an untrained conditioning leaves the encoder unchanged.
    """

    def __init__(self, n_features: int, widths: Sequence[int], hidden_dim: int = 32) -> None:
        super().__init__()
        self.widths = list(widths)
        self.norm = ScalarNorm(n_features)
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 2 * sum(self.widths)),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, scalars: Tensor) -> list[tuple[Tensor, Tensor]]:
        parts = self.net(self.norm(scalars)).split([2 * w for w in self.widths], dim=1)
        return [tuple(p[:, :, None, None].chunk(2, dim=1)) for p in parts]


def _encode(
    layers: nn.Sequential,
    core: nn.Module | None,
    crop: tuple[int, int],
    x: Tensor,
    film: list[tuple[Tensor, Tensor]] | None,
    full_resolution: nn.Module | None = None,
) -> Tensor:
    """Run the layers and the core branch; with ``film``, scale and shift each stage's output.

    The full-resolution layers, if any, come first; the stages end after the stem
    (layer 0 of ``layers``) and after every second layer from there on.
    """
    out = x if full_resolution is None else full_resolution(x)
    for i, layer in enumerate(layers):
        out = layer(out)
        if film is not None and i % 2 == 0:
            scale, shift = film[i // 2]
            out = torch.addcmul(shift.to(out.dtype), out, 1 + scale.to(out.dtype))
    features = torch.flatten(out, 1)
    if core is None:
        return features
    start, size = crop
    core_features = core(x[..., start : start + size, start : start + size])
    return torch.cat([features, torch.flatten(core_features, 1)], dim=1)


class FastEncoder(nn.Module):
    """Images to a feature vector with few FLOPs: ``(N, C, S, S) -> (N, out_dim)``.

    Optional stride-1 3×3 convolutions at full resolution, a stride-2 stem (5×5 by
    default), then stages that each halve the image with a strided
    3×3 convolution followed by one more 3×3 convolution (BatchNorm and ReLU
    after each, which fold away at inference); the last feature map is
    flattened, so position within the stamp is kept. With the defaults at 64×64
    it costs about 13 MFLOP per image; ``full_resolution=(8,)`` with
    ``stem_kernel=3`` adds 1.8 MFLOP (a nonlinear layer before the first halving,
    where a thin galaxy's minor axis is one or two pixels).

    With ``condition_dim`` scalars per image (for the Sérsic network: the PSF's
    FWHM and wings, the S/N, ...; ``forward(x, scalars)``), the output of the stem
    and of every stage is scaled and shifted per channel by a small MLP of them
    (:class:`StageConditioning`): the image is read differently under different
    seeings from the first layers on.

    An optional core branch sees the central ``core_size × core_size`` pixels at
    full resolution (a stride-1 3×3 convolution, then a strided one), where the
    stem's first halving would blur the cusp that sets a Sérsic index; its
    flattened features are appended.

    Parameters
    ----------
    in_channels : int
        Image channels C (for the Sérsic network: one per softening of
        :class:`morpho.sersic.inputs.SersicInputs`).
    image_size : int
        Side S in pixels, divisible by ``2 ** (len(channels))``.
    channels : sequence of int
        Width of the stem, then of each further stage.
    full_resolution : sequence of int
        Widths of stride-1 3×3 convolutions before the stem (empty: none).
    stem_kernel : int
        Kernel side of the stride-2 stem (odd).
    core_size : int
        Side of the central crop of the core branch (even, at most S); 0: no branch.
    core_channels : (int, int)
        Widths of the core branch's two convolutions.
    condition_dim : int
        Scalars per image that condition the stages; 0: none.
    """

    @remember_init
    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        channels: Sequence[int] = (12, 24, 48, 96),
        full_resolution: Sequence[int] = (),
        stem_kernel: int = 5,
        core_size: int = 0,
        core_channels: Sequence[int] = (16, 32),
        condition_dim: int = 0,
    ) -> None:
        super().__init__()
        channels = list(channels)
        self.in_channels = in_channels
        side = side_after_halvings(image_size, len(channels))
        if core_size < 0 or core_size % 2 or core_size > image_size:
            raise ValueError(f"core_size must be even and in [0, {image_size}], got {core_size}")
        if condition_dim < 0:
            raise ValueError(f"condition_dim must be >= 0, got {condition_dim}")
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd and >= 1, got {stem_kernel}")
        widths = [in_channels, *full_resolution]
        self.full_resolution = (
            nn.Sequential(*(_conv(a, b) for a, b in itertools.pairwise(widths)))
            if full_resolution
            else None
        )
        layers = [_conv(widths[-1], channels[0], stride=2, kernel=stem_kernel)]
        for a, b in itertools.pairwise(channels):
            layers += [_conv(a, b, stride=2), _conv(b, b)]
        self.body = nn.Sequential(*layers)
        self.core_start = (image_size - core_size) // 2
        self.core_size = core_size
        self.core = None
        self.condition_dim = condition_dim
        self.conditioning = StageConditioning(condition_dim, channels) if condition_dim else None
        self.out_dim = channels[-1] * side * side
        if core_size:
            first, second = core_channels
            self.core = nn.Sequential(_conv(in_channels, first), _conv(first, second, stride=2))
            self.out_dim += second * (core_size // 2) ** 2

    def _film(self, scalars: Tensor | None) -> list[tuple[Tensor, Tensor]] | None:
        if self.conditioning is None:
            return None
        if scalars is None or scalars.shape[-1] != self.condition_dim:
            got = None if scalars is None else tuple(scalars.shape)
            raise ValueError(f"this encoder needs (N, {self.condition_dim}) scalars, got {got}")
        return self.conditioning(scalars)

    def forward(self, x: Tensor, scalars: Tensor | None = None) -> Tensor:
        crop = (self.core_start, self.core_size)
        return _encode(self.body, self.core, crop, x, self._film(scalars), self.full_resolution)

    @torch.no_grad()
    def fused(self) -> nn.Module:
        """An inference-only copy with every BatchNorm folded into its convolution.

        ``w' = w γ / sqrt(v + ε)`` and ``b' = β - μ γ / sqrt(v + ε)`` with the running
        mean μ and variance v: the same function in eval mode, one pass fewer. The
        conditioning, if any, is shared with this encoder, not copied.
        """
        core = None if self.core is None else _folded(self.core)
        full = None if self.full_resolution is None else _folded(self.full_resolution)
        crop = (self.core_start, self.core_size)
        return _FusedEncoder(_folded(self.body), core, crop, self, full).eval()


@torch.no_grad()
def _folded(blocks: nn.Sequential) -> nn.Sequential:
    """``(conv, BatchNorm, ReLU)`` blocks as ``(conv with bias, ReLU)`` blocks, in eval mode."""
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
        layers.append(nn.Sequential(folded, nn.ReLU(inplace=True)))
    return nn.Sequential(*layers)


class _FusedEncoder(nn.Module):
    """What :meth:`FastEncoder.fused` returns: the folded layers and core branch."""

    def __init__(
        self,
        layers: nn.Module,
        core: nn.Module | None,
        crop: tuple[int, int],
        source,
        full_resolution: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.layers, self.core, self.crop = layers, core, crop
        self.full_resolution = full_resolution
        self._source = (source,)  # a tuple: the encoder is not a submodule of its copy

    def forward(self, x: Tensor, scalars: Tensor | None = None) -> Tensor:
        film = self._source[0]._film(scalars)
        return _encode(self.layers, self.core, self.crop, x, film, self.full_resolution)


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
        self.out_dim = out_dim
        self.scalar_norm = ScalarNorm(n_features)
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

    def forward(self, features: Tensor, scalars: Tensor) -> Tensor:
        scale, shift = self.condition(self.scalar_norm(scalars)).chunk(2, dim=1)
        return self.out(self.image(features) * (1 + scale) + shift)
