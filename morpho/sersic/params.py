"""Bounds and the internal, well-conditioned parameters of a Sérsic fit.

A fit works in

.. math::

    z = (\\ln F,\\; x_0,\\; y_0,\\; \\ln r_e,\\; \\ln n,\\; η_1,\\; η_2), \\qquad
    (η_1, η_2) = t\\,(\\cos 2φ, \\sin 2φ), \\qquad
    q = \\exp(-L \\tanh(t / L)), \\; L = \\ln(1 / q_{\\min}),

the logarithms putting the scale parameters on relative steps, and the ellipse
components ``η`` making the shape smooth through round (no PA degeneracy at
``q = 1``, no ``q > 1`` ambiguity) with ``q_min < q <= 1`` built in (``t ≈ ln(1/q)``
away from ``q_min``). The reported parameters follow
:data:`~morpho.sersic.profile.PARAMETER_NAMES`; the PA is wrapped into [0, 180).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from morpho.sersic.profile import PARAMETER_NAMES

__all__ = ["FitBounds", "SersicParametrisation"]


@dataclass(frozen=True)
class FitBounds:
    """Limits of the fitted Sérsic parameters.

    Parameters
    ----------
    r_e : (min, max)
        Major-axis half-light radius in pixels; ``max=None`` is three times the
        stamp's longer side.
    n : (min, max)
        Sérsic index.
    q_min : float
        Smallest axis ratio, in (0, 1).
    """

    r_e: tuple[float, float | None] = (0.3, None)
    n: tuple[float, float] = (0.3, 8.0)
    q_min: float = 0.05

    def __post_init__(self) -> None:
        low, high = self.r_e
        if not (low > 0 and (high is None or high > low)):
            raise ValueError(f"bounds.r_e must be (min > 0, max > min or None), got {self.r_e}")
        if not 0 < self.n[0] < self.n[1]:
            raise ValueError(f"bounds.n must be (min, max) with 0 < min < max, got {self.n}")
        if not 0 < self.q_min < 1:
            raise ValueError(f"bounds.q_min must lie in (0, 1), got {self.q_min}")


class SersicParametrisation:
    """Map between physical parameters and the internal ``z`` of one stamp's fit.

    Parameters
    ----------
    bounds : FitBounds
    shape : (H, W)
        Stamp shape; the centre is bounded to ``[-0.5, W - 0.5] × [-0.5, H - 0.5]``.

    Attributes
    ----------
    lower, upper : (7,) ndarray
        Box bounds of ``z`` (the flux is unbounded: ``ln F`` keeps it positive; the
        ellipse components are bounded at ``±2L``, where ``q < q_min^0.96``).
    """

    def __init__(self, bounds: FitBounds, shape: tuple[int, int]) -> None:
        self.bounds = bounds
        self.q_scale = float(np.log(1.0 / bounds.q_min))
        height, width = shape
        r_max = bounds.r_e[1] if bounds.r_e[1] is not None else 3.0 * max(height, width)
        limit = 2.0 * self.q_scale
        self.lower = np.array(
            [-np.inf, -0.5, -0.5, np.log(bounds.r_e[0]), np.log(bounds.n[0]), -limit, -limit]
        )
        self.upper = np.array(
            [np.inf, width - 0.5, height - 0.5, np.log(r_max), np.log(bounds.n[1]), limit, limit]
        )

    def physical(self, z: np.ndarray) -> np.ndarray:
        """(7,) ``(flux, x0, y0, r_e, n, q, pa_deg)`` of internal parameters ``z``."""
        log_flux, x0, y0, log_r_e, log_n, eta1, eta2 = (float(v) for v in z)
        t = np.hypot(eta1, eta2)
        q = np.exp(-self.q_scale * np.tanh(t / self.q_scale))
        pa_deg = np.degrees(0.5 * np.arctan2(eta2, eta1)) % 180.0
        return np.array([np.exp(log_flux), x0, y0, np.exp(log_r_e), np.exp(log_n), q, pa_deg])

    def internal(self, params: Sequence[float], *, clip: bool = False) -> np.ndarray:
        """(7,) internal ``z`` of physical parameters; ``clip`` moves it inside the bounds."""
        flux, x0, y0, r_e, n, q, pa_deg = (float(v) for v in params)
        ratio = min(np.log(1.0 / min(max(q, 1e-12), 1.0)) / self.q_scale, 1.0 - 1e-9)
        t = self.q_scale * np.arctanh(ratio)
        angle = 2.0 * np.radians(pa_deg)
        z = np.array(
            [np.log(flux), x0, y0, np.log(r_e), np.log(n), t * np.cos(angle), t * np.sin(angle)]
        )
        if clip:
            span = self.upper - self.lower
            margin = 1e-6 * np.where(np.isfinite(span), span, 1.0)
            z = np.clip(z, self.lower + margin, self.upper - margin)
        return z

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        """(7, 7) ``∂ physical / ∂ z`` at ``z`` (PA in degrees)."""
        p = self.physical(z)
        eta1, eta2 = float(z[5]), float(z[6])
        t = max(float(np.hypot(eta1, eta2)), 1e-12)
        jac = np.diag([p[0], 1.0, 1.0, p[3], p[4], 0.0, 0.0])
        dq_dt = -p[5] / np.cosh(t / self.q_scale) ** 2
        jac[5, 5:] = dq_dt * np.array([eta1, eta2]) / t
        jac[6, 5:] = np.degrees(0.5 * np.array([-eta2, eta1]) / t**2)
        return jac

    def propagate(self, z: np.ndarray, covariance: np.ndarray) -> np.ndarray:
        """Covariance of the physical parameters from that of ``z`` (first order)."""
        jac = self.jacobian(z)
        return jac @ covariance @ jac.T

    def at_bound(self, z: np.ndarray, active: np.ndarray | None = None) -> tuple[str, ...]:
        """Names of the parameters at a bound (``q`` when ``q < 1.2 q_min``)."""
        active = np.zeros(len(z), dtype=int) if active is None else np.asarray(active)
        span = self.upper - self.lower
        stuck = []
        for index in range(1, 5):
            near = min(z[index] - self.lower[index], self.upper[index] - z[index])
            if active[index] != 0 or near < 1e-6 * span[index]:
                stuck.append(PARAMETER_NAMES[index])
        if active[5] != 0 or active[6] != 0 or self.physical(z)[5] < 1.2 * self.bounds.q_min:
            stuck.append("q")
        return tuple(stuck)
