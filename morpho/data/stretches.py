"""Intensity stretches for galaxy images: arcsinh, Box-Cox, Yeo-Johnson and identity.

Galaxy cutouts in flux units span a huge dynamic range (a bright core may be
1000 times the sky noise) and, being sky-subtracted, contain negative noise
pixels. A stretch compresses that range before a network sees the pixels.

Every stretch is an :class:`torch.nn.Module` acting on ``(C, H, W)`` or
``(N, C, H, W)`` tensors, with an exact :meth:`Stretch.inverse` (up to float
rounding). Parameters that depend on the data (the power transforms' λ) are
fitted by :meth:`Stretch.fit` on training images and kept in buffers, so that
they are saved in, and restored from, a ``state_dict``. Non-finite inputs
propagate (NaN in, NaN out); fitting rejects them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from morpho.data.pixels import FittedStateModule, check_images, sample_band_pixels
from morpho.data.power import box_cox, box_cox_inverse, yeo_johnson, yeo_johnson_inverse

__all__ = [
    "ArcsinhStretch",
    "IdentityStretch",
    "PowerStretch",
    "Stretch",
    "make_stretch",
]

_BOX_COX_FLOOR = 1e-3
"""Box-Cox inputs are kept >= this fraction of the training pixel range (see PowerStretch)."""


def _per_band(values: Tensor, x: Tensor, owner: str) -> Tensor:
    """Cast a ``()`` or ``(C,)`` parameter to ``x`` and shape it ``(C, 1, 1)`` for broadcasting."""
    bands = check_images(x)
    values = values.to(dtype=x.dtype, device=x.device)
    if values.ndim == 0:
        return values
    if values.numel() != bands:
        raise ValueError(
            f"{owner} holds parameters for {values.numel()} bands but the images have "
            f"{bands} bands (shape {tuple(x.shape)}); use images with the bands it was "
            "built or fitted for"
        )
    return values.view(-1, 1, 1)


class Stretch(FittedStateModule, abc.ABC):
    """Base class of the stretches: an invertible per-pixel map of ``(C, H, W)`` tensors.

    Subclasses implement :meth:`forward` and :meth:`inverse` for ``(C, H, W)``
    and ``(N, C, H, W)`` float tensors; stretches with data-dependent
    parameters also override :meth:`fit`. ``name`` is the :func:`make_stretch`
    name that rebuilds the stretch (before ``load_state_dict``).
    """

    name: str = ""

    def fit(self, images: Tensor | Iterable[Tensor]) -> Stretch:
        """Fit data-dependent parameters; a no-op for stretches without any.

        Parameters
        ----------
        images : (N, C, H, W) or (C, H, W) float Tensor, or iterable of them
            Training images in flux units.

        Returns
        -------
        Stretch
            ``self``.
        """
        return self

    @abc.abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """Stretch ``x``: ``(C, H, W)`` or ``(N, C, H, W)`` float, same shape out."""

    @abc.abstractmethod
    def inverse(self, y: Tensor) -> Tensor:
        """Undo :meth:`forward`: ``(C, H, W)`` or ``(N, C, H, W)`` float, same shape out."""


class IdentityStretch(Stretch):
    """No stretch: returns its input unchanged (the same tensor, not a copy)."""

    name = "none"

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x``, checked to be ``(C, H, W)`` or ``(N, C, H, W)`` float."""
        check_images(x)
        return x

    def inverse(self, y: Tensor) -> Tensor:
        """Return ``y``, checked to be ``(C, H, W)`` or ``(N, C, H, W)`` float."""
        check_images(y)
        return y


