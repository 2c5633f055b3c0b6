"""The GalSim simulator against known answers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from morpho.data.simulate import (
    MORPHOLOGY_CLASSES,
    NoiseModel,
    PSFSpec,
    SimulationSpec,
    render_galaxy,
    simulate_to_hdf5,
)
from morpho.data.simulate.components import sersic
from morpho.data.simulate.render import draw_psf


def _half_light_radius(image: np.ndarray, *, total: float, q: float, pa_deg: float) -> float:
    """Major-axis radius of the ellipse (q, pa) enclosing half of ``total``, from pixel centres."""
    y, x = np.indices(image.shape, dtype=float)
    x -= (image.shape[1] - 1) / 2
    y -= (image.shape[0] - 1) / 2
    a = np.radians(pa_deg)
    u = x * np.cos(a) + y * np.sin(a)
    v = -x * np.sin(a) + y * np.cos(a)
    radius = np.hypot(u, v / q).ravel()
    order = np.argsort(radius)
    cumulative = np.cumsum(image.ravel()[order])
    return float(np.interp(0.5 * total, cumulative, radius[order]))


@pytest.mark.parametrize(("n", "r_e", "q", "pa"), [(1.0, 6.0, 1.0, 0.0), (2.5, 5.0, 0.6, 30.0)])
def test_psf_free_half_light_radius_matches_truth(n, r_e, q, pa):
    profile = sersic(n, r_e, q, pa, pixel_scale=0.2)
    image = profile.drawImage(nx=201, ny=201, scale=0.2, method="real_space").array
    measured = _half_light_radius(image, total=1.0, q=q, pa_deg=pa)
    assert measured == pytest.approx(r_e, rel=0.02)


def test_noiseless_flux_of_single_sersic_matches_truth():
    spec = SimulationSpec(
        mode="single_sersic", image_size=96, sersic_n=(0.8, 1.6), r_e=(2.0, 4.0), snr=(50, 100)
    )
    for index in range(4):
        galaxy = render_galaxy(spec, index, seed=3)
        assert galaxy.noiseless.sum() == pytest.approx(galaxy.truth["sersic_flux"], rel=0.01)
        assert galaxy.truth["sersic_flux"] == galaxy.truth["total_flux"]


def test_snr_follows_the_matched_filter_definition(tiny_spec):
    galaxy = render_galaxy(tiny_spec, 7, seed=0)
    sigma = np.sqrt(tiny_spec.noise.background_variance)
    measured = np.sqrt(np.sum(galaxy.noiseless.astype(float) ** 2)) / sigma
    assert measured == pytest.approx(galaxy.truth["snr"], rel=1e-4)
    assert 30.0 <= galaxy.truth["snr"] <= 200.0


def test_sky_pixels_have_the_stated_variance():
    noise = NoiseModel(sky_level=50.0, read_noise=4.0, gain=2.0)
    sample = noise.sample(np.zeros((400, 400)), np.random.default_rng(0))
    expected = 50.0 / 2.0 + (4.0 / 2.0) ** 2
    assert sample.var() == pytest.approx(expected, rel=0.02)
    assert sample.mean() == pytest.approx(0.0, abs=0.05)
    assert noise.background_variance == expected


def test_galaxy_residuals_have_the_per_pixel_variance(tiny_spec):
    galaxy = render_galaxy(tiny_spec, 3, seed=1)
    rng = np.random.default_rng(5)
    draws = np.stack([tiny_spec.noise.sample(galaxy.noiseless, rng) for _ in range(400)])
    ratio = draws.var(axis=0) / tiny_spec.noise.variance(galaxy.noiseless)
    assert ratio.mean() == pytest.approx(1.0, abs=0.02)


def test_stored_psf_is_normalised_with_the_true_fwhm():
    spec = SimulationSpec(psf=PSFSpec(kinds=("gaussian",), fwhm_arcsec=(1.0, 1.0), stamp_size=41))
    galaxy = render_galaxy(spec, 0, seed=0)
    psf = galaxy.psf[0]
    assert psf.sum() == pytest.approx(1.0, abs=1e-6)
    # A Gaussian FWHM of 5 pixels, widened by the pixel response (σ² + 1/12 px²).
    sigma_pix = 1.0 / 0.2 / 2.3548
    centre_row = psf[20]
    expected = np.exp(-0.5 * np.arange(-20, 21) ** 2 / (sigma_pix**2 + 1 / 12))
    assert np.allclose(centre_row / centre_row.max(), expected / expected.max(), atol=0.01)


def test_every_class_renders_with_its_label():
    for label, name in enumerate(MORPHOLOGY_CLASSES):
        spec = SimulationSpec(image_size=32, class_fractions={name: 1.0})
        galaxy = render_galaxy(spec, 0, seed=0)
        assert galaxy.truth["label"] == label
        assert galaxy.truth["class_name"] == name
        assert np.isfinite(galaxy.image).all()
        assert galaxy.noiseless.min() > -1e-3 * galaxy.noiseless.max()


def test_bulges_are_redder_than_disks_in_three_bands():
    spec = SimulationSpec(
        image_size=32, bands=("g", "r", "i"), class_fractions={"elliptical": 1, "edge_on": 1}
    )
    colour = {}
    for index in range(6):
        galaxy = render_galaxy(spec, index, seed=0)
        fluxes = galaxy.noiseless.sum(axis=(1, 2))
        colour.setdefault(galaxy.truth["class_name"], []).append(fluxes[2] / fluxes[0])
    assert min(colour["elliptical"]) > max(colour["edge_on"])


def test_same_seed_same_galaxy_other_seed_other_galaxy(tiny_spec):
    a, b = render_galaxy(tiny_spec, 4, seed=0), render_galaxy(tiny_spec, 4, seed=0)
    c = render_galaxy(tiny_spec, 4, seed=1)
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_file_layout_and_catalog(simulated_file, tiny_spec):
    with h5py.File(simulated_file, "r") as h5:
        assert h5["images"].shape == (60, 1, 32, 32)
        assert h5["noiseless"].shape == (60, 1, 32, 32)
        assert h5["psf"].shape == (60, 1, 25, 25)
        assert h5["images"].attrs["layout"] == "NCHW"
        ids = h5["catalog/id_str"].asstr()[:]
        labels = h5["catalog/label"][:]
        elliptical = labels == 0
        assert np.isnan(h5["catalog/disk_r_e_pix"][:][elliptical]).all()
        assert np.isfinite(h5["catalog/bulge_r_e_pix"][:][elliptical]).all()
        galaxy = render_galaxy(tiny_spec, 17, seed=0)
        assert np.array_equal(h5["images"][17], galaxy.image)
    assert ids[17] == "sim0000017"
    assert set(np.unique(labels)) <= set(range(6))


@pytest.mark.slow
def test_file_is_identical_for_any_worker_count(tmp_path, tiny_spec):
    one = simulate_to_hdf5(
        tmp_path / "a.h5", n_galaxies=12, spec=tiny_spec, workers=1, chunk_size=5, progress=False
    )
    two = simulate_to_hdf5(
        tmp_path / "b.h5", n_galaxies=12, spec=tiny_spec, workers=2, chunk_size=3, progress=False
    )
    with h5py.File(one) as a, h5py.File(two) as b:
        assert np.array_equal(a["images"][:], b["images"][:])
        assert np.array_equal(a["catalog/snr"][:], b["catalog/snr"][:])


@pytest.mark.parametrize("n", [0, -5, 2.5])
def test_non_positive_n_is_refused(tmp_path, n):
    with pytest.raises(ValueError, match="n_galaxies must be a positive integer"):
        simulate_to_hdf5(tmp_path / "x.h5", n_galaxies=n, workers=1, progress=False)
    assert not list(tmp_path.iterdir())


def test_existing_output_is_kept_when_a_run_fails(tmp_path, tiny_spec, monkeypatch):
    path = tmp_path / "galaxies.h5"
    path.write_bytes(b"earlier results")
    with pytest.raises(FileExistsError, match=r"galaxies\.h5 exists"):
        simulate_to_hdf5(path, n_galaxies=2, spec=tiny_spec, workers=1, progress=False)

    def broken(spec, index, seed):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr("morpho.data.simulate.writer.render_galaxy", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        simulate_to_hdf5(
            path, n_galaxies=2, spec=tiny_spec, workers=1, progress=False, overwrite=True
        )
    assert path.read_bytes() == b"earlier results"
    assert [p.name for p in tmp_path.iterdir()] == ["galaxies.h5"]


def test_spec_rejects_bad_settings():
    with pytest.raises(ValueError, match="class_fractions has unknown classes"):
        SimulationSpec(class_fractions={"cigar": 1.0})
    with pytest.raises(ValueError, match=r"simulation\.mode"):
        SimulationSpec(mode="three_class")
    with pytest.raises(ValueError, match=r"noise\.gain"):
        NoiseModel(gain=0.0)
    with pytest.raises(ValueError, match=r"colours\.old needs 2 positive values"):
        SimulationSpec(bands=("g", "r"), colours={"old": [1.0]})


def test_psf_draws_cover_both_kinds():
    spec = SimulationSpec()
    kinds = {draw_psf(spec, np.random.default_rng(i))[1]["psf_kind"] for i in range(20)}
    assert kinds == {"moffat", "gaussian"}


def test_apparent_half_light_radius_of_a_psf_free_like_galaxy():
    # A compact PSF and an exponential of r_e = 5 px: the apparent radius is just above r_e.
    spec = SimulationSpec(
        mode="single_sersic",
        image_size=96,
        sersic_n=(1.0, 1.0),
        r_e=(5.0, 5.0),
        axis_ratio=(1.0, 1.0),
        psf=PSFSpec(kinds=("gaussian",), fwhm_arcsec=(0.2, 0.2)),
    )
    galaxy = render_galaxy(spec, 0, seed=0)
    assert 5.0 < galaxy.truth["half_light_radius_pix"] < 5.3
