"""Put every galaxy in one canonical orientation with exact pixel operations.

A Sérsic fit should not depend on how a galaxy happens to be rotated by 90° or
mirrored: the parameters are invariant and the position angle is equivariant.
Instead of hoping a network learns that, each image is brought to a canonical
member of its dihedral orbit (the 8 rotations by multiples of 90° and their
mirror images) before the network sees it; the network's position angle is then
mapped back. The operations are flips and a transpose, which permute pixels
exactly, so the canonical image of a rotated or mirrored galaxy is the very same
array, and predictions are exactly invariant (equivariant for the angle).

The orbit member is chosen from Gaussian-weighted moments about the stamp
centre (a weight that is itself invariant under the dihedral group):

- ``e2 = 2 I_xy`` must be >= 0, else the columns are mirrored (x -> -x);
- ``e1 = I_xx - I_yy`` must be >= 0, else the image is transposed (x <-> y);
- the first moment along x must be >= 0, else the image is turned by 180°.

Coordinates: x along columns (last axis), y along rows; position angles in
degrees from +x towards +y, in [0, 180).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Pose",
    "align_major_axis",
    "canonical_pose",
    "pa_from_canonical",
    "pa_to_canonical",
    "weighted_moments",
]


@dataclass(frozen=True)
class Pose:
    """The exact pixel operations that took each image to its canonical orientation.

    Attributes
    ----------
    flip : (N,) bool tensor
        Columns mirrored first (x -> -x).
    transpose : (N,) bool tensor
        Then rows and columns swapped (x <-> y).
    turn : (N,) bool tensor
        Then turned by 180° (which leaves position angles unchanged).
    shape : (N, 3) tensor
        What the weighted moments say of the galaxy, the same in every orientation:
        ``|e1| / T``, ``|e2| / T`` and ``ln(T / I0)`` with ``T = Σ w I (x² + y²)`` and
        ``I0 = Σ w I`` (clamped where the weighted flux is not positive).
    moments : (N, 4) tensor, optional
        The canonical image's own weighted moments ``(e1, e2, T, I0)`` as
        :func:`weighted_moments` defines them (``e1, e2 >= 0`` there), unclamped, so
        that what else is measured in the canonical frame need not compute them again
        (:func:`morpho.sersic.growth.elliptical_radius`).
    angle : (N,) tensor, optional
        Degrees by which the canonical image was then turned back
        (:func:`align_major_axis`): the weighted moments' major axis, in [0, 45],
        now lies along +x. None: not turned.
    """

    flip: Tensor
    transpose: Tensor
    turn: Tensor
    shape: Tensor
    moments: Tensor | None = None
    angle: Tensor | None = None


def weighted_moments(images: Tensor, weight_sigma: float) -> tuple[Tensor, ...]:
    """Weighted moments about the stamp centre: (x1, y1, e1, e2, trace, i0), each (N,).

    ``x1 = Σ w I x``, ``y1 = Σ w I y``, ``e1 = Σ w I (x² - y²)``, ``e2 = Σ w I 2xy``,
    ``trace = Σ w I (x² + y²)``, ``i0 = Σ w I``, with
    the separable weight ``w = exp(-(x² + y²) / 2s²)``, computed from row and column sums.
    """
    side = images.shape[-1]
    offsets = torch.arange(side, dtype=images.dtype, device=images.device) - (side - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * weight_sigma**2))
    weighted = images * (profile[:, None] * profile[None, :])
    along_x = weighted.sum(dim=-2)  # (N, W): summed over rows
    along_y = weighted.sum(dim=-1)  # (N, H): summed over columns
    x1, y1 = along_x @ offsets, along_y @ offsets
    xx, yy = along_x @ offsets**2, along_y @ offsets**2
    e2 = 2 * ((weighted @ offsets) @ offsets)
    return x1, y1, xx - yy, e2, xx + yy, along_x.sum(dim=-1)


def _apply(images: Tensor, flip: Tensor, transpose: Tensor, turn: Tensor) -> Tensor:
    """Flip, then transpose, then turn each image as its (N,) boolean flags say.

    Every image is transformed and kept or not by ``torch.where``: no group sizes are read
    back from the device, so the step never waits for it (and compiles to one graph).
    """

    def where(flag: Tensor, changed: Tensor, unchanged: Tensor) -> Tensor:
        return torch.where(flag.view(-1, *([1] * (images.ndim - 1))), changed, unchanged)

    out = where(flip, images.flip(-1), images)
    out = where(transpose, out.transpose(-1, -2), out)
    return where(turn, out.flip(-1, -2), out)


def canonical_pose(images: Tensor, *, weight_sigma: float = 8.0) -> tuple[Tensor, Pose]:
    """Bring each image to the canonical member of its dihedral orbit.

    Parameters
    ----------
    images : (N, C, H, W) float tensor
        Square images (H == W); the orientation is chosen from band 0.
    weight_sigma : float, default 8
        σ in pixels of the round Gaussian weight of the moments.

    Returns
    -------
    canonical : (N, C, H, W) tensor
        The images after the operations in ``pose``.
    pose : Pose
        What was done to each image, for :func:`pa_from_canonical`.

    Raises
    ------
    ValueError
        If the images are not ``(N, C, H, W)`` squares.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square (N, C, H, W) images, got shape {tuple(images.shape)}")
    x1, y1, e1, e2, trace, i0 = weighted_moments(images[:, 0], weight_sigma)
    flip = e2 < 0
    transpose = e1 < 0
    x1_after = torch.where(transpose, y1, torch.where(flip, -x1, x1))
    turn = x1_after < 0
    out = _apply(images, flip, transpose, turn)
    tiny = torch.finfo(images.dtype).tiny
    trace_raw, trace = trace, trace.clamp_min(tiny)
    shape = torch.stack(
        [e1.abs() / trace, e2.abs() / trace, torch.log(trace / i0.clamp_min(tiny)).clamp(-5, 10)],
        dim=1,
    ).clamp(max=1e3)
    # A mirror image negates e2 and a transpose e1; a turn by 180° changes neither.
    moments = torch.stack([e1.abs(), e2.abs(), trace_raw, i0], dim=1)
    pose = Pose(flip=flip, transpose=transpose, turn=turn, shape=shape, moments=moments)
    return out, pose


