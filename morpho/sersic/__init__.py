"""Sérsic profiles: model images, PSF handling and the classical least-squares fit.

The network that predicts Sérsic parameters is :class:`morpho.models.SersicModule`
(its inputs, likelihood and orientation handling live in this package's
``inputs``, ``likelihood`` and ``pose`` modules); :func:`morpho.sersic.predict.fit_dataset`
runs it over a data set and :func:`morpho.sersic.table.write_table` writes the table;
:func:`morpho.sersic.refine.refine_shape` refines its q and PA on each galaxy's likelihood.

Names are imported lazily, so that importing one light module of this package (the
simulator uses :mod:`morpho.sersic.psf`) does not pay for astropy.modeling and scipy.
"""

from __future__ import annotations

from morpho.utils import lazy_exports

__all__ = [
    "GAUSSIAN_WING_FRACTION",
    "PARAMETER_NAMES",
    "FitBounds",
    "NoiseLike",
    "SersicFit",
    "SersicParametrisation",
    "SersicRenderer",
    "check_psf",
    "check_psfs",
    "fit_sersic",
    "gaussian_psf",
    "psf_fwhm",
    "psf_wing_fraction",
    "refine_shape",
    "render_sersic",
    "sersic_amplitude",
    "sersic_total_flux",
]

_WHERE = {
    "GAUSSIAN_WING_FRACTION": "morpho.sersic.psf",
    "PARAMETER_NAMES": "morpho.sersic.profile",
    "FitBounds": "morpho.sersic.params",
    "NoiseLike": "morpho.sersic.classical",
    "SersicFit": "morpho.sersic.classical",
    "SersicParametrisation": "morpho.sersic.params",
    "SersicRenderer": "morpho.sersic.profile",
    "check_psf": "morpho.sersic.psf",
    "check_psfs": "morpho.sersic.psf",
    "fit_sersic": "morpho.sersic.classical",
    "gaussian_psf": "morpho.sersic.psf",
    "psf_fwhm": "morpho.sersic.psf",
    "psf_wing_fraction": "morpho.sersic.psf",
    "refine_shape": "morpho.sersic.refine",
    "render_sersic": "morpho.sersic.profile",
    "sersic_amplitude": "morpho.sersic.profile",
    "sersic_total_flux": "morpho.sersic.profile",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
