"""Sérsic profiles: model images, PSF handling and the classical least-squares fit."""

from morpho.sersic.classical import NoiseLike, SersicFit, fit_sersic
from morpho.sersic.params import FitBounds, SersicParametrisation
from morpho.sersic.profile import (
    PARAMETER_NAMES,
    SersicRenderer,
    render_sersic,
    sersic_amplitude,
    sersic_total_flux,
)
from morpho.sersic.psf import check_psf, psf_fwhm

__all__ = [
    "PARAMETER_NAMES",
    "FitBounds",
    "NoiseLike",
    "SersicFit",
    "SersicParametrisation",
    "SersicRenderer",
    "check_psf",
    "fit_sersic",
    "psf_fwhm",
    "render_sersic",
    "sersic_amplitude",
    "sersic_total_flux",
]
