"""The likelihood refinement of q and PA (morpho.sersic.refine) against known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import gammaincinv

from morpho.data.errors import DataError
from morpho.sersic.profile import sersic_amplitude
from morpho.sersic.refine import (
    _from_ellipticity,
    _ln_amplitude,
    _render,
    _to_ellipticity,
    psf_transfer,
    refine_shape,
    sersic_b,
)


def _start(params, **changes) -> dict[str, torch.Tensor]:
    """A start dict from a truth vector (flux, x0, y0, r_e, n, q, pa), some values changed."""
    flux, _, _, r_e, n, q, pa = params
    values = dict(flux=flux, r_e_pix=r_e, n=n, q=q, pa_deg=pa, q_err=0.05, pa_deg_err=3.0)
    values.update(changes)
    return {k: torch.tensor([v], dtype=torch.float32) for k, v in values.items()}


def _refine(image, psf, start, *, sigma=6.0, gain=1.0, steps=1):
    return refine_shape(
        torch.tensor(np.asarray(image)[None], dtype=torch.float32),
        torch.tensor(psf, dtype=torch.float32),
        start,
        background_sigma=torch.tensor([sigma]),
        gain=gain,
        steps=steps,
    )


def test_sersic_b_matches_the_exact_root():
    n = np.array([0.5, 1.0, 1.5, 4.0, 8.0])
    error = sersic_b(torch.tensor(n)).numpy() / gammaincinv(2 * n, 0.5) - 1
    assert abs(error[0]) < 2.1e-3  # 0.20% at n = 0.5
    assert abs(error[1]) < 1e-4
    assert np.all(np.abs(error[2:]) < 1e-5)


def test_amplitude_matches_the_profile_module():
    args = (torch.tensor([1e4, 50.0]), torch.tensor([3.0, 7.0]), torch.tensor([1.0, 4.0]))
    q = torch.tensor([0.5, 0.9])
    expected = sersic_amplitude(1e4, 3.0, 1.0, 0.5), sersic_amplitude(50.0, 7.0, 4.0, 0.9)
    np.testing.assert_allclose(_ln_amplitude(*args, q).exp().numpy(), expected, rtol=1e-4)


def test_the_derivatives_are_those_of_the_model():
    """Central differences of the rendered model in (x0, y0, ln r_e, e1, e2)."""
    params = torch.tensor([[2.0, 31.8, 31.3, 1.2, 0.6, 0.7]], dtype=torch.float64)
    n = torch.tensor([1.7], dtype=torch.float64)
    jacobian = _render(params, n, 40)[0]
    e1, e2 = _to_ellipticity(params[0, 4:5], params[0, 5:6])
    free = torch.cat([params[0, :4], e1, e2])

    def model(values):
        q, theta = _from_ellipticity(values[4:5], values[5:6])
        return _render(torch.cat([values[:4], q, theta])[None], n, 40)[0, 0]

    for i in range(1, 6):
        step = torch.zeros(6, dtype=torch.float64)
        step[i] = 1e-6
        numeric = (model(free + step) - model(free - step)) / 2e-6
        scale = numeric.abs().max()
        assert (numeric - jacobian[i]).abs().max() < 1e-6 * scale, i


def test_a_delta_psf_transfers_every_frequency_unchanged():
    delta = torch.zeros(5, 5)
    delta[2, 2] = 1
    transfer = psf_transfer(delta, 16)
    assert transfer.shape == (1, 16, 9)
    torch.testing.assert_close(transfer, torch.ones_like(transfer))


@pytest.mark.parametrize(
    ("n", "r_e", "q", "pa"), [(1.0, 4.0, 0.5, 30.0), (2.0, 6.0, 0.8, 75.0), (1.0, 8.0, 0.4, 150.0)]
)
def test_noiseless_galaxies_are_recovered_from_an_offset_start(draw_sersic, n, r_e, q, pa):
    """A GalSim-drawn galaxy, the start 0.05 rounder and 4° off: two steps recover it."""
    image, psf, truth = draw_sersic(n, r_e, q, pa)
    start = _start(truth, q=q + 0.05, pa_deg=pa + 4.0, flux=1.05e4, r_e_pix=r_e * 1.05)
    refined = _refine(image, psf, start, steps=2)
    assert refined.refined.item()
    assert abs(refined.q.item() - q) < 1e-3
    assert abs((refined.pa_deg.item() - pa + 90) % 180 - 90) < 0.05
    assert abs(refined.x0.item() - truth[1]) < 0.01
    assert abs(refined.y0.item() - truth[2]) < 0.01


def test_turning_the_image_by_90_degrees_turns_the_angle(draw_sersic):
    image, psf, truth = draw_sersic(1.5, 4.0, 0.6, 20.0, offset=(0.0, 0.0))
    rng = np.random.default_rng(0)
    noisy = image + rng.normal(0, 6.0, image.shape)
    start = _start(truth, q=0.65, pa_deg=24.0)
    plain = _refine(noisy, psf, start)
    # np.rot90 turns +x onto -y (rows up): the angle from +x towards +y grows by 90°.
    turned_start = _start(truth, q=0.65, pa_deg=114.0)
    turned = _refine(np.rot90(noisy).copy(), np.rot90(psf).copy(), turned_start)
    assert abs(turned.q.item() - plain.q.item()) < 1e-4
    turn = turned.pa_deg.item() - plain.pa_deg.item() - 90.0
    assert abs((turn + 90) % 180 - 90) < 0.01


def _refined_noisy_copies(draw_sersic, q: float, flux: float, copies: int = 300):
    """Two steps on ``copies`` noisy draws (sky 36, gain 1) of one galaxy at PA 40°,
    each started from the truth."""
    image, psf, truth = draw_sersic(1.0, 5.0, q, 40.0, flux=flux)
    rng = np.random.default_rng(1)
    draws = image + rng.normal(0, 1, (copies, *image.shape)) * np.sqrt(36.0 + image.clip(0))
    start = {k: v.expand(copies) for k, v in _start(truth, flux=flux).items()}
    return refine_shape(
        torch.tensor(draws, dtype=torch.float32),
        torch.tensor(psf, dtype=torch.float32),
        start,
        background_sigma=torch.full((copies,), 6.0),
        gain=1.0,
        steps=2,
    )


def test_the_errors_match_the_scatter_over_noise_draws(draw_sersic):
    """The Fisher errors of q and PA against the spread of 300 noisy copies."""
    refined = _refined_noisy_copies(draw_sersic, 0.5, 3e3)
    q_spread = refined.q.std().item()
    pa_spread = refined.pa_deg.std().item()
    assert refined.q_err.median().item() == pytest.approx(q_spread, rel=0.15)
    assert refined.pa_deg_err.median().item() == pytest.approx(pa_spread, rel=0.15)
    assert abs(refined.q.mean().item() - 0.5) < 3 * q_spread / np.sqrt(300) + 2e-3


def test_near_round_galaxies_get_angle_errors_that_cover(draw_sersic):
    """At q = 0.95 noise lengthens the fitted |e|: the linear σ_t / (2|e|) then covered
    59% and 87% of 300 noisy copies' angles within 1σ and 1.96σ; the von Mises of the
    de-biased |e| covers at least the 68% and 95% that it says."""
    refined = _refined_noisy_copies(draw_sersic, 0.95, 1e4)
    assert refined.refined.all()
    miss = ((refined.pa_deg - 40.0 + 90.0) % 180.0 - 90.0).abs()
    inside_1sigma = (miss <= refined.pa_deg_err).float().mean().item()
    inside_95 = (miss <= 1.96 * refined.pa_deg_err).float().mean().item()
    assert inside_1sigma >= 0.62
    assert inside_95 == pytest.approx(0.95, abs=0.03)


def test_a_round_galaxy_stays_round_and_finite(draw_sersic):
    image, psf, truth = draw_sersic(1.5, 3.0, 1.0, 0.0)
    refined = _refine(image, psf, _start(truth, q=0.9, pa_deg=10.0), steps=3)
    assert refined.refined.item()
    assert refined.q.item() > 0.995
    assert torch.isfinite(refined.pa_deg_err).all()


def test_faint_galaxies_keep_the_start_and_the_snr_is_the_simulators(draw_sersic):
    image, psf, truth = draw_sersic(1.0, 4.0, 0.5, 30.0)
    start = _start(truth, q=0.55, pa_deg=33.0)
    expected = np.sqrt(np.sum(np.square(image))) / 6.0  # flux = S/N σ / sqrt(Σ unit²)
    bright = _refine(image, psf, start)
    assert bright.snr.item() == pytest.approx(expected, rel=0.03)  # the start's model
    assert _refine(image, psf, _start(truth)).snr.item() == pytest.approx(expected, rel=0.005)
    faint = _refine(image, psf, start, sigma=expected * 6.0 / 15.0)  # S/N 15
    assert faint.snr.item() == pytest.approx(15.0, rel=0.03)
    assert bright.refined.item()
    assert not faint.refined.item()
    assert faint.q.item() == pytest.approx(0.55)
    assert faint.pa_deg.item() == pytest.approx(33.0)


def test_a_failed_step_keeps_the_start(draw_sersic):
    image, psf, truth = draw_sersic(1.0, 4.0, 0.5, 30.0)
    broken = np.array(image)
    broken[10, 10] = np.nan
    start = _start(truth, q=0.55, pa_deg=33.0)
    refined = _refine(broken, psf, start)
    assert not refined.refined.item()
    assert refined.q.item() == pytest.approx(0.55)
    assert refined.pa_deg.item() == pytest.approx(33.0)
    assert refined.q_err.item() == pytest.approx(0.05)


def test_bad_input_is_refused(draw_sersic):
    image, psf, truth = draw_sersic(1.0, 4.0, 0.5, 30.0)
    start = _start(truth)
    with pytest.raises(DataError, match="sums to 2, expected 1"):
        _refine(image, psf * 2, start)
    with pytest.raises(DataError, match="odd side"):
        _refine(image, np.ones((4, 4)) / 16, start)
    holed = psf.copy()
    holed[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        _refine(image, holed, start)
    with pytest.raises(DataError, match="more than one pixel from the centre"):
        _refine(image, np.roll(psf, 3, axis=1), start)
    with pytest.raises(DataError, match=r"\(N, S, S\) images"):
        refine_shape(
            torch.zeros(1, 1, 8, 8), torch.tensor(psf), start, background_sigma=torch.ones(1)
        )
    with pytest.raises(DataError, match="2 PSFs for 1 images"):
        refine_shape(
            torch.tensor(image[None], dtype=torch.float32),
            torch.tensor(np.stack([psf, psf])),
            start,
            background_sigma=torch.ones(1),
        )
    with pytest.raises(DataError, match="positive background"):
        _refine(image, psf, start, sigma=0.0)
    with pytest.raises(ValueError, match="steps >= 1"):
        _refine(image, psf, start, steps=0)


# torch.compile's own import of a deprecated torch.jit API.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_refinement_equals_the_eager_one(draw_sersic):
    image, psf, truth = draw_sersic(1.0, 4.0, 0.5, 30.0)
    noisy = image + np.random.default_rng(2).normal(0, 6.0, (3, *image.shape))
    start = {k: v.expand(3) for k, v in _start(truth, q=0.55, pa_deg=33.0).items()}
    args = (torch.tensor(noisy, dtype=torch.float32), torch.tensor(psf, dtype=torch.float32))
    sigma = torch.full((3,), 6.0)
    eager = refine_shape(*args, start, background_sigma=sigma, gain=1.0)
    compiled = refine_shape(*args, start, background_sigma=sigma, gain=1.0, compile=True)
    torch.testing.assert_close(compiled.q, eager.q, atol=1e-4, rtol=0)
    torch.testing.assert_close(compiled.pa_deg, eager.pa_deg, atol=0.01, rtol=0)
