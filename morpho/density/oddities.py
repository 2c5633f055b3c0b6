"""Injected oddities for the anomaly benchmark: streaks, stars, hot columns and mergers.

Every function takes a noiseless, sky-subtracted model image in ADU, ``(C, H, W)``,
and returns a new noiseless image with the oddity added (the input is never
modified); the caller then draws the noise, e.g. with
:meth:`morpho.data.simulate.noise.NoiseModel.sample`, so that the oddity's
photons carry their own Poisson noise. Oddities are flat in ADU across bands.

Options written as a ``(low, high)`` pair are drawn uniformly from that range
with ``rng``; a single number fixes them. Defaults are stated for the simulator's
background (σ = sqrt(30 + 9) ≈ 6.2 ADU per pixel, PSF FWHM 3-5 pixels).
Pixel coordinates are array indices, pixel centres at integers, ``y`` the row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ODDITIES", "add_hot_column", "add_merger", "add_star", "add_streak", "inject"]

Range = float | tuple[float, float]

#: Moffat index of the star's core.
STAR_MOFFAT_BETA = 3.0
#: Sub-pixels per pixel side when a star is rendered (then averaged per pixel).
STAR_OVERSAMPLE = 5


def _draw(value: Range, rng: np.random.Generator, name: str) -> float:
    """A fixed value, or a uniform draw from a ``(low, high)`` pair."""
    if np.ndim(value) == 0:
        low = high = float(value)
    elif len(value) == 2:
        low, high = float(value[0]), float(value[1])
    else:
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"{name} must be finite with low <= high, got {value!r}")
    return low if low == high else float(rng.uniform(low, high))


def _image(noiseless: np.ndarray, name: str = "noiseless") -> np.ndarray:
    """A float64 copy of a finite (C, H, W) image."""
    image = np.asarray(noiseless)
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"{name} must be a numeric (C, H, W) image, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name} holds NaN or inf; oddities need a finite noiseless image")
    return image.astype(np.float64)


def _like(result: np.ndarray, noiseless: np.ndarray) -> np.ndarray:
    """``result`` in the input's float dtype (float64 for integer input)."""
    dtype = noiseless.dtype if np.issubdtype(noiseless.dtype, np.floating) else np.float64
    return result.astype(dtype)


def add_streak(
    noiseless: np.ndarray,
    rng: np.random.Generator,
    *,
    surface_brightness: Range = (15.0, 40.0),
    width_pix: Range = (1.3, 2.1),
    angle_deg: float | None = None,
    offset_pix: float | None = None,
) -> np.ndarray:
    """Add a satellite or aeroplane trail: a straight line crossing the whole stamp.

    The trail's profile across the line is a Gaussian of the perpendicular
    distance ``d`` from its centre line, ``S exp(-d² / 2w²)``, evaluated at the
    pixel centres (well sampled for ``w >= 0.7``), so it adds
    ``S w sqrt(2π)`` ADU per pixel of length.

    Parameters
    ----------
    noiseless : (C, H, W) float
        Noiseless, sky-subtracted image in ADU.
    rng : numpy.random.Generator
        Draws the options given as ranges, the angle and the offset.
    surface_brightness : float or (low, high)
        S, ADU per pixel on the centre line (default 2.4-6.4 background σ).
    width_pix : float or (low, high)
        w, the Gaussian σ of the cross-section, in pixels (default: the
        simulator's PSF, FWHM 3-5 pixels).
    angle_deg : float, optional
        Direction of the line, degrees counter-clockwise from the +x (column) axis;
        uniform in [0, 180) by default.
    offset_pix : float, optional
        Signed distance of the line from the stamp centre, in pixels; uniform
        within ±0.4 of the shorter side by default.

    Returns
    -------
    (C, H, W) ndarray
        A new noiseless image (ADU), the input's float dtype.
    """
    image = _image(noiseless)
    brightness = _draw(surface_brightness, rng, "surface_brightness")
    width = _draw(width_pix, rng, "width_pix")
    if width <= 0:
        raise ValueError(f"width_pix must be > 0 pixels, got {width}")
    _, height, side = image.shape
    angle = float(rng.uniform(0.0, 180.0)) if angle_deg is None else float(angle_deg)
    half = 0.4 * min(height, side)
    offset = float(rng.uniform(-half, half)) if offset_pix is None else float(offset_pix)
    y, x = np.mgrid[:height, :side]
    theta = math.radians(angle)
    distance = (
        -(x - (side - 1) / 2) * math.sin(theta) + (y - (height - 1) / 2) * math.cos(theta) - offset
    )
    image += brightness * np.exp(-0.5 * (distance / width) ** 2)
    return _like(image, np.asarray(noiseless))


