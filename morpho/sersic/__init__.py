"""Sérsic profiles: model images, PSF handling and the classical least-squares fit.

The network that predicts Sérsic parameters is :class:`morpho.models.SersicModule`
(its inputs, likelihood and orientation handling live in this package's
``inputs``, ``likelihood`` and ``pose`` modules); :func:`morpho.sersic.predict.fit_dataset`
runs it over a data set and :func:`morpho.sersic.table.write_table` writes the table.
"""

from morpho.sersic.classical import NoiseLike, SersicFit, fit_sersic
from morpho.sersic.params import FitBounds, SersicParametrisation
from morpho.sersic.profile import (
    PARAMETER_NAMES,
    SersicRenderer,
    render_sersic,
    sersic_amplitude,
    sersic_total_flux,
)
from morpho.sersic.psf import check_psf, gaussian_psf, psf_fwhm

__all__ = [
    "PARAMETER_NAMES",
    "FitBounds",
    "NoiseLike",
    "SersicFit",
    "SersicParametrisation",
    "SersicRenderer",
    "check_psf",
    "fit_sersic",
    "gaussian_psf",
    "psf_fwhm",
    "render_sersic",
    "sersic_amplitude",
    "sersic_total_flux",
]
