"""Sérsic galaxies drawn with GalSim exactly as the simulator draws them (read-only arrays)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import galsim
import numpy as np
import pytest

from morpho.data.simulate.components import sersic

PIXEL_SCALE = 0.2
SIZE = 64


@cache
def _draw(n, r_e, q, pa_deg, flux, offset, psf_side, fwhm):
    psf = galsim.Moffat(beta=3.0, fwhm=fwhm)
    profile = sersic(n, r_e, q, pa_deg, pixel_scale=PIXEL_SCALE).withFlux(flux)
    image = galsim.Convolve(profile, psf).drawImage(
        nx=SIZE, ny=SIZE, scale=PIXEL_SCALE, offset=offset
    )
    stamp = psf.drawImage(nx=psf_side, ny=psf_side, scale=PIXEL_SCALE).array.astype(np.float64)
    centre = (SIZE - 1) / 2.0
    params = (flux, centre + offset[0], centre + offset[1], r_e, n, q, pa_deg)
    arrays = image.array.astype(np.float64), stamp / stamp.sum(), np.array(params)
    for array in arrays:
        array.flags.writeable = False
    return arrays


@pytest.fixture(scope="session")
def draw_sersic() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Factory: ``(image, psf, params)`` of a Moffat(β=3)-convolved Sérsic on a 64² stamp.

    ``draw_sersic(n, r_e, q, pa_deg, *, flux=1e4, offset=(0.3, -0.2), psf_side=51,
    fwhm=0.8)`` renders like :func:`morpho.data.simulate.render.render_galaxy`
    (0.2"/pixel, ``drawImage`` with pixel integration, ``offset`` in pixels); the PSF
    is the effective PSF drawn on ``psf_side``² pixels and normalised, as the
    simulator stores it (whose default 25² stamp misses 0.57% of this Moffat's
    flux; 51² misses 0.04%). ``params`` is the truth in
    :data:`~morpho.sersic.profile.PARAMETER_NAMES` order. Results are cached and
    read-only.
    """

    def draw(n, r_e, q, pa_deg, *, flux=1e4, offset=(0.3, -0.2), psf_side=51, fwhm=0.8):
        return _draw(n, r_e, q, pa_deg, flux, tuple(offset), psf_side, fwhm)

    return draw
