"""Per-image canonicalisation: centre, align, rescale and flux-normalise galaxies.

An autoencoder left alone spends its code on brightness, size and orientation.
Canonicalisation removes these nuisances before the network sees the image, from
the galaxy's own adaptive (Gaussian-weighted) moments (Bernstein & Jarvis 2002;
Hirata & Seljak 2003):

1. iterate an elliptical Gaussian weight ``w`` matched to the galaxy:
   centroid ``μ = Σ w I x / Σ w I``, second moments ``M = Σ w I (x-μ)(x-μ)ᵀ / Σ w I``,
   next weight covariance ``2M`` (the fixed point for a Gaussian galaxy);
2. resample the image so that ``μ`` lands on the stamp centre, the major axis of
   ``M`` lies along +x, and the geometric-mean size ``det(M)^{1/4}`` becomes
   ``target_sigma`` pixels (one bilinear resampling, reflection padding);
3. divide by the flux inside the stamp (times ``4π target_sigma²``, so that a
   Gaussian galaxy peaks at 1): images in units of the galaxy's own flux.

The measured nuisances (centroid, angle, size, flux) are returned too, so that
they can be reported or regressed against.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from morpho.data.augment import affine_sample, rotation_matrices
from morpho.nets.base import remember_init

__all__ = ["Canonicalize", "adaptive_moments", "border_noise_sigma", "measure_nuisances"]


def border_noise_sigma(images: Tensor, *, width: int = 4) -> Tensor:
    """Robust noise σ of each ``(N, C, H, W)`` image from its border pixels: 1.4826·MAD, (N, C)."""
    n, c, _, _ = images.shape
    border = torch.cat(
        [
            images[..., :width, :].reshape(n, c, -1),
            images[..., -width:, :].reshape(n, c, -1),
            images[..., :, :width].reshape(n, c, -1),
            images[..., :, -width:].reshape(n, c, -1),
        ],
        dim=-1,
    )
    median = border.median(dim=-1, keepdim=True).values
    return 1.4826 * (border - median).abs().median(dim=-1).values


def measure_nuisances(images: Tensor) -> dict[str, Tensor]:
    """What canonicalisation removes, from the adaptive moments of the band sum of
    ``(N, C, H, W)`` images: centroid (N, 2), angle (N,) in radians, size (N,) in
    pixels (``det(M)^{1/4}``, ``σ/√2`` for a Gaussian of σ) and flux (N,)."""
    mu, moments, flux = adaptive_moments(images.sum(dim=1))
    angle = 0.5 * torch.atan2(2 * moments[:, 0, 1], moments[:, 0, 0] - moments[:, 1, 1])
    size = torch.linalg.det(moments).clamp_min(1e-6) ** 0.25
    return {"centroid": mu, "angle": angle, "size": size, "flux": flux}


def _grid(height: int, width: int, device, dtype) -> tuple[Tensor, Tensor]:
    y = torch.arange(height, device=device, dtype=dtype) - (height - 1) / 2
    x = torch.arange(width, device=device, dtype=dtype) - (width - 1) / 2
    return torch.meshgrid(y, x, indexing="ij")


def adaptive_moments(
    images: Tensor, *, iterations: int = 10, initial_sigma: float | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Adaptive centroid, second moments and flux of ``(N, H, W)`` images.

    Parameters
    ----------
    images : (N, H, W) float Tensor
        Sky-subtracted images (noise allowed).
    iterations : int
        Fixed-point iterations of the matched Gaussian weight.
    initial_sigma : float, optional
        Starting weight σ in pixels; ``min(H, W) / 8`` by default.

    Returns
    -------
    centroid : (N, 2) Tensor
        (x, y) in pixels relative to the stamp centre.
    moments : (N, 2, 2) Tensor
        Weighted second moments ``[[Mxx, Mxy], [Mxy, Myy]]`` in pixels².
    flux : (N,) Tensor
        Sum of the pixels of each stamp.
    """
    n, height, width = images.shape
    gy, gx = _grid(height, width, images.device, images.dtype)
    sigma0 = initial_sigma or min(height, width) / 8
    mu = images.new_zeros(n, 2)
    cov = torch.eye(2, device=images.device, dtype=images.dtype).repeat(n, 1, 1) * sigma0**2
    limit = (min(height, width) / 3) ** 2
    moments = cov / 2
    for _ in range(iterations):
        dx, dy = gx - mu[:, 0, None, None], gy - mu[:, 1, None, None]
        inv = torch.linalg.inv(cov)
        quad = inv[:, 0, 0, None, None] * dx**2 + 2 * inv[:, 0, 1, None, None] * dx * dy
        quad = quad + inv[:, 1, 1, None, None] * dy**2
        wi = torch.exp(-0.5 * quad) * images
        norm = wi.sum(dim=(1, 2)).clamp_min(1e-12)
        mu = torch.stack([(wi * gx).sum((1, 2)), (wi * gy).sum((1, 2))], dim=1) / norm[:, None]
        mu = mu.clamp(-width / 4, width / 4)
        dx, dy = gx - mu[:, 0, None, None], gy - mu[:, 1, None, None]
        mxx, myy = (wi * dx * dx).sum((1, 2)) / norm, (wi * dy * dy).sum((1, 2)) / norm
        mxy = (wi * dx * dy).sum((1, 2)) / norm
        moments = torch.stack([torch.stack([mxx, mxy], -1), torch.stack([mxy, myy], -1)], -2)
        cov = _regularise(2 * moments, low=0.5, high=limit)
    return mu, _regularise(moments, low=0.25, high=limit / 2), images.sum(dim=(1, 2))


