"""PSF validation gives clear errors; the FWHM of known PSFs is measured."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from morpho.data.errors import DataError
from morpho.sersic.psf import check_psf, check_psfs, gaussian_psf, psf_fwhm, subsample_psf


def _moffat(side: int = 25) -> np.ndarray:
    stamp = galsim.Moffat(beta=3.0, fwhm=0.8).drawImage(nx=side, ny=side, scale=0.2).array
    return stamp / stamp.sum()


def test_valid_psf_is_returned_as_float64_and_squeezed():
    psf = _moffat().astype(np.float32)[None]
    checked = check_psf(psf)
    assert checked.shape == (25, 25)
    assert checked.dtype == np.float64


@pytest.mark.parametrize(
    ("psf", "words"),
    [
        (np.full((2, 3), 1 / 6), "shape (2, 3)"),
        (np.full((4, 4), 1 / 16), "odd side"),
        (np.full((3, 3, 3), 1 / 27), "square (P, P)"),
        (_moffat() * 0.5, "psf / psf.sum()"),
        (np.where(np.eye(25, dtype=bool), np.nan, _moffat()), "NaN"),
        (np.roll(_moffat(), 3, axis=1), "re-centre"),
    ],
)
def test_invalid_psf_names_origin_and_fix(psf, words):
    with pytest.raises(DataError) as error:
        check_psf(psf, origin="psf.fits")
    message = str(error.value)
    assert message.startswith("psf.fits: ")
    assert words in message


def test_unnormalised_psf_message_gives_the_sum():
    with pytest.raises(DataError, match=r"psf.fits: PSF sums to 0\.5, expected 1"):
        check_psf(_moffat() * 0.5, origin="psf.fits")


def test_a_stack_of_psfs_is_checked_at_once_and_the_one_at_fault_named():
    good = _moffat()
    assert check_psfs(np.stack([good, good.astype(np.float32)])).shape == (2, 25, 25)
    for broken, words in ((good * 0.5, "sums to 0.5"), (np.roll(good, 3, axis=0), "re-centre")):
        with pytest.raises(DataError, match=rf"cat.h5 \(PSF 2\): .*{words}"):
            check_psfs(np.stack([good, good, broken]), origin="cat.h5")


@pytest.mark.parametrize("fwhm_pix", [3.0, 4.0, 5.0])
def test_fwhm_of_gaussian_and_moffat(fwhm_pix):
    for profile in (
        galsim.Gaussian(fwhm=fwhm_pix * 0.2),
        galsim.Moffat(beta=3.0, fwhm=fwhm_pix * 0.2),
    ):
        stamp = profile.drawImage(nx=31, ny=31, scale=0.2, method="no_pixel").array
        assert psf_fwhm(stamp) == pytest.approx(fwhm_pix, rel=0.03)


def test_fwhm_of_effective_psf_includes_the_pixel():
    # Gaussian ⊗ pixel: σ² grows by 1/12 pixel² (to 0.2% for these widths).
    expected = 2.3548 * np.sqrt((3.0 / 2.3548) ** 2 + 1 / 12)
    assert psf_fwhm(gaussian_psf(3.0)) == pytest.approx(expected, rel=0.01)


def test_gaussian_psf_is_a_valid_centred_psf():
    psf = gaussian_psf(2.5)
    assert check_psf(psf).shape == psf.shape
    np.testing.assert_allclose(psf, psf.T)
    np.testing.assert_allclose(psf, psf[::-1, ::-1])


@pytest.mark.parametrize("oversample", [1, 3, 4])
def test_subsampled_psf_conserves_flux_in_every_phase(oversample):
    kernel = subsample_psf(_moffat(), oversample)
    assert kernel.shape == (24 * oversample + 1,) * 2
    for a in range(oversample):
        for b in range(oversample):
            assert kernel[a::oversample, b::oversample].sum() == pytest.approx(oversample**-2)
    centre = 12 * oversample
    np.testing.assert_allclose(
        kernel[::oversample, ::oversample], _moffat() / oversample**2, rtol=1e-3, atol=1e-9
    )
    assert np.argmax(kernel) == np.ravel_multi_index((centre, centre), kernel.shape)


def test_wing_fraction_tells_gaussian_from_moffat_psfs():
    import galsim

    from morpho.sersic.psf import GAUSSIAN_WING_FRACTION, psf_wing_fraction

    def drawn(profile):
        image = profile.drawImage(nx=51, ny=51, scale=0.2).array
        return image / image.sum()

    gaussian = psf_wing_fraction(drawn(galsim.Gaussian(fwhm=1.0)))
    assert abs(gaussian - GAUSSIAN_WING_FRACTION) < 0.01  # exp(-4 ln 2), pixelated
    wings = [psf_wing_fraction(drawn(galsim.Moffat(beta=b, fwhm=0.8))) for b in (4.5, 3.0, 2.5)]
    assert gaussian + 0.08 < wings[0] < wings[1] < wings[2]  # heavier as β falls
