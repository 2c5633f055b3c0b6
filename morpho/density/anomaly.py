"""Anomaly scores from a PixelCNN that do not simply flag the faintest or smoothest images.

Raw likelihood ranks images by how much noise entropy they hold: a faint, smooth
galaxy is "likely", a bright one is not, whatever its morphology. The score here
compares each pixel's surprise with what the model itself expects (a typicality
test, Nalisnick et al. 2019, made per pixel):

.. math::

    s_{ij} = -\\ln p(k_{ij} \\mid k_{<ij}) - \\mathbb{E}_{k' \\sim p(\\cdot \\mid k_{<ij})}
    \\big[-\\ln p(k' \\mid k_{<ij})\\big],

with the expectation and the variance ``v_ij`` of the surprise estimated from
``n_draws`` draws of every pixel's own predictive mixture. For an ordinary image
``Σ s`` is zero on average with variance ``Σ v`` whether the image is faint or
bright, smooth or not; a streak, a star, a hot column or a second galaxy makes its
pixels far more surprising than the model expected. Two scores:

- ``typicality``: ``Σ_ij s_ij / sqrt(Σ_ij v_ij)`` over the whole image;
- ``local``: the largest ``Σ s / sqrt(Σ v)`` over ``window × window`` boxes, for
  oddities that cover few pixels.

The likelihood-ratio score against the simple neighbour baseline
(:class:`morpho.density.baseline.NeighbourGaussian`),
``bits_baseline - bits_model``, is given beside them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from morpho.density.logistic import mixture_log_prob, sample_mixture

__all__ = ["SCORES", "expected_surprise", "local_scores", "surprise_map"]

#: The anomaly scores of :func:`local_scores`.
SCORES = ("typicality", "local")


@torch.no_grad()
def expected_surprise(
    params: Tensor,
    *,
    n_mix: int,
    n_bands: int,
    scale,
    n_draws: int = 16,
    seed: int | Sequence[int] = 0,
    component: str = "logistic",
) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``-ln p`` of each pixel under its own predictive mixture.

    Parameters
    ----------
    params : (N, P, H, W) float tensor
        The network's output for an image.
    n_mix, n_bands : int
    scale : LevelScale
    n_draws : int
        Monte-Carlo draws per pixel (>= 2).
    seed : int or sequence of int
        One seed for the batch, or one per image (N): then each image's draws depend
        on its seed alone, not on the batch it came in.
    component : {"logistic", "gaussian"}
        The mixture's component shape (the network's ``component``).

    Returns
    -------
    mean, variance : (N, H, W) float tensors
        In nats.
    """
    if n_draws < 2:
        raise ValueError(f"n_draws must be >= 2, got {n_draws}")
    n, _, h, w = params.shape
    uniforms = _uniforms(seed, n_draws, (n, 1 + n_bands, h, w))
    draws = []
    for u in uniforms:
        levels = sample_mixture(
            params,
            u.to(params.device),
            n_mix=n_mix,
            n_bands=n_bands,
            scale=scale,
            component=component,
        )
        draws.append(
            -mixture_log_prob(levels, params, n_mix=n_mix, scale=scale, component=component)
        )
    stacked = torch.stack(draws)
    return stacked.mean(dim=0), stacked.var(dim=0)


def _uniforms(seed: int | Sequence[int], n_draws: int, shape: tuple[int, ...]) -> Tensor:
    """(n_draws, *shape) float64 uniforms: from one generator, or one per image."""
    if isinstance(seed, int):
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(n_draws, *shape, generator=generator, dtype=torch.float64)
    seeds = [int(s) for s in seed]
    if len(seeds) != shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for {shape[0]} images")
    per_image = [
        torch.rand(
            n_draws, *shape[1:], generator=torch.Generator().manual_seed(s), dtype=torch.float64
        )
        for s in seeds
    ]
    return torch.stack(per_image, dim=1)


@torch.no_grad()
def surprise_map(
    model,
    levels: Tensor,
    labels=None,
    vectors=None,
    *,
    n_draws: int = 16,
    seed: int | Sequence[int] = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """``ln p`` of every pixel, its surprise ``s`` and the surprise's variance ``v``.

    Parameters
    ----------
    model : PixelCNNModule
        In eval mode.
    levels : (N, C, H, W) int64 tensor
        Quantised images, on the model's device.
    labels, vectors : tensor, optional
        Conditioning of a conditional model.
    n_draws : int
        Monte-Carlo draws per pixel of the expected surprise.
    seed : int or sequence of int
        Their seed, or one seed per image (see :func:`expected_surprise`).

    Returns
    -------
    log_prob, surprise, variance : (N, H, W) float tensors
        In nats, from one pass of the network.
    """
    cond = model._conditioning(labels, vectors, len(levels))
    params = model.net(model.quantizer.network_input(levels), **cond)
    scale = model.quantizer.level_scale
    component = model.net.component
    log_prob = mixture_log_prob(
        levels, params, n_mix=model.net.n_mix, scale=scale, component=component
    )
    mean, variance = expected_surprise(
        params,
        n_mix=model.net.n_mix,
        n_bands=levels.shape[1],
        scale=scale,
        n_draws=n_draws,
        seed=seed,
        component=component,
    )
    return log_prob, -log_prob - mean, variance


def local_scores(surprise: Tensor, variance: Tensor, *, window: int = 5) -> dict[str, Tensor]:
    """The ``typicality`` and ``local`` scores (N,) of per-pixel surprises (see the module)."""
    if window < 1:
        raise ValueError(f"window must be >= 1 pixel, got {window}")
    total = surprise.sum(dim=(1, 2)) / variance.sum(dim=(1, 2)).clamp_min(1e-12).sqrt()
    box_s = F.avg_pool2d(surprise[:, None], window, stride=1) * window**2
    box_v = F.avg_pool2d(variance[:, None], window, stride=1) * window**2
    local = (box_s / box_v.clamp_min(1e-12).sqrt()).flatten(1).amax(dim=1)
    return {"typicality": total, "local": local}


def bits_per_dim(log_likelihood: Tensor, dims: int) -> Tensor:
    """Bits per dimension of total natural-log likelihoods over ``dims`` pixels × bands."""
    return -log_likelihood / (dims * math.log(2))