def _regularise(cov: Tensor, *, low: float, high: float) -> Tensor:
    """Clamp the eigenvalues of symmetric 2×2 matrices into [low, high]."""
    eigval, eigvec = torch.linalg.eigh(cov)
    eigval = eigval.nan_to_num(low).clamp(low, high)
    return eigvec @ torch.diag_embed(eigval) @ eigvec.transpose(-1, -2)


class Canonicalize(nn.Module):
    """Centre, align, rescale and flux-normalise ``(N, C, H, W)`` flux images.

    Moments are measured on the sum of the bands; every band gets the same
    transform. See the module docstring for the method.

    Parameters
    ----------
    center, align, scale : bool
        Which geometric nuisances to remove.
    normalize_flux : bool
        Divide each image by its total flux (all bands together).
    target_sigma : float
        Geometric-mean moment size, in pixels, that ``scale`` maps galaxies to.
    max_zoom : float
        Largest magnification or reduction applied by ``scale``.
    noise_floor : float, optional
        Raise the noise of every canonical image to at least this σ (in canonical
        units, measured on the border) by adding Gaussian noise, so that galaxies
        brighter than the floor all look equally noisy and the embedding cannot
        learn their S/N. In eval mode the added noise comes from a generator seeded
        with ``seed`` at every call, so embeddings are reproducible.
    seed : int
        Seed of the noise added in eval mode.
    """

    @remember_init
    def __init__(
        self,
        *,
        center: bool = True,
        align: bool = True,
        scale: bool = True,
        normalize_flux: bool = True,
        target_sigma: float = 5.0,
        max_zoom: float = 4.0,
        noise_floor: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if target_sigma <= 0 or max_zoom < 1:
            raise ValueError(
                f"need target_sigma > 0 and max_zoom >= 1, got {target_sigma}, {max_zoom}"
            )
        self.center, self.align, self.scale = center, align, scale
        self.normalize_flux = normalize_flux
        self.target_sigma = float(target_sigma)
        self.max_zoom = float(max_zoom)
        self.noise_floor = None if noise_floor is None else float(noise_floor)
        self.seed = seed

    def measure(self, images: Tensor) -> dict[str, Tensor]:
        """Centroid (N, 2), angle (N,) in radians, size σ (N,) in pixels and flux (N,)."""
        return measure_nuisances(images)

    def forward(self, images: Tensor) -> Tensor:
        """Canonicalise ``images`` (N, C, H, W) float; returns the same shape."""
        n = images.shape[0]
        m = self.measure(images)
        angle = m["angle"] if self.align else torch.zeros_like(m["angle"])
        zoom = m["size"] / self.target_sigma if self.scale else torch.ones_like(m["size"])
        zoom = zoom.clamp(1 / self.max_zoom, self.max_zoom)
        shift = m["centroid"] if self.center else torch.zeros_like(m["centroid"])
        # Output pixel p (relative to the centre) samples the input at shift + zoom·R(angle)·p.
        matrix = rotation_matrices(angle) * zoom.view(n, 1, 1)
        out = affine_sample(images, matrix, shift)
        if not self.normalize_flux:
            out = out * zoom.view(n, 1, 1, 1) ** 2  # shrunk by zoom: keep the flux
        else:
            # Unit flux, then scaled so that a Gaussian galaxy (weighted-moment size
            # target_sigma, i.e. σ = √2·target_sigma) peaks at 1.
            flux = out.sum(dim=(1, 2, 3)).abs().clamp_min(1e-12)
            out = out / flux.view(n, 1, 1, 1) * (4 * math.pi * self.target_sigma**2)
        return out if self.noise_floor is None else self._raise_noise(out)

    def _raise_noise(self, images: Tensor) -> Tensor:
        sigma = border_noise_sigma(images)
        extra = torch.sqrt((self.noise_floor**2 - sigma**2).clamp_min(0.0))[:, :, None, None]
        generator = None
        if not self.training:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        noise = torch.randn(
            images.shape, generator=generator, device=images.device, dtype=images.dtype
        )
        return images + noise * extra

    def extra_repr(self) -> str:
        return (
            f"center={self.center}, align={self.align}, scale={self.scale}, "
            f"normalize_flux={self.normalize_flux}, target_sigma={self.target_sigma}"
        )
