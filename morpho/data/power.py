"""Box-Cox and Yeo-Johnson power transforms and their inverses, in torch.

The maths only, as plain functions of a tensor and an exponent λ (broadcast,
e.g. ``(C, 1, 1)`` per band); :class:`morpho.data.stretches.PowerStretch`
fits λ and wraps them as a module. The formulas are written with ``expm1``
and ``log1p`` so that they stay accurate, and continuous, as λ → 0 (and, for
the negative branch of Yeo-Johnson, as λ → 2). They agree with
:func:`scipy.stats.boxcox` and :func:`scipy.stats.yeojohnson`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_cox", "box_cox_inverse", "yeo_johnson", "yeo_johnson_inverse"]


def _safe_exponent(a: Tensor) -> tuple[Tensor, Tensor]:
    """Mask of exponents treated as 0, and ``a`` with those replaced by 1.

    Only ``|a| < sqrt(tiny)`` (about 1e-154 in float64, 1e-19 in float32) is
    replaced by the limit: above it ``expm1(a·t) / a`` is accurate to rounding,
    and below it the limit differs from the formula by less than rounding.
    Replacing ``a`` by 1 in the branch that is not used avoids a 0/0 there,
    which would turn gradients into NaN.
    """
    small = a.abs() < torch.finfo(a.dtype).tiny ** 0.5
    return small, torch.where(small, torch.ones_like(a), a)


def _expm1_ratio(a: Tensor, t: Tensor) -> Tensor:
    """``expm1(a·t) / a``, continued by its limit ``t`` at ``a = 0``."""
    small, safe = _safe_exponent(a)
    return torch.where(small, t, torch.expm1(safe * t) / safe)


def _log1p_ratio(a: Tensor, y: Tensor) -> Tensor:
    """``log1p(a·y) / a`` with ``a·y`` clamped at -1, continued by ``y`` at ``a = 0``."""
    small, safe = _safe_exponent(a)
    return torch.where(small, y, torch.log1p((safe * y).clamp(min=-1.0)) / safe)


def box_cox(x: Tensor, lmbda: Tensor | float) -> Tensor:
    """Box-Cox power transform (Box & Cox 1964, J. R. Stat. Soc. B 26, 211).

    ``y = (x**λ - 1) / λ`` for λ ≠ 0 and ``y = log x`` for λ = 0, evaluated as
    ``expm1(λ log x) / λ``, which stays accurate as λ → 0.

    Parameters
    ----------
    x : Tensor
        Positive values, any shape. ``x = 0`` gives the limit ``-1/λ`` (λ > 0)
        or ``-inf``; negative ``x`` give NaN.
    lmbda : float or Tensor
        The exponent, broadcastable to ``x`` (e.g. ``(C, 1, 1)`` per band).

    Returns
    -------
    Tensor
        The transformed values, shape and dtype of ``x``.
    """
    return _expm1_ratio(torch.as_tensor(lmbda, dtype=x.dtype, device=x.device), torch.log(x))


def box_cox_inverse(y: Tensor, lmbda: Tensor | float) -> Tensor:
    """Inverse of :func:`box_cox`: ``x = (1 + λ y)**(1/λ)``, or ``exp(y)`` for λ = 0.

    Parameters
    ----------
    y : Tensor
        Transformed values, any shape. Values outside the range of the forward
        map (``λ y < -1``) are mapped to its boundary: 0 for λ > 0, +inf for λ < 0.
    lmbda : float or Tensor
        The exponent, broadcastable to ``y``.

    Returns
    -------
    Tensor
        Positive values, shape and dtype of ``y``.
    """
    return torch.exp(_log1p_ratio(torch.as_tensor(lmbda, dtype=y.dtype, device=y.device), y))


def yeo_johnson(x: Tensor, lmbda: Tensor | float) -> Tensor:
    """Yeo-Johnson power transform (Yeo & Johnson 2000, Biometrika 87, 954).

    For ``x >= 0``: ``((x + 1)**λ - 1) / λ``, or ``log(1 + x)`` for λ = 0.
    For ``x < 0``: ``-((1 - x)**(2 - λ) - 1) / (2 - λ)``, or ``-log(1 - x)`` for λ = 2.
    Both branches are evaluated as ``expm1(a log1p(|x|)) / a``, accurate near
    λ = 0 and λ = 2.

    Parameters
    ----------
    x : Tensor
        Real values of any sign, any shape.
    lmbda : float or Tensor
        The exponent, broadcastable to ``x``.

    Returns
    -------
    Tensor
        The transformed values (same sign as ``x``), shape and dtype of ``x``.
    """
    lmbda = torch.as_tensor(lmbda, dtype=x.dtype, device=x.device)
    positive = _expm1_ratio(lmbda, torch.log1p(x.clamp(min=0.0)))
    negative = -_expm1_ratio(2.0 - lmbda, torch.log1p((-x).clamp(min=0.0)))
    return torch.where(x >= 0, positive, negative)


def yeo_johnson_inverse(y: Tensor, lmbda: Tensor | float) -> Tensor:
    """Inverse of :func:`yeo_johnson`.

    For ``y >= 0``: ``x = (1 + λ y)**(1/λ) - 1``; for ``y < 0``:
    ``x = 1 - (1 - (2 - λ) y)**(1 / (2 - λ))``, with the logarithmic limits at
    λ = 0 and λ = 2.

    Parameters
    ----------
    y : Tensor
        Transformed values, any shape. Values outside the range of the forward
        map are mapped to its boundary (±inf).
    lmbda : float or Tensor
        The exponent, broadcastable to ``y``.

    Returns
    -------
    Tensor
        Shape and dtype of ``y``.
    """
    lmbda = torch.as_tensor(lmbda, dtype=y.dtype, device=y.device)
    positive = torch.expm1(_log1p_ratio(lmbda, y.clamp(min=0.0)))
    negative = -torch.expm1(_log1p_ratio(2.0 - lmbda, (-y).clamp(min=0.0)))
    return torch.where(y >= 0, positive, negative)