def align_major_axis(canonical: Tensor, pose: Pose) -> tuple[Tensor, Pose]:
    """Turn canonical images so that their weighted moments' major axis lies along +x.

    The canonical frame leaves the major axis anywhere between 0° and 45° (``e1, e2
    >= 0``); turning each image back by its angle ``½ atan2(e2, e1)`` about the stamp
    centre (bicubic, reflected at the edges so that the corners keep their noise)
    leaves the network to read only the small difference between the galaxy's
    position angle and the moments', and the axis ratio along the pixel grid. The
    canonical image of a turned or mirrored galaxy is the same array, so is its
    angle: predictions stay exactly invariant (equivariant for the angle).

    Parameters
    ----------
    canonical : (N, C, S, S) tensor
        Images from :func:`canonical_pose`.
    pose : Pose
        Their pose, with ``moments``.

    Returns
    -------
    aligned : (N, C, S, S) tensor
    pose : Pose
        ``pose`` with :attr:`Pose.angle` set, for :func:`pa_from_canonical`.
    """
    if pose.moments is None:
        raise ValueError("align_major_axis needs the pose's moments (from canonical_pose)")
    e1, e2 = pose.moments[:, 0], pose.moments[:, 1]
    radians = 0.5 * torch.atan2(e2, e1)  # in [0, π/4]
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    # The output pixel at x' samples the input at R(angle) x': the major axis goes to +x.
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(canonical.dtype), list(canonical.shape), align_corners=True)
    aligned = F.grid_sample(
        canonical, grid, mode="bicubic", padding_mode="reflection", align_corners=True
    )
    return aligned, dataclasses.replace(pose, angle=torch.rad2deg(radians))


def pa_to_canonical(pa_deg: Tensor, pose: Pose) -> Tensor:
    """Position angles (degrees) of the original images, seen in the canonical frame
    (turned by :attr:`Pose.angle` where it is set)."""
    pa = torch.where(pose.flip, -pa_deg, pa_deg)
    pa = torch.where(pose.transpose, 90.0 - pa, pa)
    if pose.angle is not None:
        pa = pa - pose.angle.to(pa)
    return torch.remainder(pa, 180.0)


def pa_from_canonical(pa_deg: Tensor, pose: Pose) -> Tensor:
    """Position angles (degrees) in the canonical frame, mapped back to the original images."""
    pa = pa_deg if pose.angle is None else pa_deg + pose.angle.to(pa_deg)
    pa = torch.where(pose.transpose, 90.0 - pa, pa)
    pa = torch.where(pose.flip, -pa, pa)
    return torch.remainder(pa, 180.0)
