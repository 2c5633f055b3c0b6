"""Known answers of the Sérsic model image: total flux, GalSim's images, centre derivatives."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.modeling.functional_models import Sersic2D
from scipy.integrate import quad

from morpho.data.errors import DataError
from morpho.sersic.profile import (
    SersicRenderer,
    render_sersic,
    sersic_amplitude,
    sersic_total_flux,
)

SHAPES = [
    (0.5, 2.0, 1.0, 0.0),
    (1.0, 2.0, 0.5, 30.0),
    (1.0, 8.0, 0.3, 60.0),
    (4.0, 2.0, 0.7, 100.0),
    (4.0, 8.0, 0.8, 10.0),
    (6.0, 2.0, 0.4, 150.0),
    (6.0, 8.0, 0.6, 170.0),
]


@pytest.mark.parametrize("n", [0.5, 1.0, 2.5, 4.0, 6.0])
def test_total_flux_is_the_integral_of_astropy_sersic(n):
    r_e, q, amplitude = 3.0, 0.6, 2.0

    def ring(r):  # flux between elliptical radii r and r + dr: 2π q r I(r)
        return 2 * np.pi * q * r * Sersic2D.evaluate(r, 0.0, amplitude, r_e, n, 0, 0, 1 - q, 0)

    numeric = sum(
        quad(ring, a, b, limit=200)[0] for a, b in [(0, r_e), (r_e, 50 * r_e), (50 * r_e, np.inf)]
    )
    assert sersic_total_flux(amplitude, r_e, n, q) == pytest.approx(numeric, rel=1e-6)
    assert sersic_amplitude(numeric, r_e, n, q) == pytest.approx(amplitude, rel=1e-6)


def test_exponential_flux_has_closed_form():
    # n = 1: I = I_0 exp(-r / h), F = 2π q h² I_0 with h = r_e / b_1.
    r_e, q, b1 = 4.0, 0.5, 1.6783469900166612
    i_0 = sersic_amplitude(1.0, r_e, 1.0, q) * np.exp(b1)
    assert 2 * np.pi * q * (r_e / b1) ** 2 * i_0 == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize(("n", "r_e", "q", "pa_deg"), SHAPES)
def test_matches_galsim_with_a_complete_psf(draw_sersic, n, r_e, q, pa_deg):
    image, psf, params = draw_sersic(n, r_e, q, pa_deg, psf_side=51)
    model = render_sersic(params, psf, shape=image.shape)
    assert np.abs(model - image).sum() / image.sum() < 0.003
    peak = np.unravel_index(np.argmax(image), image.shape)
    assert model[peak] == pytest.approx(image[peak], rel=0.005)


@pytest.mark.parametrize(("n", "r_e", "q", "pa_deg"), SHAPES[::2])
def test_matches_galsim_with_the_simulators_psf_stamp(draw_sersic, n, r_e, q, pa_deg):
    # The simulator's 25² PSF stamp misses 0.57% of this Moffat's flux (its far wings),
    # which the model puts back into the core: |difference| ~ 2 × 0.57%.
    image, psf, params = draw_sersic(n, r_e, q, pa_deg, psf_side=25)
    model = render_sersic(params, psf, shape=image.shape)
    assert np.abs(model - image).sum() / image.sum() < 0.0125


@pytest.mark.parametrize(("n", "r_e"), [(1.0, 2.0), (4.0, 2.0), (6.0, 2.0)])
def test_flux_is_the_total_over_the_infinite_plane(draw_sersic, n, r_e):
    image, psf, params = draw_sersic(n, r_e, 0.7, 20.0)
    model = render_sersic(params, psf, shape=image.shape)
    assert model.sum() == pytest.approx(image.sum(), rel=1e-3)
    assert image.sum() == pytest.approx(params[0], rel=0.04)  # the stamp misses the far wings


def test_centre_and_position_angle_conventions(draw_sersic):
    _, psf, _ = draw_sersic(1.0, 2.0, 1.0, 0.0)
    model = render_sersic((1e4, 40.0, 20.0, 6.0, 1.0, 0.3, 90.0), psf, shape=(64, 64))
    assert np.unravel_index(np.argmax(model), model.shape) == (20, 40)  # (row y, column x)
    # PA = 90°: the major axis points along +y, i.e. down the rows.
    assert model[26, 40] > 3 * model[20, 46]


def test_centre_derivatives_match_finite_differences(draw_sersic):
    _, psf, params = draw_sersic(4.0, 2.0, 0.7, 100.0)
    renderer = SersicRenderer(psf, (64, 64))
    _, d_dx0, d_dy0 = renderer.with_centre_gradient(params)
    for index, exact in ((1, d_dx0), (2, d_dy0)):
        step = np.zeros(7)
        step[index] = 1e-4
        numeric = (renderer(params + step) - renderer(params - step)) / 2e-4
        assert np.abs(numeric - exact).max() < 1e-3 * np.abs(exact).max()


def test_model_is_smooth_and_shift_covariant_in_the_centre(draw_sersic):
    _, psf, params = draw_sersic(6.0, 2.0, 0.4, 150.0)
    renderer = SersicRenderer(psf, (64, 64))
    shifts = np.linspace(0.0, 0.5, 11)  # crosses sub-pixel grid cells (1/3 pixel)
    peak = [renderer(params + np.array([0, shift, 0, 0, 0, 0, 0]))[31, 31] for shift in shifts]
    smooth = np.polyval(np.polyfit(shifts, peak, 4), shifts)
    assert np.abs(peak - smooth).max() < 1e-5 * max(peak)
    moved = renderer(params + np.array([0, 1.0, -2.0, 0, 0, 0, 0]))
    np.testing.assert_allclose(
        moved[8:-8, 8:-8], renderer(params)[10:-6, 7:-9], atol=1e-9 * moved.max()
    )


def test_renderer_rejects_bad_psf_and_off_stamp_centre(draw_sersic):
    _, psf, _ = draw_sersic(1.0, 2.0, 1.0, 0.0)
    with pytest.raises(DataError, match=r"cutout\.fits: PSF sums to"):
        SersicRenderer(psf * 2, (64, 64), origin="cutout.fits")
    with pytest.raises(ValueError, match=r"x0 = 200\.0 lies outside the stamp"):
        render_sersic((1.0, 200.0, 30.0, 2.0, 1.0, 1.0, 0.0), psf, shape=(64, 64))
