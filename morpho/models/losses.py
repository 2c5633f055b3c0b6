"""Loss terms, as small functions with their references."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["vicreg_terms"]


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
