"""Render one simulated galaxy: PSF, noiseless images in every band, noise, truth.

The flux of a galaxy is set by its S/N, drawn log-uniformly in ``spec.snr`` and
defined in the first band as the matched-filter S/N against the background
noise (Great3 convention; Mandelbaum et al. 2014):

.. math::

    \\mathrm{S/N} = \\sqrt{\\textstyle\\sum_i m_i^2} \\,/\\, \\sigma_{\\rm bg},
    \\qquad \\sigma_{\\rm bg}^2 = b/g + r^2/g^2 ,

with ``m`` the noiseless stamp in ADU. The source's own Poisson noise is added to
the image but not counted in this S/N.
"""

from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np

from morpho.data.simulate.components import GSPARAMS, Component
from morpho.data.simulate.morphologies import SAMPLERS, sample_single_sersic
from morpho.data.simulate.spec import SimulationSpec
from morpho.sersic.psf import psf_wing_fraction

__all__ = ["RenderedGalaxy", "draw_psf", "half_light_radius", "render_galaxy"]


@dataclass
class RenderedGalaxy:
    """One simulated galaxy.

    Attributes
    ----------
    image : (C, H, W) float32
        Noisy, sky-subtracted image in ADU.
    noiseless : (C, H, W) float32
        The same without noise.
    psf : (C, P, P) float32
        The effective PSF (pixel response included) of each band, summing to 1.
    truth : dict
        Catalog row: label, class, S/N, PSF, noise model and component parameters.
    """

    image: np.ndarray
    noiseless: np.ndarray
    psf: np.ndarray
    truth: dict[str, float | int | str]


def galaxy_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of galaxy ``index``: independent of chunking and workers."""
    return np.random.default_rng([int(seed), int(index)])


def draw_psf(spec: SimulationSpec, rng: np.random.Generator) -> tuple[galsim.GSObject, dict]:
    """Draw a random PSF profile and its truth (kind, FWHM in arcsec, Moffat β)."""
    kind = str(rng.choice(spec.psf.kinds))
    fwhm = float(rng.uniform(*spec.psf.fwhm_arcsec))
    if kind == "moffat":
        beta = float(rng.choice(spec.psf.moffat_beta))
        profile = galsim.Moffat(beta=beta, fwhm=fwhm, gsparams=GSPARAMS)
    else:
        beta = float("nan")
        profile = galsim.Gaussian(fwhm=fwhm, gsparams=GSPARAMS)
    return profile, {"psf_kind": kind, "psf_fwhm_arcsec": fwhm, "psf_moffat_beta": beta}


def _sample_components(spec: SimulationSpec, rng: np.random.Generator):
    if spec.mode == "single_sersic":
        comps, extra = sample_single_sersic(
            rng,
            scale=spec.pixel_scale,
            n_range=spec.sersic_n,
            r_e_range=spec.r_e,
            q_range=spec.axis_ratio,
            n_grid=spec.n_grid,
        )
        return 0, "sersic", comps, extra
    names = list(spec.class_fractions)
    label = int(rng.choice(len(names), p=list(spec.class_fractions.values())))
    comps, extra = SAMPLERS[names[label]](rng, scale=spec.pixel_scale, n_grid=spec.n_grid)
    return label, names[label], comps, extra


def _band_profile(comps: list[Component], spec: SimulationSpec, band: int) -> galsim.GSObject:
    parts = [c.profile.withFlux(c.fraction * spec.colours[c.population][band]) for c in comps]
    return parts[0] if len(parts) == 1 else galsim.Add(parts, gsparams=GSPARAMS)


def _draw(profile: galsim.GSObject, psf: galsim.GSObject, spec, offset) -> np.ndarray:
    image = galsim.Convolve(profile, psf, gsparams=GSPARAMS).drawImage(
        nx=spec.image_size, ny=spec.image_size, scale=spec.pixel_scale, offset=offset
    )
    return image.array.astype(np.float64)


def render_galaxy(spec: SimulationSpec, index: int, seed: int) -> RenderedGalaxy:
    """Render galaxy ``index`` of the population described by ``spec``.

    The same ``(spec, index, seed)`` always gives the same galaxy, whatever the
    order or process in which galaxies are rendered.
    """
    rng = galaxy_rng(seed, index)
    label, class_name, comps, extra = _sample_components(spec, rng)
    psf, psf_truth = draw_psf(spec, rng)
    offset = rng.uniform(-spec.max_center_offset, spec.max_center_offset, 2)
    unit = [_draw(_band_profile(comps, spec, b), psf, spec, offset) for b in range(len(spec.bands))]
    snr = float(np.exp(rng.uniform(*np.log(spec.snr))))
    sigma_bg = np.sqrt(spec.noise.background_variance)
    flux = snr * sigma_bg / np.sqrt(np.sum(unit[0] ** 2))
    noiseless = (flux * np.stack(unit)).astype(np.float32)
    image = spec.noise.sample(noiseless, rng)
    psf_image = psf.drawImage(
        nx=spec.psf.stamp_size, ny=spec.psf.stamp_size, scale=spec.pixel_scale
    )
    psf_stack = np.repeat(psf_image.array[None].astype(np.float32), len(spec.bands), axis=0)
    psf_stack /= psf_stack.sum(axis=(1, 2), keepdims=True)
    centre = (spec.image_size - 1) / 2.0
    truth = {
        "id_str": f"sim{index:07d}",
        "label": label,
        "class_name": class_name,
        "snr": snr,
        "total_flux": flux,
        "x_center_pix": centre + offset[0],
        "y_center_pix": centre + offset[1],
        "pixel_scale": spec.pixel_scale,
        "sky_level": spec.noise.sky_level,
        "read_noise": spec.noise.read_noise,
        "gain": spec.noise.gain,
        **psf_truth,
        **extra,
    }
    truth["half_light_radius_pix"] = half_light_radius(noiseless[0], centre + offset)
    truth["psf_wing_fraction"] = psf_wing_fraction(psf_stack[0])
    for b, band in enumerate(spec.bands):
        truth[f"flux_{band}"] = flux * sum(
            c.fraction * spec.colours[c.population][b] for c in comps
        )
    for comp in comps:
        truth.update(_component_truth(comp, flux, spec.pixel_scale))
    return RenderedGalaxy(image, noiseless, psf_stack, truth)


def half_light_radius(image: np.ndarray, centre: np.ndarray) -> float:
    """Circular radius (pixels) around ``centre`` (x, y) holding half of the stamp's flux.

    Measured on the PSF-convolved noiseless image from pixel centres: the galaxy's
    apparent size, whatever its components.
    """
    y, x = np.indices(image.shape, dtype=np.float64)
    radius = np.hypot(x - centre[0], y - centre[1]).ravel()
    order = np.argsort(radius)
    cumulative = np.cumsum(image.ravel()[order].astype(np.float64))
    return float(np.interp(0.5 * cumulative[-1], cumulative, radius[order]))


def _component_truth(comp: Component, flux: float, pixel_scale: float) -> dict[str, float]:
    """Truth columns of one component: ``{name}_flux``, ``{name}_r_e_pix``, ``{name}_n``, ..."""
    out = {f"{comp.name}_flux": comp.fraction * flux}
    for key, value in comp.truth.items():
        out[f"{comp.name}_{key}"] = value
    if "r_e_pix" in comp.truth:
        out[f"{comp.name}_r_e_arcsec"] = comp.truth["r_e_pix"] * pixel_scale
    return out
