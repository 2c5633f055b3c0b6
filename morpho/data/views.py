"""Random views of galaxy batches for invariance learning, on the training device.

Two views of one galaxy differ only by nuisances that do not change its
morphology: orientation and mirror image, a small change of apparent size and
position, extra noise (a lower S/N), extra PSF blur and a flux scale. Each view
is returned twice: geometrically transformed only (``clean``, a denoising target)
and with the photometric nuisances added too (``noisy``, the network input).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from morpho.data.augment import affine_sample, rotation_matrices
from morpho.data.canonical import border_noise_sigma
from morpho.utils import full_precision

__all__ = ["NuisanceViews", "border_noise_sigma"]


def _gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """Normalised 1-D Gaussian kernels, (N, 2·radius+1); σ = 0 gives a delta."""
    x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    kernel = torch.exp(-0.5 * (x / sigma.clamp_min(1e-3)[:, None]) ** 2)
    return kernel / kernel.sum(dim=1, keepdim=True)


def _blur(images: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
    """Separable Gaussian blur with one σ (pixels, at most ``max_sigma``) per image.

    The kernels reach ``3 max_sigma``: a size known before the batch is drawn, so the
    step never waits for the device to say how large this batch's σ came out.
    """
    n, c, h, w = images.shape
    radius = max(1, math.ceil(3 * max_sigma))
    kernel = _gaussian_kernels(sigma, radius).repeat_interleave(c, dim=0)  # (N·C, K)
    flat = images.reshape(1, n * c, h, w)
    pad = (radius, radius, radius, radius)
    flat = F.pad(flat, pad, mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


class NuisanceViews(nn.Module):
    """Draw one random view of every image of an ``(N, C, H, W)`` flux batch.

    Parameters
    ----------
    rotate : bool
        Rotate by an angle uniform in [0, 360°) and mirror with probability 1/2.
    max_zoom : float
        Apparent size scaled by a factor log-uniform in [1/max_zoom, max_zoom].
    max_shift : float
        Shift uniform in [-max_shift, max_shift] pixels per axis.
    max_noise_factor : float
        Noise σ raised by a factor uniform in [1, max_noise_factor] (Gaussian noise
        added to reach it; the σ of each image is measured on its border).
    max_blur : float
        Extra Gaussian blur σ uniform in [0, max_blur] pixels.
    max_flux_factor : float
        Flux scaled log-uniformly in [1/max_flux_factor, max_flux_factor].
    recorrupt_noise : bool
        Return recorrupted-to-recorrupted pairs (see :meth:`recorrupt`).
    """

    def __init__(
        self,
        *,
        rotate: bool = True,
        max_zoom: float = 1.1,
        max_shift: float = 1.0,
        max_noise_factor: float = 2.0,
        max_blur: float = 1.0,
        max_flux_factor: float = 1.5,
        recorrupt_noise: bool = False,
    ) -> None:
        super().__init__()
        if max_zoom < 1 or max_noise_factor < 1 or max_flux_factor < 1:
            raise ValueError("max_zoom, max_noise_factor and max_flux_factor must be >= 1")
        if max_shift < 0 or max_blur < 0:
            raise ValueError("max_shift and max_blur must be >= 0 pixels")
        self.rotate, self.max_zoom, self.max_shift = rotate, max_zoom, max_shift
        self.max_noise_factor, self.max_blur = max_noise_factor, max_blur
        self.max_flux_factor = max_flux_factor
        self.recorrupt_noise = recorrupt_noise

    def _uniform(self, n: int, low: float, high: float, like: Tensor) -> Tensor:
        return torch.rand(n, device=like.device, dtype=like.dtype) * (high - low) + low

    def geometric(self, images: Tensor) -> Tensor:
        """Random rotation, mirror, zoom and shift in one bilinear resampling."""
        n = images.shape[0]
        angle = self._uniform(n, 0.0, 2 * math.pi if self.rotate else 0.0, images)
        zoom = torch.exp(
            self._uniform(n, -math.log(self.max_zoom), math.log(self.max_zoom), images)
        )
        mirror = (
            torch.where(torch.rand(n, device=images.device) < 0.5, -1.0, 1.0)
            if self.rotate
            else torch.ones(n)
        )
        mirror = mirror.to(images)
        shift = torch.stack(
            [self._uniform(n, -self.max_shift, self.max_shift, images) for _ in range(2)], 1
        )
        # Output pixel p samples the input at shift + R(angle)·diag(mirror, 1)·p / zoom.
        mirrors = torch.diag_embed(torch.stack([mirror, torch.ones_like(mirror)], -1))
        matrix = rotation_matrices(angle) @ mirrors / zoom.view(n, 1, 1)
        out = affine_sample(images, matrix, shift)
        return out / zoom.view(n, 1, 1, 1) ** 2  # magnified by zoom: keep the flux

    def photometric(self, images: Tensor) -> Tensor:
        """Extra blur, then extra noise, then a flux scale."""
        n = images.shape[0]
        out = images
        if self.max_blur > 0:
            out = _blur(out, self._uniform(n, 0.0, self.max_blur, images), self.max_blur)
        if self.max_noise_factor > 1:
            sigma = border_noise_sigma(images)
            factor = self._uniform(n, 1.0, self.max_noise_factor, images)[:, None]
            extra = sigma * torch.sqrt(factor**2 - 1)
            out = out + torch.randn_like(out) * extra[:, :, None, None]
        log_flux = math.log(self.max_flux_factor)
        return out * torch.exp(self._uniform(n, -log_flux, log_flux, images)).view(n, 1, 1, 1)

    def recorrupt(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Recorrupted-to-recorrupted pair (Pang et al. 2021): ``(y - z/α, y + αz)``.

        With ``z`` Gaussian of the image's own noise σ (measured on the border) and
        α log-uniform in [1/2, 2], the two images carry independent noise of the
        same signal, so a network trained to map the second to the first learns to
        denoise (as Noise2Noise, Lehtinen et al. 2018) from single noisy images.
        """
        n = images.shape[0]
        sigma = border_noise_sigma(images)[:, :, None, None]
        alpha = torch.exp(self._uniform(n, -math.log(2.0), math.log(2.0), images)).view(n, 1, 1, 1)
        z = torch.randn_like(images) * sigma
        return images - z / alpha, images + alpha * z

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(target, view)``.

        ``view`` is the geometric view with photometric nuisances. ``target`` is the
        geometric view itself, or, with ``recorrupt``, an independently re-noised copy
        (see :meth:`recorrupt`), so that reconstructing it teaches denoising.
        """
        with full_precision(images) as images:  # resampling and noise in float32
            geometric = self.geometric(images)
            if not self.recorrupt_noise:
                return geometric, self.photometric(geometric)
            target, noisier = self.recorrupt(geometric)
            return target, self.photometric(noisier)
