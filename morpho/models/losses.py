"""Loss terms, as small functions with their references."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["nuisance_correlation", "vicreg_terms"]


def _off_diagonal(matrix: Tensor) -> Tensor:
    n = matrix.shape[0]
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_terms(a: Tensor, b: Tensor, *, eps: float = 1e-4) -> tuple[Tensor, Tensor, Tensor]:
    """Invariance, variance and covariance terms of VICReg (Bardes, Ponce & LeCun 2022).

    Parameters
    ----------
    a, b : (N, D) Tensor
        Projected embeddings of two views of the same N images.

    Returns
    -------
    invariance : Tensor
        ``mean((a - b)²)``.
    variance : Tensor
        ``mean(relu(1 - sqrt(var + eps)))`` over dimensions, averaged over a and b.
    covariance : Tensor
        Sum of squared off-diagonal covariances divided by D, summed over a and b.
    """
    invariance = F.mse_loss(a, b)
    variance = a.new_zeros(())
    covariance = a.new_zeros(())
    for z in (a, b):
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + eps)
        variance = variance + F.relu(1 - std).mean() / 2
        cov = (z.T @ z) / max(z.shape[0] - 1, 1)
        covariance = covariance + _off_diagonal(cov).pow(2).sum() / z.shape[1]
    return invariance, variance, covariance


def nuisance_correlation(z: Tensor, nuisances: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Squared Pearson correlations between embedding dimensions and nuisances.

    ``Σ_j Σ_k corr(z_j, u_k)² / K`` over the batch: zero exactly when no dimension of
    the embedding is linearly related to any nuisance, so that a linear fit of the
    nuisance from the embedding explains nothing (its R² is ``c^T Σ_z^{-1} c``, with
    ``c`` the covariances this term drives to zero).

    Parameters
    ----------
    z : (N, D) Tensor
        Embeddings of N images.
    nuisances : (N, K) Tensor
        What the embedding should not encode (for example log S/N and log size,
        measured on each image); N >= 2.
    """
    if z.ndim != 2 or nuisances.ndim != 2 or len(z) != len(nuisances) or len(z) < 2:
        raise ValueError(
            f"expected (N, D) embeddings and (N, K) nuisances with N >= 2, got "
            f"{tuple(z.shape)} and {tuple(nuisances.shape)}"
        )

    def standardised(x: Tensor) -> Tensor:
        x = x - x.mean(dim=0)
        return x / torch.sqrt(x.square().mean(dim=0) + eps)

    correlation = standardised(z).T @ standardised(nuisances.to(z.dtype)) / len(z)
    return correlation.square().sum() / nuisances.shape[1]
