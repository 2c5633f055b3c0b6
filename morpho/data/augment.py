"""Physics-respecting augmentations of galaxy cutouts: flips, rotations, sub-pixel shifts.

A galaxy's morphology does not depend on its orientation on the sky, on its
parity (we may see it from either side), nor on where its centre falls within
a pixel. :class:`Augment` draws such a transform at random; every band of a
galaxy gets the same one.

Flips and quarter turns permute pixels exactly. An arbitrary rotation and a
sub-pixel shift are done together, in ONE bilinear resampling
(:func:`rotate_shift`), so the image is interpolated (and smoothed) only once.
Apply the augmentations to flux images, before the stretch: interpolation is
linear, so it conserves flux (up to interpolation error) only on linear flux.

Pixel coordinates: ``(u, v) = (column, row)``, measured from the image
centre ``((W - 1) / 2, (H - 1) / 2)``. A positive angle turns the image the
way ``torch.rot90(x, 1, dims=(-2, -1))`` does: counter-clockwise when row 0
is drawn at the top (matplotlib ``origin="upper"``), clockwise when drawn
with ``origin="lower"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from morpho.data.pixels import check_images

__all__ = ["Augment", "affine_sample", "dihedral_views", "rotate_shift", "rotation_matrices"]


def _as_batch(x: Tensor) -> Tensor:
    """Check ``x`` and view ``(C, H, W)`` as ``(1, C, H, W)``; ``(N, C, H, W)`` is unchanged."""
    check_images(x)
    return x if x.ndim == 4 else x.unsqueeze(0)


def affine_sample(
    images: Tensor, matrix: Tensor, offset: Tensor, *, padding_mode: str = "reflection"
) -> Tensor:
    """Resample ``(N, C, H, W)`` images through an affine map, in pixel units.

    ``out(p) = in(matrix @ p + offset)``, with ``p`` the pixel position (x along
    columns, y along rows) relative to the image centre, bilinear interpolation.
    Grid units of :func:`torch.nn.functional.affine_grid` (``align_corners=False``)
    are pixel units divided by ``S = diag(W / 2, H / 2)``, so the grid matrix is
    ``S⁻¹ · matrix · S`` with translation ``S⁻¹ · offset``; this keeps rotations rigid
    on non-square images.

    Parameters
    ----------
    images : (N, C, H, W) float Tensor
    matrix : (N, 2, 2) Tensor
        Linear part, output pixel to input pixel.
    offset : (N, 2) Tensor
        Input position (x, y) of the output centre, in pixels from the input centre.
    padding_mode : {"reflection", "border", "zeros"}
        Fill for positions outside the input.
    """
    n, _, height, width = images.shape
    scale = images.new_tensor([width / 2, height / 2])
    linear = matrix.to(images) * scale[None, None, :] / scale[None, :, None]
    theta = torch.cat([linear, (offset.to(images) / scale)[:, :, None]], dim=2)
    grid = F.affine_grid(theta, [n, *images.shape[1:]], align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )


def rotation_matrices(angle_rad: Tensor) -> Tensor:
    """``(N, 2, 2)`` rotation matrices ``[[cos, -sin], [sin, cos]]`` of angles in radians."""
    cos, sin = torch.cos(angle_rad), torch.sin(angle_rad)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def rotate_shift(
    x: Tensor,
    angle_deg: float | Tensor,
    shift_xy: tuple[float, float] | Tensor,
    *,
    padding_mode: str = "reflection",
) -> Tensor:
    """Rotate images about their centre, then shift them, in one bilinear resampling.

    ``out(p) = in(M (p - d))`` with ``M`` the rotation by ``angle_deg`` and
    ``d = shift_xy`` (pixel coordinates as in the module docstring): the
    content turns by ``angle_deg`` (as :func:`torch.rot90` for +90°) and moves
    by ``dx`` columns and ``dy`` rows. Implemented with
    :func:`torch.nn.functional.affine_grid` and
    :func:`~torch.nn.functional.grid_sample` (bilinear,
    ``align_corners=False``). A rotation by a multiple of 90° of a square
    image, and integer shifts, sample exact pixel centres and so only permute
    pixels (up to float rounding in the grid).

    Parameters
    ----------
    x : (C, H, W) or (N, C, H, W) float Tensor
        Images; all bands of an image get the same transform.
    angle_deg : float or (N,) Tensor
        Rotation angle in degrees, one for all images or one per image.
    shift_xy : (dx, dy) or (N, 2) Tensor
        Shift in pixels along columns (x) and rows (y).
    padding_mode : {"reflection", "border", "zeros"}, optional
        How pixels rotated in from outside the image are filled. The default
        mirrors the image at its edges, so the sky-noise texture continues
        into the corners; ``"zeros"`` would leave noiseless corners, an
        artificial feature that gives away the rotation, and ``"border"``
        smears edge pixels into streaks.

    Returns
    -------
    Tensor
        Shape and dtype of ``x``.

    Raises
    ------
    TypeError
        If ``x`` is not a floating-point tensor.
    ValueError
        If ``x`` is not 3- or 4-D, or the angle or shift do not broadcast to
        ``(N,)`` and ``(N, 2)``.
    """
    batch = _as_batch(x)
    n = batch.shape[0]
    try:
        angle = torch.as_tensor(angle_deg, dtype=torch.float64).expand(n)
        shift = torch.as_tensor(shift_xy, dtype=torch.float64).expand(n, 2)
    except RuntimeError as error:
        raise ValueError(
            f"angle_deg must be a number or shape ({n},) and shift_xy a pair or shape ({n}, 2) "
            f"for {n} images: {error}"
        ) from error
    # out(p) = in(M (p - d)) = in(M p - M d)
    matrix = rotation_matrices(torch.deg2rad(angle))
    offset = -(matrix @ shift[:, :, None])[:, :, 0]
    out = affine_sample(batch, matrix, offset, padding_mode=padding_mode)
    return out if x.ndim == 4 else out[0]


def dihedral_views(x: Tensor) -> Tensor:
    """The 8 exact flips and quarter turns of square images (the dihedral group D4).

    ``views[k] = rot90(x, k)`` and ``views[4 + k] = rot90(flip(x), k)`` for
    ``k = 0..3``, with ``rot90`` over ``dims=(-2, -1)`` and ``flip`` reversing
    the columns; ``views[0]`` is ``x``. Pixels are permuted, never resampled.

    Parameters
    ----------
    x : (N, C, H, W) Tensor
        Images with ``H == W`` (any leading dimensions are allowed).

    Returns
    -------
    (8, N, C, H, W) Tensor
        The views, same dtype as ``x``.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 dimensions or is not square.
    """
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"dihedral_views needs square images (..., H, H), got shape {tuple(x.shape)}"
        )
    mirrored = x.flip(-1)
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    turns += [torch.rot90(mirrored, k, dims=(-2, -1)) for k in range(4)]
    return torch.stack(turns)


def _flip_rot90(batch: Tensor, flips: Tensor | None, quarter_turns: Tensor | None) -> Tensor:
    """Per-image exact flips (``(N, 2)`` bool: columns, rows) and quarter turns (``(N,)`` int)."""
    out = batch
    if flips is not None:
        out = torch.where(flips[:, 0].view(-1, 1, 1, 1), out.flip(-1), out)
        out = torch.where(flips[:, 1].view(-1, 1, 1, 1), out.flip(-2), out)
    if quarter_turns is not None:
        turned = out.clone()
        for k in range(1, 4):
            index = torch.nonzero(quarter_turns == k).flatten()
            if index.numel():
                turned[index] = torch.rot90(out[index], k, dims=(-2, -1))
        out = turned
    return out


class Augment(nn.Module):
    """Random flips, quarter turns, rotation and sub-pixel shift of galaxy images.

    In this order, each drawn independently for every image:

    1. flips of the columns and of the rows, each with probability 1/2;
    2. a rotation by ``k · 90°``, ``k`` uniform in {0, 1, 2, 3} (exact,
       :func:`torch.rot90`; needs square images);
    3. a rotation by an angle uniform in [0°, 360°) and a shift ``(dx, dy)``
       with each component uniform in ``[-max_shift, max_shift]`` pixels, in
       one resampling by :func:`rotate_shift` (reflection padding), skipped
       when ``rotate`` is False and ``max_shift`` is 0.

    All bands of an image get the same transform; the images of an
    ``(N, C, H, W)`` batch get independent ones. The transform does not
    depend on :attr:`training`. Apply it to flux images, before the stretch.

    Parameters
    ----------
    flips : bool, optional
        Draw random flips.
    rot90 : bool, optional
        Draw random quarter turns.
    rotate : bool, optional
        Draw a random arbitrary-angle rotation.
    max_shift : float, optional
        Largest shift along each axis, in pixels; 0 for none.
    generator : torch.Generator, optional
        Source of randomness (a CPU generator); the output is deterministic
        given its state. None uses torch's global generator. When the module
        is copied into several DataLoader workers, a generator is copied with
        its state, so every worker would draw the same transforms: use None
        there (DataLoader seeds each worker's global generator differently).

    Raises
    ------
    ValueError
        If ``max_shift`` is negative or not finite.
    """

    def __init__(
        self,
        *,
        flips: bool = True,
        rot90: bool = True,
        rotate: bool = True,
        max_shift: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not (math.isfinite(max_shift) and max_shift >= 0):
            raise ValueError(f"max_shift must be a finite number >= 0 pixels, got {max_shift!r}")
        self.flips = flips
        self.rot90 = rot90
        self.rotate = rotate
        self.max_shift = float(max_shift)
        self.generator = generator

    def _uniform(self, *shape: int) -> Tensor:
        return torch.rand(*shape, generator=self.generator, dtype=torch.float64)

    def forward(self, x: Tensor) -> Tensor:
        """Augment images.

        Parameters
        ----------
        x : (C, H, W) or (N, C, H, W) float Tensor
            Images in flux units (square if ``rot90``).

        Returns
        -------
        Tensor
            The augmented images, shape and dtype of ``x``.

        Raises
        ------
        TypeError
            If ``x`` is not a floating-point tensor.
        ValueError
            If ``x`` is not 3- or 4-D, or ``rot90`` is on and the images are
            not square.
        """
        batch = _as_batch(x)
        n, _, height, width = batch.shape
        if self.rot90 and height != width:
            raise ValueError(
                f"rot90 needs square images, got {height}x{width}; use Augment(rot90=False)"
            )
        flips = (self._uniform(n, 2) < 0.5).to(batch.device) if self.flips else None
        turns = (self._uniform(n) * 4).long().clamp(max=3).to(batch.device) if self.rot90 else None
        out = _flip_rot90(batch, flips, turns)
        if self.rotate or self.max_shift > 0:
            angle = self._uniform(n) * 360.0 if self.rotate else torch.zeros(n, dtype=torch.float64)
            shift = (2.0 * self._uniform(n, 2) - 1.0) * self.max_shift
            out = rotate_shift(out, angle, shift)
        return out if x.ndim == 4 else out[0]

    def extra_repr(self) -> str:
        return (
            f"flips={self.flips}, rot90={self.rot90}, rotate={self.rotate}, "
            f"max_shift={self.max_shift}"
        )
