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

__all__ = ["Augment", "dihedral_views", "rotate_shift"]


def _as_batch(x: Tensor) -> Tensor:
    """Check ``x`` and view ``(C, H, W)`` as ``(1, C, H, W)``; ``(N, C, H, W)`` is unchanged."""
    check_images(x)
    return x if x.ndim == 4 else x.unsqueeze(0)


def _affine_theta(angle_deg: Tensor, shift_xy: Tensor, height: int, width: int) -> Tensor:
    """``(N, 2, 3)`` :func:`torch.nn.functional.affine_grid` matrices for rotate-then-shift.

    The output pixel at ``p`` samples the input at ``q = M (p - d)``, with
    ``M = [[cos θ, -sin θ], [sin θ, cos θ]]`` and ``d`` the shift, all in
    pixel units. Grid units (``align_corners=False``) are pixel units divided
    by ``S = diag(W / 2, H / 2)``, so the grid matrix is ``S⁻¹ M S`` with
    translation ``-S⁻¹ M d``; this keeps rotations rigid on non-square images.
    """
    theta = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(theta), torch.sin(theta)
    dx, dy = shift_xy[:, 0], shift_xy[:, 1]
    row_x = torch.stack([cos, -sin * height / width, -(cos * dx - sin * dy) * 2 / width], dim=-1)
    row_y = torch.stack([sin * width / height, cos, -(sin * dx + cos * dy) * 2 / height], dim=-1)
    return torch.stack([row_x, row_y], dim=1)


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
    n, _, height, width = batch.shape
    try:
        angle = torch.as_tensor(angle_deg, dtype=torch.float64).expand(n)
        shift = torch.as_tensor(shift_xy, dtype=torch.float64).expand(n, 2)
    except RuntimeError as error:
        raise ValueError(
            f"angle_deg must be a number or shape ({n},) and shift_xy a pair or shape ({n}, 2) "
            f"for {n} images: {error}"
        ) from error
    theta = _affine_theta(angle, shift, height, width).to(dtype=batch.dtype, device=batch.device)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(
        batch, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )
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