class ArcsinhStretch(Stretch):
    """Arcsinh stretch ``y = asinh(x / scale)`` (Lupton, Gunn & Szalay 1999, AJ 118, 1406).

    Linear (``y ≈ x / scale``) for ``|x| ≪ scale`` and logarithmic
    (``y ≈ sign(x) log(2|x| / scale)``) for ``|x| ≫ scale``; odd, so negative
    sky noise stays symmetric about 0. A good ``scale`` is about the sky noise
    σ, or a few σ. The inverse is ``x = scale · sinh(y)``.

    Parameters
    ----------
    scale : float or sequence of float, optional
        Softening scale in the images' flux units: one value for all bands or
        one per band. Positive and finite. Stored in the ``scale`` buffer, so
        a loaded ``state_dict`` replaces it.

    Raises
    ------
    ValueError
        If ``scale`` is empty, nested, non-finite or not positive.
    """

    name = "arcsinh"

    def __init__(self, scale: float | Sequence[float] = 1.0) -> None:
        super().__init__()
        values = torch.as_tensor(scale, dtype=torch.float32)
        if values.ndim > 1 or values.numel() == 0:
            raise ValueError(f"scale must be a number or a flat sequence per band, got {scale!r}")
        if not bool(torch.all(torch.isfinite(values) & (values > 0))):
            raise ValueError(f"scale must be positive and finite, got {scale!r}")
        self.register_buffer("scale", values)

    def forward(self, x: Tensor) -> Tensor:
        """``asinh(x / scale)`` of ``(C, H, W)`` or ``(N, C, H, W)`` float ``x``."""
        return torch.asinh(x / _per_band(self.scale, x, "ArcsinhStretch"))

    def inverse(self, y: Tensor) -> Tensor:
        """``scale · sinh(y)`` of ``(C, H, W)`` or ``(N, C, H, W)`` float ``y``."""
        return _per_band(self.scale, y, "ArcsinhStretch") * torch.sinh(y)

    def extra_repr(self) -> str:
        return f"scale={self.scale.tolist()}"