def _star_profile(
    dx: np.ndarray, dy: np.ndarray, *, fwhm: float, spike_fraction: float, spike_angle: float
) -> np.ndarray:
    """Unit-flux surface brightness (per pixel²) of the Moffat core plus two crossed spikes."""
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / STAR_MOFFAT_BETA) - 1))
    core = (STAR_MOFFAT_BETA - 1) / (math.pi * alpha**2)
    core = core * (1 + (dx**2 + dy**2) / alpha**2) ** -STAR_MOFFAT_BETA
    spikes = np.zeros_like(dx)
    core_radius, thickness = fwhm, 0.25 * fwhm
    line_flux = math.pi * core_radius * math.sqrt(2 * math.pi) * thickness
    for theta in (spike_angle, spike_angle + math.pi / 2):
        along = dx * math.cos(theta) + dy * math.sin(theta)
        across = -dx * math.sin(theta) + dy * math.cos(theta)
        spikes += np.exp(-0.5 * (across / thickness) ** 2) / (1 + (along / core_radius) ** 2)
    return (1 - spike_fraction) * core + spike_fraction * spikes / (2 * line_flux)


def add_star(
    noiseless: np.ndarray,
    rng: np.random.Generator,
    *,
    flux: Range = (2e4, 1e5),
    psf_fwhm_pix: Range = (3.0, 5.0),
    spike_fraction: Range = (0.05, 0.15),
    position: tuple[float, float] | None = None,
    spike_angle_deg: float | None = None,
) -> np.ndarray:
    """Add a bright star: a Moffat (β = 3) core and four diffraction spikes.

    The spikes are two crossed lines through the star, each with a Gaussian
    cross-section of σ = FWHM / 4 and an intensity ``∝ 1 / (1 + (r / FWHM)²)``
    along it (``∝ r⁻²`` far out). ``flux`` is the total on the sky, core plus
    spikes; what falls outside the stamp (the Moffat wings and the spikes' far
    ends, a few per cent of the spike flux) is lost. The profile is averaged
    over 5 × 5 sub-pixels per pixel.

    Parameters
    ----------
    noiseless : (C, H, W) float
        Noiseless, sky-subtracted image in ADU.
    rng : numpy.random.Generator
        Draws the options given as ranges, the position and the spike angle.
    flux : float or (low, high)
        Total flux of the star in ADU, in every band.
    psf_fwhm_pix : float or (low, high)
        FWHM of the core in pixels.
    spike_fraction : float or (low, high)
        Fraction of ``flux`` in the spikes, in [0, 1).
    position : (y, x), optional
        Star centre in pixels (array indices). By default at a random angle
        and 0.25-0.45 of the shorter side from the stamp centre.
    spike_angle_deg : float, optional
        Direction of one spike pair from the +x axis, degrees; uniform in [0, 90) by default.

    Returns
    -------
    (C, H, W) ndarray
        A new noiseless image (ADU), the input's float dtype.
    """
    image = _image(noiseless)
    total = _draw(flux, rng, "flux")
    fwhm = _draw(psf_fwhm_pix, rng, "psf_fwhm_pix")
    fraction = _draw(spike_fraction, rng, "spike_fraction")
    if fwhm <= 0 or not 0 <= fraction < 1:
        raise ValueError(
            f"need psf_fwhm_pix > 0 and 0 <= spike_fraction < 1, got {fwhm} and {fraction}"
        )
    _, height, width = image.shape
    if position is None:
        radius = rng.uniform(0.25, 0.45) * min(height, width)
        phi = rng.uniform(0.0, 2 * math.pi)
        position = (
            (height - 1) / 2 + radius * math.sin(phi),
            (width - 1) / 2 + radius * math.cos(phi),
        )
    angle = float(rng.uniform(0.0, 90.0)) if spike_angle_deg is None else float(spike_angle_deg)
    sub = (np.arange(STAR_OVERSAMPLE) + 0.5) / STAR_OVERSAMPLE - 0.5
    y = (np.arange(height)[:, None] + sub[None, :]).ravel()
    x = (np.arange(width)[:, None] + sub[None, :]).ravel()
    dy, dx = np.meshgrid(y - position[0], x - position[1], indexing="ij")
    profile = _star_profile(
        dx,
        dy,
        fwhm=fwhm,
        spike_fraction=fraction,
        spike_angle=math.radians(angle),
    )
    per_pixel = profile.reshape(height, STAR_OVERSAMPLE, width, STAR_OVERSAMPLE).mean(axis=(1, 3))
    image += total * per_pixel
    return _like(image, np.asarray(noiseless))


def add_hot_column(
    noiseless: np.ndarray,
    rng: np.random.Generator,
    *,
    level: Range = (20.0, 60.0),
    column: int | None = None,
    start_row: int | None = None,
    partial_probability: float = 0.5,
) -> np.ndarray:
    """Add a hot (or bleeding) column: a constant level along one column, in every band.

    Parameters
    ----------
    noiseless : (C, H, W) float
        Noiseless, sky-subtracted image in ADU.
    rng : numpy.random.Generator
        Draws the options given as ranges, the column and the start row.
    level : float or (low, high)
        ADU added to every affected pixel.
    column : int, optional
        Column index; uniform over the stamp by default.
    start_row : int, optional
        The column is hot from this row to the last (index H - 1). By default 0
        (the whole column), or with probability ``partial_probability`` a
        uniform row, like a bleed trail starting at a saturated pixel.
    partial_probability : float
        Probability, in [0, 1], of a partial column when ``start_row`` is not given.

    Returns
    -------
    (C, H, W) ndarray
        A new noiseless image (ADU), the input's float dtype.
    """
    image = _image(noiseless)
    value = _draw(level, rng, "level")
    _, height, width = image.shape
    if not 0 <= partial_probability <= 1:
        raise ValueError(f"partial_probability must be in [0, 1], got {partial_probability}")
    column = int(rng.integers(width)) if column is None else int(column)
    if start_row is None:
        start_row = int(rng.integers(height)) if rng.uniform() < partial_probability else 0
    if not (0 <= column < width and 0 <= start_row < height):
        raise ValueError(
            f"column {column} and start_row {start_row} must lie in the {height}×{width} stamp"
        )
    image[:, start_row:, column] += value
    return _like(image, np.asarray(noiseless))


