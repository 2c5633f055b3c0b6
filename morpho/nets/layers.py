"""Convolutional building blocks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBlock", "ScalarNorm", "UpBlock", "side_after_halvings"]


def side_after_halvings(image_size: int, stages: int) -> int:
    """Side of an ``image_size`` image after ``stages`` halvings; ValueError if not exact."""
    side = image_size // 2**stages
    if side < 1 or side * 2**stages != image_size:
        raise ValueError(
            f"image_size {image_size} must be divisible by 2**{stages} (one halving per stage)"
        )
    return side


class ScalarNorm(nn.BatchNorm1d):
    """Standardise ``(N, F)`` scalar inputs: batch statistics in training, running ones after.

    A batch norm that also accepts a training batch of one galaxy (which has no
    batch variance): it is standardised with the running statistics instead.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=self.training and len(x) > 1,
            momentum=self.momentum,
            eps=self.eps,
        )


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels)


class ConvBlock(nn.Module):
    """Two 3×3 convolutions (the first with ``stride``), GroupNorm and SiLU after each.

    ``(N, C_in, H, W) -> (N, C_out, H / stride, W / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            _norm(out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _norm(out_channels),
            nn.SiLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class UpBlock(nn.Module):
    """Nearest-neighbour ×2 upsampling then a :class:`ConvBlock`.

    ``(N, C_in, H, W) -> (N, C_out, 2H, 2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.block = ConvBlock(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.up(x))
