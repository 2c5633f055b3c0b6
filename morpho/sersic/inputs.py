"""What the Sérsic network sees: noise-scaled, canonically oriented, stretched images.

Each galaxy image (flux units) is divided by its own noise σ, estimated from the
stamp's border (1.4826·MAD), so that pixels are in units of the noise whatever
the survey's zero-point or exposure time; the network predicts ``ln(F/σ)`` and the
flux follows as ``σ · exp(...)``. The image is then turned to its canonical
orientation (:mod:`morpho.sersic.pose`) and softened with ``sign(x) ln(1 + |x| / s)``
(logarithmic for bright pixels like asinh, and twice as fast to compute).
Six scalars go beside the image: ``ln`` of the PSF FWHM in pixels, the stamp's
summed signal-to-noise (compressed by asinh), the orientation-free shape measures
of the weighted moments (two ellipticity components and a size, see
:class:`morpho.sersic.pose.Pose`), strong first guesses of q and r_e, and the
PSF's wing fraction (:func:`morpho.sersic.psf.psf_wing_fraction`): Moffat wings
mimic a higher Sérsic index, so the network must know them. With ``growth_radii``
the curve of growth in elliptical apertures follows
(:func:`morpho.sersic.growth.growth_fractions`, one scalar per radius but the last):
the concentration that sets the index, measured at full resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from morpho.nets.base import remember_init
from morpho.sersic.adaptive import N_ADAPTIVE_FEATURES, adaptive_features
from morpho.sersic.growth import check_radii, growth_fractions
from morpho.sersic.pose import Pose, align_major_axis, canonical_pose
from morpho.sersic.psf import GAUSSIAN_WING_FRACTION
from morpho.utils import full_precision

__all__ = ["N_FEATURES", "SersicInputBatch", "SersicInputs", "detection_snr"]

#: Mean of |Δ| over |Δ| <= 5 E|Δ| for a Gaussian Δ, over E|Δ|: with c = 5 E|Δ| =
#: 5 sqrt(2/π) σ_Δ, (1 - exp(-c²/2σ_Δ²)) / erf(c / sqrt(2) σ_Δ).
_CLIPPED_MEAN_FACTOR = (1.0 - math.exp(-25.0 / math.pi)) / math.erf(5.0 / math.sqrt(math.pi))

#: Scalars the network receives beside the image without growth curves.
N_FEATURES = 6


@dataclass
class SersicInputBatch:
    """A batch ready for :class:`morpho.nets.SersicNet`.

    Attributes
    ----------
    image : (N, K, H, W) tensor
        Canonically oriented, ``sign(x) ln(1 + |x| / s)`` of the image in noise units,
        one channel for each of the K softenings ``s``.
    features : (N, n_features) tensor
        ``ln(PSF FWHM / pixel)``, ``asinh(Σx / H)``, the three ``pose.shape`` values,
        the PSF's wing fraction, then the growth fractions if any.
    log_sigma : (N,) tensor
        ln of the noise σ (flux units) each image was divided by.
    pose : Pose
        The orientation operations, to map the position angle back.
    anchor : (N, 4) tensor or None
        With ``SersicInputs(anchors=True)``: first guesses of the four means in
        their transformed variables (NaN: no guess), which the head corrects
        (:func:`morpho.sersic.likelihood.decode`); only ``ln(F/σ)`` has one, from the
        stamp's sum.
    """

    image: Tensor
    features: Tensor
    log_sigma: Tensor
    pose: Pose
    anchor: Tensor | None = None


def detection_snr(images: Tensor, *, smoothing: float = 2.0, centre: int = 16) -> Tensor:
    """Peak S/N of the source near the stamp centre, (N,).

    The image in noise units is smoothed with a unit-sum Gaussian of σ =
    ``smoothing`` pixels; its maximum inside the central ``centre × centre``
    pixels is divided by the smoothed noise σ, ``sqrt(Σ k²)``. Pure noise gives
    about 2 (above 4 in 0.3% of 64×64 stamps); a compact galaxy at matched-filter
    S/N 5 about 4, a large one less.

    Parameters
    ----------
    images : (N, H, W) tensor
        Images in units of their noise σ.
    """
    radius = math.ceil(3 * smoothing)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel_1d = torch.exp(-(offsets**2) / (2 * smoothing**2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    smoothed = F.conv2d(images[:, None], kernel_1d.view(1, 1, 1, -1), padding=(0, radius))
    smoothed = F.conv2d(smoothed, kernel_1d.view(1, 1, -1, 1), padding=(radius, 0))[:, 0]
    noise = kernel_1d.square().sum()  # Σk² of the separable 2-D kernel is (Σk₁²)²; sqrt → Σk₁²
    height, width = images.shape[-2:]
    top, left = max(0, (height - centre) // 2), max(0, (width - centre) // 2)
    core = smoothed[:, top : top + centre, left : left + centre]
    return core.amax(dim=(-2, -1)) / noise


class SersicInputs(nn.Module):
    """Prepare flux images for the Sérsic network (no fitted state).

    Parameters
    ----------
    band : int, default 0
        Band to fit.
    stretch_scale : float or sequence of float, default 2
        Softening ``s`` of ``sign(x) ln(1 + |x| / s)``, in units of the noise σ; with
        several, one image channel per softening (:attr:`n_channels`), so that the
        network sees both the faint outskirts (small ``s``) and the bright core's
        isophotes (large ``s``, compressed less).
    weight_sigma : float, default 8
        σ (pixels) of the Gaussian weight of the orientation moments.
    border : int, default 2
        Width (pixels) of the border the noise σ is measured on (the outermost
        pixels hold the least galaxy light).
    growth_radii : sequence of float, optional
        Circularised aperture radii (pixels) of the curve of growth given as
        features (for example :data:`morpho.sersic.growth.DEFAULT_GROWTH_RADII`);
        None or empty: none.
    anchors : bool, default False
        Also give a first guess of the flux (:attr:`SersicInputBatch.anchor`).
    adaptive : bool, default False
        Also give the canonical image's adaptive moments, four scalars after the
        growth fractions (:func:`morpho.sersic.adaptive.adaptive_features`): an
        elliptical matched weight, which measures the position angle better than
        the round weight of the orientation.
    align : bool, default False
        Also turn each canonical image so that its weighted moments' major axis lies
        along the pixel rows (:func:`morpho.sersic.pose.align_major_axis`, bicubic):
        the network then reads the position angle as a small offset from the
        moments' and the axis ratio along the grid.
    """

    @remember_init
    def __init__(
        self,
        *,
        band: int = 0,
        stretch_scale: float | Sequence[float] = 2.0,
        weight_sigma: float = 8.0,
        border: int = 2,
        growth_radii: Sequence[float] | None = None,
        anchors: bool = False,
        adaptive: bool = False,
        align: bool = False,
    ) -> None:
        super().__init__()
        self.band = band
        scales = (stretch_scale,) if isinstance(stretch_scale, int | float) else stretch_scale
        self.stretch_scales = tuple(float(scale) for scale in scales)
        if not self.stretch_scales or min(self.stretch_scales) <= 0:
            raise ValueError(f"stretch_scale must be positive, got {stretch_scale!r}")
        self.weight_sigma = weight_sigma
        self.border = border
        self.growth_radii = check_radii(growth_radii) if growth_radii else ()
        self.anchors = anchors
        self.adaptive = adaptive
        self.align = align

    @property
    def n_channels(self) -> int:
        """Image channels per galaxy in :attr:`SersicInputBatch.image` (one per softening)."""
        return len(self.stretch_scales)

    @property
    def n_features(self) -> int:
        """Scalars per galaxy in :attr:`SersicInputBatch.features`."""
        adaptive = N_ADAPTIVE_FEATURES if self.adaptive else 0
        return N_FEATURES + max(len(self.growth_radii) - 1, 0) + adaptive

    def noise_sigma(self, images: Tensor) -> Tensor:
        """Noise σ of the fitted band of ``(N, C, H, W)`` images, (N,), never zero.

        From differences of neighbouring pixels along the stamp's edge rows and
        columns (``border`` deep), which cancel smooth galaxy light: for white
        noise ``E|Δ| = 2σ/√π``. Differences beyond 5 times a first estimate
        (a cosmic ray, a neighbour's core) are left out of a second.
        """
        band = images[:, self.band]
        width = self.border
        edges = torch.cat(
            [
                band[:, :width, :].diff(dim=-1).flatten(1),
                band[:, -width:, :].diff(dim=-1).flatten(1),
                band[:, :, :width].diff(dim=-2).flatten(1),
                band[:, :, -width:].diff(dim=-2).flatten(1),
            ],
            dim=1,
        ).abs()
        first = edges.mean(dim=1, keepdim=True)
        kept = edges <= 5 * first
        mean = (edges * kept).sum(dim=1) / kept.sum(dim=1).clamp_min(1)
        sigma = mean * (math.sqrt(math.pi) / 2) / _CLIPPED_MEAN_FACTOR
        floor = 1e-6 * band.amax(dim=(1, 2)).abs().clamp_min(1e-30)
        return torch.maximum(sigma, floor)

    def forward(
        self, images: Tensor, psf_fwhm_pix: Tensor, psf_wings: Tensor | None = None
    ) -> SersicInputBatch:
        """Prepare ``(N, C, H, W)`` flux images whose PSFs have FWHM ``(N,)`` pixels.

        ``psf_wings`` (N,) are the PSFs' wing fractions; None takes a Gaussian PSF's
        (:data:`~morpho.sersic.psf.GAUSSIAN_WING_FRACTION`).
        """
        if images.ndim != 4 or not 0 <= self.band < images.shape[1]:
            raise ValueError(
                f"expected (N, C, H, W) images with band {self.band}, got {tuple(images.shape)}"
            )
        with full_precision(images) as images:  # moments, σ and pose in float32
            return self._prepared(images, psf_fwhm_pix, psf_wings)

    def _prepared(
        self, images: Tensor, psf_fwhm_pix: Tensor, psf_wings: Tensor | None
    ) -> SersicInputBatch:
        sigma = self.noise_sigma(images)
        scaled = images[:, self.band : self.band + 1] / sigma[:, None, None, None]
        canonical, pose = canonical_pose(scaled, weight_sigma=self.weight_sigma)
        stamp_snr = scaled.sum(dim=(1, 2, 3)) / math.sqrt(scaled.shape[-1] * scaled.shape[-2])
        if psf_wings is None:
            psf_wings = torch.full_like(psf_fwhm_pix, GAUSSIAN_WING_FRACTION)
        parts = [
            torch.log(psf_fwhm_pix)[:, None],
            torch.asinh(stamp_snr)[:, None],
            pose.shape,
            psf_wings[:, None].to(pose.shape),
        ]
        if self.growth_radii:
            # The canonical image's moments, from the pose: not computed a second time.
            parts.append(growth_fractions(canonical[:, 0], self.growth_radii, moments=pose.moments))
        if self.adaptive:
            parts.append(adaptive_features(canonical[:, 0], psf_fwhm_pix))
        features = torch.cat(parts, dim=1)
        if self.align:
            canonical, pose = align_major_axis(canonical, pose)
        return SersicInputBatch(
            image=self._stretched(canonical),
            features=features.to(images.dtype),
            log_sigma=torch.log(sigma),
            pose=pose,
            anchor=_anchor(stamp_snr, scaled.shape) if self.anchors else None,
        )

    def _stretched(self, canonical: Tensor) -> Tensor:
        """``sign(x) ln(1 + |x| / s)`` of the (N, 1, H, W) images, one channel per ``s``."""
        magnitude = canonical.abs()
        channels = [(magnitude / scale).log1p_() for scale in self.stretch_scales]
        out = channels[0] if len(channels) == 1 else torch.cat(channels, dim=1)
        return out.copysign_(canonical)


def _anchor(stamp_snr: Tensor, shape: torch.Size) -> Tensor:
    """First guesses ``(ln F/σ, NaN, NaN, NaN)``, (N, 4), from the stamps' summed S/N.

    The flux from the stamp's sum, at least the sum's own noise ``sqrt(H W)``: about
    7% median error at S/N 20-200, biased low where the profile's wings leave the
    stamp; the network learns the correction. The weighted moments' sizes and
    ellipticities are no such guesses of r_e and q (errors of 30% and 0.18, the round
    weight and the PSF making galaxies rounder): they stay features only.
    """
    root_pixels = math.sqrt(shape[-1] * shape[-2])  # Σx = stamp_snr · sqrt(H W)
    log_flux = torch.log((stamp_snr * root_pixels).clamp_min(root_pixels))
    none = torch.full_like(log_flux, math.nan)
    return torch.stack([log_flux, none, none, none], dim=1)