def _shift_zero_padded(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift (C, H, W) by whole pixels; what leaves the stamp is lost, what enters is 0."""
    out = np.zeros_like(image)
    _, height, width = image.shape
    if abs(dy) >= height or abs(dx) >= width:
        return out
    src_y, dst_y = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
    out[:, dst_y, dst_x] = image[:, src_y, src_x]
    return out


def add_merger(
    noiseless: np.ndarray,
    companion: np.ndarray,
    rng: np.random.Generator,
    *,
    flux_scale: Range = (0.3, 1.0),
    separation: Range = (0.3, 0.6),
    shift_pix: tuple[int, int] | None = None,
) -> np.ndarray:
    """Add a second galaxy overlapping the first, as in a merger or a close pair.

    ``companion`` (another noiseless stamp, usually centred) is multiplied by
    ``flux_scale`` and shifted by whole pixels with zero padding: no flux wraps
    around, and the companion's flux shifted beyond the stamp is lost.

    Parameters
    ----------
    noiseless : (C, H, W) float
        Noiseless, sky-subtracted image in ADU.
    companion : (C, H, W) float
        Noiseless, sky-subtracted image of the companion galaxy in ADU.
    rng : numpy.random.Generator
        Draws the options given as ranges and the shift's direction.
    flux_scale : float or (low, high)
        Factor applied to the companion's flux (dimensionless, > 0).
    separation : float or (low, high)
        Shift length as a fraction of half the shorter stamp side, at a uniform
        random angle; rounded to whole pixels.
    shift_pix : (dy, dx), optional
        The shift in whole pixels (rows, columns), overriding ``separation``.

    Returns
    -------
    (C, H, W) ndarray
        A new noiseless image (ADU), the input's float dtype.
    """
    image = _image(noiseless)
    other = _image(companion, "companion")
    if other.shape != image.shape:
        raise ValueError(f"companion has shape {other.shape}, the image {image.shape}")
    scale = _draw(flux_scale, rng, "flux_scale")
    if scale <= 0:
        raise ValueError(f"flux_scale must be > 0, got {scale}")
    if shift_pix is None:
        length = _draw(separation, rng, "separation") * min(image.shape[1:]) / 2
        phi = rng.uniform(0.0, 2 * math.pi)
        shift_pix = (round(length * math.sin(phi)), round(length * math.cos(phi)))
    image += scale * _shift_zero_padded(other, int(shift_pix[0]), int(shift_pix[1]))
    return _like(image, np.asarray(noiseless))


#: The oddities by name; ``"merger"`` also needs a companion image.
ODDITIES: dict[str, Callable[..., np.ndarray]] = {
    "streak": add_streak,
    "star": add_star,
    "hot_column": add_hot_column,
    "merger": add_merger,
}


def inject(
    kind: str,
    noiseless: np.ndarray,
    rng: np.random.Generator,
    *,
    companion: np.ndarray | None = None,
    **options: Any,
) -> np.ndarray:
    """Add the oddity ``kind`` (a key of :data:`ODDITIES`) to a noiseless image.

    Parameters
    ----------
    kind : str
        ``"streak"``, ``"star"``, ``"hot_column"`` or ``"merger"``.
    noiseless : (C, H, W) float
        Noiseless, sky-subtracted image in ADU.
    rng : numpy.random.Generator
        Random generator handed to the oddity.
    companion : (C, H, W) float, optional
        The second galaxy, needed by (and only by) ``"merger"``.
    **options
        Keyword options of the oddity's function, e.g. ``flux=5e4`` for a star.

    Returns
    -------
    (C, H, W) ndarray
        A new noiseless image (ADU).

    Raises
    ------
    ValueError
        For an unknown kind, a merger without companion or a companion for another kind.
    """
    if kind not in ODDITIES:
        raise ValueError(f"unknown oddity {kind!r}; choose one of {sorted(ODDITIES)}")
    if kind == "merger":
        if companion is None:
            raise ValueError("the 'merger' oddity needs companion=<(C, H, W) noiseless image>")
        return add_merger(noiseless, companion, rng, **options)
    if companion is not None:
        raise ValueError(f"companion is only used by the 'merger' oddity, not by {kind!r}")
    return ODDITIES[kind](noiseless, rng, **options)
