"""Point-spread function images: validation, FWHM and sub-pixel resampling.

A PSF image here is always an *effective* PSF: the optical PSF convolved with the
pixel response, sampled at pixel centres, odd-sided and centred on the central
pixel, summing to 1 (the layout of the simulator's ``psf`` dataset).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RectBivariateSpline
from scipy.special import erf

from morpho.data.errors import DataError

__all__ = [
    "GAUSSIAN_WING_FRACTION",
    "check_psf",
    "check_psfs",
    "gaussian_psf",
    "psf_fwhm",
    "psf_wing_fraction",
    "subsample_psf",
]

#: Largest accepted relative deviation of the PSF's sum from 1.
SUM_TOLERANCE = 1e-3


def check_psf(psf: np.ndarray, *, origin: str = "psf") -> np.ndarray:
    """Validate an effective PSF image and return it as float64.

    Parameters
    ----------
    psf : (P, P) or (1, P, P) array
        Effective PSF, P odd and >= 3, all finite, summing to 1, peaking within one
        pixel of the central pixel ``((P - 1) / 2, (P - 1) / 2)``.
    origin : str
        Name of the file or dataset the PSF came from, used in error messages.

    Returns
    -------
    (P, P) float64 ndarray

    Raises
    ------
    DataError
        If any of the conditions above does not hold; the message names ``origin``,
        what is wrong and what to do.
    """
    array = np.asarray(psf, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise DataError(
            f"{origin}: PSF has shape {np.shape(psf)}, expected a square (P, P) image; "
            "pass one band's PSF stamp"
        )
    return check_psfs(array[None], origin=origin)[0]


def check_psfs(
    psfs: np.ndarray, *, origin: str = "psf", rows: np.ndarray | None = None
) -> np.ndarray:
    """Validate a stack of effective PSF images (one per galaxy) at once.

    Parameters
    ----------
    psfs : (N, P, P) array
        Each as :func:`check_psf` asks: P odd and >= 3, finite, summing to 1,
        peaking within one pixel of the centre.
    origin : str
        Name of the file or dataset, used in error messages (which also give the
        index of the first PSF at fault).
    rows : (N,) int array, optional
        The PSFs' rows in ``origin``, named in messages instead of their index here.

    Returns
    -------
    (N, P, P) float64 ndarray

    Raises
    ------
    DataError
        If any PSF breaks a condition above.
    """
    array = np.asarray(psfs, dtype=np.float64)
    if array.ndim != 3 or array.shape[-1] != array.shape[-2]:
        raise DataError(
            f"{origin}: PSF has shape {np.shape(psfs)}, expected square (P, P) images; "
            "pass one band's PSF stamp"
        )
    side = array.shape[-1]
    if side < 3 or side % 2 == 0:
        raise DataError(
            f"{origin}: PSF side is {side} pixels, expected an odd side >= 3 so that the PSF "
            "is centred on a pixel; crop or pad it to an odd size around its peak"
        )
    several = len(array) > 1 or rows is not None

    def which(bad: np.ndarray) -> str:
        first = int(np.flatnonzero(bad)[0])
        return f" (PSF {first if rows is None else rows[first]})" if several else ""

    finite = np.isfinite(array).all(axis=(1, 2))
    if not finite.all():
        raise DataError(
            f"{origin}{which(~finite)}: PSF holds NaN or infinite pixels; replace them or the PSF"
        )
    totals = array.sum(axis=(1, 2))
    summed = np.abs(totals - 1.0) <= SUM_TOLERANCE
    if not summed.all():
        total = totals[np.flatnonzero(~summed)[0]]
        raise DataError(
            f"{origin}{which(~summed)}: PSF sums to {total:.6g}, expected 1; "
            "normalise it (psf / psf.sum())"
        )
    peaks = array.reshape(len(array), -1).argmax(axis=1)
    peak_row, peak_col = np.unravel_index(peaks, (side, side))
    centre = (side - 1) // 2
    off = np.maximum(np.abs(peak_row - centre), np.abs(peak_col - centre)) > 1
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(
            f"{origin}{which(off)}: PSF peaks at pixel (row {peak_row[i]}, column "
            f"{peak_col[i]}), more than one pixel from the centre ({centre}, {centre}); "
            "re-centre the PSF stamp on its peak"
        )
    return array


def gaussian_psf(fwhm: float, *, size: int | None = None) -> np.ndarray:
    """Effective PSF of a circular Gaussian: its integral over each pixel, summing to 1.

    Parameters
    ----------
    fwhm : float
        FWHM of the Gaussian (before pixel integration), in pixels.
    size : int, optional
        Odd side of the stamp; by default ``2 ceil(2 fwhm) + 1`` (at least 5),
        reaching 4.7σ from the centre.

    Returns
    -------
    (size, size) float64 ndarray
        ``∫_pixel G``, normalised over the stamp, centred on the central pixel.
    """
    if not fwhm > 0:
        raise ValueError(f"fwhm must be a positive number of pixels, got {fwhm}")
    size = max(2 * int(np.ceil(2.0 * fwhm)) + 1, 5) if size is None else int(size)
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be odd and >= 3, got {size}")
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    edges = np.arange(-(size // 2) - 0.5, size // 2 + 1.0) / (np.sqrt(2.0) * sigma)
    profile = np.diff(erf(edges))
    psf = np.outer(profile, profile)
    return psf / psf.sum()


def _spline(psf: np.ndarray) -> RectBivariateSpline:
    """Interpolating spline of a PSF on pixel offsets from its centre.

    Quintic (interpolation errors ~1e-3 of the peak for a 3-pixel FWHM, five times
    below a cubic's), or of degree P - 1 for stamps of fewer than 6 pixels.
    """
    half = (psf.shape[0] - 1) // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    degree = min(5, psf.shape[0] - 1)
    return RectBivariateSpline(offsets, offsets, psf, kx=degree, ky=degree, s=0)


def psf_fwhm(psf: np.ndarray, *, oversample: int = 8) -> float:
    """Full width at half maximum of a PSF image, in pixels.

    The PSF is interpolated (quintic spline) onto a grid ``oversample`` times finer;
    the area ``A`` of the region above half of the interpolated peak gives the FWHM
    of the circle of the same area, ``FWHM = 2 sqrt(A / π)`` (for an elliptical PSF,
    the geometric mean of its major and minor FWHM).

    Parameters
    ----------
    psf : (P, P) array
        PSF image (any normalisation), peak near the centre.
    oversample : int
        Interpolation factor (>= 4).

    Returns
    -------
    float
        FWHM in pixels. For an effective PSF (pixel response included) this is the
        width of the effective PSF, slightly larger than the optical one.
    """
    if oversample < 4:
        raise ValueError(f"oversample must be >= 4 to resolve the half-maximum, got {oversample}")
    array = np.asarray(psf, dtype=np.float64)
    half = (array.shape[0] - 1) // 2
    fine = np.arange(-half * oversample, half * oversample + 1) / oversample
    values = _spline(array)(fine, fine)
    area = np.count_nonzero(values >= 0.5 * values.max()) / oversample**2
    return float(2.0 * np.sqrt(area / np.pi))


#: Fraction of a circular Gaussian's flux beyond one FWHM from its centre: exp(-4 ln 2).
GAUSSIAN_WING_FRACTION = 1.0 / 16.0


def psf_wing_fraction(psf: np.ndarray) -> float:
    """Fraction of a PSF's flux beyond one FWHM from its centre: how heavy its wings are.

    A circular Gaussian has exp(-4 ln 2) = 1/16 (a little more once pixelated); a
    Moffat profile more, the more so the smaller its β (about 0.2 for β = 2.5). The
    FWHM is measured with :func:`psf_fwhm` on the central 15 × 15 pixels; the flux is
    summed over pixels whose centres lie beyond it.

    Parameters
    ----------
    psf : (P, P) array
        PSF image, centred, odd side (validated by :func:`check_psf`).

    Returns
    -------
    float
        In [0, 1].
    """
    array = np.asarray(psf, dtype=np.float64)
    centre = (array.shape[0] - 1) // 2
    half = min(7, centre)
    core = array[centre - half : centre + half + 1, centre - half : centre + half + 1]
    fwhm = psf_fwhm(core, oversample=4)
    y, x = np.indices(array.shape) - centre
    outside = np.hypot(x, y) > fwhm
    return float(array[outside].sum() / array.sum())


def subsample_psf(psf: np.ndarray, oversample: int) -> np.ndarray:
    """The effective PSF at sub-pixel offsets, as a convolution kernel of a finer grid.

    The PSF is interpolated (quintic spline) at offsets ``k / oversample`` pixels,
    ``|k| <= half * oversample``; negative interpolation ripples are clipped and each
    of the ``oversample²`` sub-pixel phases ``kernel[a::s, b::s]`` is normalised to
    sum ``1 / oversample²`` (the exact property of a pixel-convolved PSF, whose
    samples at any sub-pixel phase sum to 1). Convolving the profile's mean surface
    brightness over sub-pixel cells (flux per pixel²) with this kernel and reading
    the result at pixel centres gives pixel values (the pixel response is already
    in the effective PSF), and every cell's flux is conserved over the pixel grid.

    Parameters
    ----------
    psf : (P, P) float array
        Effective PSF (validated by :func:`check_psf`).
    oversample : int
        Sub-pixels per pixel along each axis, s >= 1.

    Returns
    -------
    (s (P - 1) + 1, s (P - 1) + 1) float64 ndarray
        Kernel whose central element is offset 0, summing to 1.
    """
    half = (psf.shape[0] - 1) // 2
    fine = np.arange(-half * oversample, half * oversample + 1) / oversample
    kernel = np.clip(_spline(psf)(fine, fine), 0.0, None)
    for a in range(oversample):
        for b in range(oversample):
            phase = (slice(a, None, oversample), slice(b, None, oversample))
            kernel[phase] /= kernel[phase].sum() * oversample**2
    return kernel
