"""The classical Sérsic fit recovers GalSim galaxies, reports fair errors, rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest

from morpho.data.errors import DataError
from morpho.data.simulate import NoiseModel, SimulationSpec, render_galaxy
from morpho.sersic.classical import SersicFit, fit_sersic
from morpho.sersic.params import FitBounds
from morpho.sersic.profile import PARAMETER_NAMES, SersicRenderer

NOISE = NoiseModel(sky_level=30.0, read_noise=3.0, gain=1.0)


def _pa_difference(a: float, b: float) -> float:
    return (a - b + 90.0) % 180.0 - 90.0


def _at_snr(image: np.ndarray, snr: float) -> float:
    """Flux scale giving the simulator's matched-filter S/N (sqrt(Σ m²) / σ_bg)."""
    return snr * np.sqrt(NOISE.background_variance) / np.sqrt(np.sum(image**2))


@pytest.mark.parametrize(
    ("n", "r_e", "q", "pa_deg"),
    [(1.0, 5.0, 0.7, 30.0), (4.0, 4.0, 0.6, 120.0), (0.5, 3.0, 0.4, 80.0)],
)
def test_recovers_a_noiseless_galsim_galaxy(draw_sersic, n, r_e, q, pa_deg):
    image, psf, truth = draw_sersic(n, r_e, q, pa_deg)
    fit = fit_sersic(image, psf, noise_sigma=1e-3)
    assert fit.success
    assert fit.at_bound == ()
    np.testing.assert_allclose([fit.flux, fit.r_e, fit.n, fit.q], truth[[0, 3, 4, 5]], rtol=0.01)
    np.testing.assert_allclose([fit.x0, fit.y0], truth[1:3], atol=0.01)
    assert abs(_pa_difference(fit.pa_deg, pa_deg)) < 0.5


@pytest.mark.parametrize(
    ("n", "r_e", "q", "pa_deg", "seed"), [(1.0, 5.0, 0.7, 30.0, 0), (4.0, 4.0, 0.6, 120.0, 1)]
)
def test_noisy_fit_lands_within_its_errors(draw_sersic, n, r_e, q, pa_deg, seed):
    unit, psf, truth = draw_sersic(n, r_e, q, pa_deg)
    scale = _at_snr(unit, 100.0)
    image = NOISE.sample(unit * scale, np.random.default_rng(seed))
    fit = fit_sersic(image, psf, noise=NOISE)
    assert fit.success
    assert fit.chi2_reduced == pytest.approx(1.0, abs=0.1)
    truth = truth * np.array([scale, 1, 1, 1, 1, 1, 1])
    pulls = (fit.params - truth) / fit.errors
    pulls[6] = _pa_difference(fit.pa_deg, pa_deg) / fit.pa_deg_err
    assert np.all(np.abs(pulls) < 4.0), dict(zip(PARAMETER_NAMES, pulls.round(2), strict=True))
    assert np.all(fit.errors > 0)


def test_true_model_leaves_pure_noise_on_a_simulated_galaxy():
    spec = SimulationSpec(mode="single_sersic", snr=(80.0, 100.0))
    galaxy = render_galaxy(spec, index=3, seed=0)
    t = galaxy.truth
    params = [t["total_flux"], t["x_center_pix"], t["y_center_pix"], t["sersic_r_e_pix"]]
    params += [t["sersic_n"], t["sersic_q"], t["sersic_pa_deg"]]
    model = SersicRenderer(galaxy.psf[0], galaxy.image.shape[1:])(params)
    residual = (galaxy.image[0] - model) / np.sqrt(spec.noise.variance(model))
    assert abs(residual.mean()) < 0.06
    assert residual.std() == pytest.approx(1.0, abs=0.05)
    # Noiseless, the difference is the simulator's PSF stamp missing the Moffat's far wings.
    assert np.abs(galaxy.noiseless[0] - model).sum() < 0.05 * t["total_flux"]


def test_noise_from_the_border_when_none_is_given(draw_sersic):
    unit, psf, _ = draw_sersic(1.0, 5.0, 0.7, 30.0)
    image = NOISE.sample(unit * _at_snr(unit, 60.0), np.random.default_rng(5))
    fit = fit_sersic(image, psf)
    assert fit.success
    assert fit.chi2_reduced == pytest.approx(1.0, abs=0.15)


def test_a_parameter_held_at_its_bound_is_reported(draw_sersic):
    image, psf, _ = draw_sersic(4.0, 4.0, 0.6, 120.0)
    fit = fit_sersic(image, psf, noise_sigma=1.0, bounds=FitBounds(n=(0.3, 2.0)))
    assert "n" in fit.at_bound
    assert fit.n == pytest.approx(2.0, rel=1e-3)


def test_result_is_a_frozen_record(draw_sersic):
    image, psf, _ = draw_sersic(1.0, 5.0, 0.7, 30.0)
    fit = fit_sersic(image, psf, noise_sigma=1.0)
    assert isinstance(fit, SersicFit)
    assert fit.params.shape == fit.errors.shape == (7,)
    assert fit.to_dict()["n"] == fit.n
    assert fit.n_evaluations > 0
    assert fit.seconds > 0
    with pytest.raises(AttributeError):
        fit.n = 2.0


@pytest.mark.parametrize(
    ("psf", "words"),
    [
        (np.full((2, 3), 1 / 6), r"expected a square \(P, P\) image"),
        (np.full((4, 4), 1 / 16), "expected an odd side"),
        (None, "normalise it"),
    ],
)
def test_bad_psf_is_a_data_error_naming_the_image(draw_sersic, psf, words):
    image, good_psf, _ = draw_sersic(1.0, 5.0, 0.7, 30.0)
    psf = good_psf * 3 if psf is None else psf
    with pytest.raises(DataError, match=words) as error:
        fit_sersic(image, psf, noise_sigma=1.0, origin="gal42.fits")
    assert str(error.value).startswith("gal42.fits PSF: ")


def test_bad_images_are_data_errors_naming_the_image(draw_sersic):
    image, psf, _ = draw_sersic(1.0, 5.0, 0.7, 30.0)
    sky = NOISE.sample(np.zeros((64, 64)), np.random.default_rng(0))
    with pytest.raises(DataError, match=r"gal42\.fits: no source above the noise \(all sky\?\)"):
        fit_sersic(sky, psf, noise=NOISE, origin="gal42.fits")
    holed = image.copy()
    holed[10, 10] = np.nan
    with pytest.raises(DataError, match=r"gal42\.fits: image holds 1 NaN or infinite pixels"):
        fit_sersic(holed, psf, noise_sigma=1.0, origin="gal42.fits")
    with pytest.raises(DataError, match=r"gal42\.fits: image has shape"):
        fit_sersic(image[None], psf, noise_sigma=1.0, origin="gal42.fits")
    flat = np.zeros((64, 64))
    flat[24:40, 24:40] = 1.0
    with pytest.raises(DataError, match=r"gal42\.fits: the border pixels have no scatter"):
        fit_sersic(flat, psf, origin="gal42.fits")
    with pytest.raises(ValueError, match="not both"):
        fit_sersic(image, psf, noise_sigma=1.0, noise=NOISE)
