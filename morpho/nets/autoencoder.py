"""Convolutional encoder, decoder and projector of morpho's autoencoder."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from morpho.nets.base import remember_init
from morpho.nets.layers import ConvBlock, UpBlock, side_after_halvings

__all__ = ["ConvDecoder", "ConvEncoder", "Projector"]


class ConvEncoder(nn.Module):
    """Images to embeddings: ``(N, C, S, S) -> (N, embedding_dim)``.

    Each stage halves the image with a strided :class:`ConvBlock`; a linear layer
    maps the last feature map to the embedding.

    Parameters
    ----------
    in_channels : int
        Bands C.
    image_size : int
        Side S in pixels, divisible by ``2 ** len(channels)``.
    channels : sequence of int
        Feature channels of each stage.
    embedding_dim : int
        Embedding dimension d.
    """

    @remember_init
    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        channels: Sequence[int] = (16, 32, 64, 128),
        embedding_dim: int = 32,
    ) -> None:
        super().__init__()
        side = side_after_halvings(image_size, len(channels))
        widths = [in_channels, *channels]
        self.stages = nn.Sequential(
            *[ConvBlock(a, b, stride=2) for a, b in itertools.pairwise(widths)]
        )
        self.head = nn.Linear(channels[-1] * side * side, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.stages(x), 1))


class ConvDecoder(nn.Module):
    """Embeddings to images: ``(N, d) -> (N, C, S, S)``; mirrors :class:`ConvEncoder`."""

    @remember_init
    def __init__(
        self,
        out_channels: int = 1,
        image_size: int = 64,
        channels: Sequence[int] = (16, 32, 64, 128),
        embedding_dim: int = 32,
    ) -> None:
        super().__init__()
        self.side = side_after_halvings(image_size, len(channels))
        reversed_channels = list(channels)[::-1]
        self.top = reversed_channels[0]
        self.head = nn.Linear(embedding_dim, self.top * self.side * self.side)
        widths = [*reversed_channels, reversed_channels[-1]]
        self.stages = nn.Sequential(*[UpBlock(a, b) for a, b in itertools.pairwise(widths)])
        self.out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.head(z).view(-1, self.top, self.side, self.side)
        return self.out(self.stages(x))


class Projector(nn.Module):
    """The expander of VICReg (Bardes et al. 2022): ``(N, d) -> (N, out_dim)`` MLP."""

    @remember_init
    def __init__(self, in_dim: int = 32, hidden_dim: int = 256, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