class PowerStretch(Stretch):
    """Box-Cox or Yeo-Johnson power transform with one λ per band, fitted on training pixels.

    :meth:`fit` draws a seeded random sample of at most ``max_pixels`` pixels
    (all bands at one position) and chooses, per band, the λ that maximises
    the normal log-likelihood of the transformed sample
    (:func:`scipy.stats.boxcox_normmax` with ``method="mle"``,
    :func:`scipy.stats.yeojohnson_normmax`). The transforms themselves are
    :func:`morpho.data.power.box_cox` and :func:`morpho.data.power.yeo_johnson`.

    Box-Cox needs positive input. With ``lo`` and ``hi`` the band's minimum
    and maximum over the fitted sample, :meth:`fit` stores
    ``floor = 1e-3 · (hi - lo)`` and ``shift = max(0, floor - lo)``, so that
    the shifted training sample is >= ``floor`` (no shift for data that are
    already positive enough). :meth:`forward` computes
    ``box_cox(max(x + shift, floor), λ)``: pixels below ``floor - shift``
    (``lo`` itself whenever a shift was needed), such as more negative noise in
    test images, are clamped there, and :meth:`inverse` cannot recover them.

    Yeo-Johnson accepts any sign but is not scale-invariant: the fitted λ
    depends on the flux units, so feed it images in units of the sky noise or
    similar.

    Parameters
    ----------
    method : {"yeo-johnson", "box-cox"}, optional
        Which transform.
    max_pixels : int, optional
        Size of the pixel sample λ is fitted on.
    seed : int, optional
        Seed of the sample.

    Raises
    ------
    ValueError
        If ``method`` is not one of the two names.
    """

    METHODS = ("yeo-johnson", "box-cox")

    def __init__(
        self, method: str = "yeo-johnson", *, max_pixels: int = 200_000, seed: int = 0
    ) -> None:
        super().__init__()
        if method not in self.METHODS:
            raise ValueError(f"unknown power transform {method!r}; use one of {self.METHODS}")
        self.method = method
        self.max_pixels = max_pixels
        self.seed = seed
        self.register_buffer("lmbda", torch.empty(0))
        if method == "box-cox":
            self.register_buffer("shift", torch.empty(0))
            self.register_buffer("floor", torch.empty(0))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, images: Tensor | Iterable[Tensor]) -> PowerStretch:
        """Fit λ (and, for Box-Cox, ``shift`` and ``floor``) per band.

        Parameters
        ----------
        images : (N, C, H, W) or (C, H, W) float Tensor, or iterable of them
            Training images; finite, same band count throughout.

        Returns
        -------
        PowerStretch
            ``self``, fitted.

        Raises
        ------
        ValueError
            If a band of the sample is constant, if the images are not finite,
            or if the fitted λ overflows float32 on the training range.
        """
        pixels = sample_band_pixels(images, max_pixels=self.max_pixels, seed=self.seed).numpy()
        lo, hi = pixels.min(axis=0), pixels.max(axis=0)
        constant = np.flatnonzero(hi <= lo)
        if constant.size:
            raise ValueError(
                f"band(s) {constant.tolist()} of the training pixels are constant; a power "
                "transform cannot be fitted to them (drop the band or use the arcsinh stretch)"
            )
        if self.method == "box-cox":
            floor = _BOX_COX_FLOOR * (hi - lo)
            shift = np.maximum(0.0, floor - lo)
            shifted = pixels + shift
            lmbda = [stats.boxcox_normmax(band, method="mle") for band in shifted.T]
            self._store("floor", floor)
            self._store("shift", shift)
        else:
            lmbda = [stats.yeojohnson_normmax(p) for p in pixels.T]
        self._store("lmbda", np.asarray(lmbda, dtype=np.float64))
        self.fitted.fill_(True)
        self._check_finite_range(lo, hi)
        return self

    def _check_finite_range(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Raise, and mark the stretch unfitted, if it overflows float32 on ``[lo, hi]``."""
        ends = torch.as_tensor(np.stack([lo, hi]), dtype=torch.float32)[:, :, None, None]
        if not bool(torch.isfinite(self(ends)).all()):
            self.fitted.fill_(False)
            raise ValueError(
                f"the fitted {self.method} λ = {self.lmbda.tolist()} overflows float32 on the "
                "training pixel range; rescale the images (e.g. to units of the sky noise) "
                "or use the arcsinh stretch"
            )

    def _require_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError(
                f"PowerStretch(method={self.method!r}) is not fitted: call fit(images) on "
                "training images, or load_state_dict() a fitted one"
            )

    def forward(self, x: Tensor) -> Tensor:
        """Transform ``(C, H, W)`` or ``(N, C, H, W)`` float ``x`` band by band."""
        self._require_fitted()
        lmbda = _per_band(self.lmbda, x, "PowerStretch")
        if self.method == "box-cox":
            shifted = x + _per_band(self.shift, x, "PowerStretch")
            return box_cox(torch.maximum(shifted, _per_band(self.floor, x, "PowerStretch")), lmbda)
        return yeo_johnson(x, lmbda)

    def inverse(self, y: Tensor) -> Tensor:
        """Undo :meth:`forward` for ``(C, H, W)`` or ``(N, C, H, W)`` float ``y``."""
        self._require_fitted()
        lmbda = _per_band(self.lmbda, y, "PowerStretch")
        if self.method == "box-cox":
            return box_cox_inverse(y, lmbda) - _per_band(self.shift, y, "PowerStretch")
        return yeo_johnson_inverse(y, lmbda)

    def get_extra_state(self) -> dict[str, str]:
        """Save the method name, so a state is never loaded into the other transform."""
        return {"method": self.method}

    def set_extra_state(self, state: dict[str, str]) -> None:
        """Check that a loaded state was saved by a PowerStretch of the same method."""
        saved = state.get("method")
        if saved != self.method:
            raise ValueError(
                f"this state_dict holds a {saved!r} PowerStretch but this instance is "
                f"{self.method!r}; build it with make_stretch({saved!r})"
            )

    def extra_repr(self) -> str:
        return f"method={self.method!r}, max_pixels={self.max_pixels}, seed={self.seed}"

    @property
    def name(self) -> str:
        """The :func:`make_stretch` name of this stretch."""
        return self.method


_STRETCHES = ("arcsinh", "box-cox", "yeo-johnson", "none")


def make_stretch(name: str, **kwargs: object) -> Stretch:
    """Build a stretch by name.

    Parameters
    ----------
    name : {"arcsinh", "box-cox", "yeo-johnson", "none"}
        :class:`ArcsinhStretch`, :class:`PowerStretch` with that method, or
        :class:`IdentityStretch`.
    **kwargs
        Passed to the class (``scale`` for arcsinh; ``max_pixels`` and
        ``seed`` for the power transforms; none for ``"none"``).

    Returns
    -------
    Stretch
        A new, unfitted stretch.

    Raises
    ------
    ValueError
        If ``name`` is not one of the four names.
    """
    if name == "arcsinh":
        return ArcsinhStretch(**kwargs)
    if name in PowerStretch.METHODS:
        return PowerStretch(name, **kwargs)
    if name == "none":
        return IdentityStretch(**kwargs)
    raise ValueError(f"unknown stretch {name!r}; choose one of {_STRETCHES}")
