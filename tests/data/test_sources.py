"""Round trips through the galaxy sources: what is written is read back."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from PIL import Image

from morpho.data.errors import DataError
from morpho.data.sources import (
    FITSSource,
    HDF5Source,
    ImageFolderSource,
    open_source,
)

NATIVE_FLOAT32 = np.dtype(np.float32)


def _images(source) -> list[np.ndarray]:
    return [source[i].image for i in range(len(source))]


# FITS --------------------------------------------------------------------------------------


def test_fits_folder_of_2d_stamps(tmp_path: Path, galaxies: np.ndarray) -> None:
    for i, galaxy in enumerate(galaxies):
        fits.PrimaryHDU(galaxy[0]).writeto(tmp_path / f"b{i}.fits")
    fits.PrimaryHDU(galaxies[0, 1]).writeto(tmp_path / "a.fits.gz")
    source = FITSSource(tmp_path)
    assert source.catalog["id_str"].tolist() == ["a", "b0", "b1", "b2"]
    assert source.catalog["file_loc"].tolist()[0] == str(tmp_path / "a.fits.gz")
    np.testing.assert_array_equal(source[0].image, galaxies[0, 1][np.newaxis])
    for i in range(3):
        record = source[i + 1]
        assert record.image.shape == (1, 8, 8)
        np.testing.assert_array_equal(record.image, galaxies[i, :1])
        assert record.origin == str(tmp_path / f"b{i}.fits")


def test_fits_folder_of_multiband_stamps(fits_folder: Path, galaxies: np.ndarray) -> None:
    source = FITSSource(fits_folder)
    assert len(source) == 3
    assert [source[i].id for i in range(3)] == ["g0", "g1", "g2"]
    for image, expected in zip(_images(source), galaxies, strict=True):
        assert image.shape == (2, 8, 8)
        assert image.dtype == NATIVE_FLOAT32
        np.testing.assert_array_equal(image, expected)


def test_fits_folder_pattern_selects_files(fits_folder: Path) -> None:
    (fits_folder / "notes.txt").write_text("not a stamp")
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(fits_folder / "other.fit")
    assert FITSSource(fits_folder).catalog["id_str"].tolist() == ["g0", "g1", "g2"]
    assert FITSSource(fits_folder, pattern="*.fit").catalog["id_str"].tolist() == ["other"]


@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 2, 8, 8)])
def test_fits_cube(tmp_path: Path, galaxies: np.ndarray, shape: tuple[int, ...]) -> None:
    cube = galaxies[:, 0] if len(shape) == 3 else galaxies
    fits.PrimaryHDU(cube).writeto(tmp_path / "cube.fits")
    with FITSSource(tmp_path / "cube.fits") as source:
        assert source.catalog["id_str"].tolist() == ["cube_0", "cube_1", "cube_2"]
        for i in range(3):
            record = source[i]
            assert record.origin == f"{tmp_path / 'cube.fits'}[0][{i}]"
            np.testing.assert_array_equal(record.image, cube[i].reshape(-1, 8, 8))


def test_fits_cube_with_catalog(tmp_path: Path, galaxies: np.ndarray) -> None:
    fits.PrimaryHDU(galaxies).writeto(tmp_path / "cube.fits")
    catalog = pd.DataFrame({"id_str": ["x", "y", "z"], "mag": [20.0, 21.0, 22.0]})
    with FITSSource(tmp_path / "cube.fits", catalog=catalog) as source:
        assert source[2].id == "z"
        assert source[2].row["mag"] == 22.0
        assert source[2].row["file_loc"] == str(tmp_path / "cube.fits")


def test_fits_image_in_extension_after_empty_primary(tmp_path: Path, galaxies: np.ndarray) -> None:
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=[1.0])])
    hdus = [fits.PrimaryHDU(), table, fits.ImageHDU(galaxies[1], name="SCI")]
    hdus.append(fits.ImageHDU(galaxies[2], name="WHT"))
    fits.HDUList(hdus).writeto(tmp_path / "g.fits")
    np.testing.assert_array_equal(FITSSource(tmp_path)[0].image, galaxies[1])
    np.testing.assert_array_equal(FITSSource(tmp_path, hdu="WHT")[0].image, galaxies[2])
    np.testing.assert_array_equal(FITSSource(tmp_path, hdu=3)[0].image, galaxies[2])


def test_fits_big_endian_and_scaled_data_come_out_native_float32(tmp_path: Path) -> None:
    big = np.arange(16, dtype=">f8").reshape(4, 4) / 3
    fits.PrimaryHDU(big).writeto(tmp_path / "big.fits")
    counts = (np.arange(16, dtype=np.uint16) * 4000).reshape(1, 4, 4)
    fits.PrimaryHDU(counts).writeto(tmp_path / "counts.fits")  # int16 with BZERO = 32768
    source = FITSSource(tmp_path)
    for record in (source[0], source[1]):
        assert record.image.dtype == NATIVE_FLOAT32
    np.testing.assert_allclose(source[0].image[0], big, rtol=1e-7)
    np.testing.assert_array_equal(source[1].image, counts)
    with FITSSource(tmp_path / "counts.fits") as cube:
        np.testing.assert_array_equal(cube[0].image, counts)
        assert cube[0].image.dtype == NATIVE_FLOAT32


def test_fits_folder_with_catalog(fits_folder: Path) -> None:
    catalog = pd.DataFrame({"id_str": ["second", "first"], "file_loc": ["g1.fits", "g0.fits"]})
    catalog["redshift"] = [0.2, 0.1]
    catalog.to_parquet(fits_folder / "catalog.parquet")
    source = FITSSource(fits_folder, catalog=fits_folder / "catalog.parquet")
    assert len(source) == 2
    assert source[0].id == "second"
    assert source[0].origin == str(fits_folder / "g1.fits")
    assert source[1].row["redshift"] == 0.1


def test_fits_cube_source_pickles_and_reopens(tmp_path: Path, galaxies: np.ndarray) -> None:
    fits.PrimaryHDU(galaxies).writeto(tmp_path / "cube.fits")
    with FITSSource(tmp_path / "cube.fits") as source:
        expected = source[1].image
        with pickle.loads(pickle.dumps(source)) as copy:
            np.testing.assert_array_equal(copy[1].image, expected)


# HDF5 --------------------------------------------------------------------------------------


def test_hdf5_galaxy10_layout(tmp_path: Path) -> None:
    images = (np.arange(3 * 5 * 6 * 3) % 256).astype(np.uint8).reshape(3, 5, 6, 3)
    with h5py.File(tmp_path / "g10.h5", "w") as file:
        file["images"] = images
        file["ans"] = np.array([4, 0, 9], dtype=np.uint8)
        file["redshift"] = np.array([0.01, 0.02, 0.03])
    with HDF5Source(tmp_path / "g10.h5") as source:
        assert source.layout == "NHWC"
        assert list(source.catalog.columns) == ["id_str", "ans", "redshift"]
        record = source[2]
        assert record.image.dtype == NATIVE_FLOAT32
        assert record.image.shape == (3, 5, 6)
        np.testing.assert_array_equal(record.image, images[2].transpose(2, 0, 1))
        assert record.id == "2"
        assert record.row["ans"] == 9
        assert record.origin == f"{tmp_path / 'g10.h5'}[images][2]"


def test_hdf5_morpho_layout(morpho_h5: Path, galaxies: np.ndarray) -> None:
    with HDF5Source(morpho_h5) as source:
        assert source.layout == "NCHW"
        assert "psf" not in source.catalog.columns
        assert source.catalog["id_str"].tolist() == ["sim_a", "sim_b", "sim_c"]
        assert source.catalog["kind"].tolist() == ["disk", "bulge", "merger"]
        for i in range(3):
            np.testing.assert_array_equal(source[i].image, galaxies[i])
        assert source[1].row["flux"] == 2.5
        assert source[1].id == "sim_b"


def test_hdf5_in_memory_reads_the_same(morpho_h5: Path) -> None:
    on_disk, in_memory = HDF5Source(morpho_h5), HDF5Source(morpho_h5, in_memory=True)
    for i in range(len(on_disk)):
        a, b = on_disk[i], in_memory[i]
        np.testing.assert_array_equal(a.image, b.image)
        assert a.id == b.id
        assert a.row == b.row
    assert in_memory.read_array("no_such_key", 0) is None
    np.testing.assert_array_equal(in_memory.read_array("images", 2), on_disk[2].image)
    restored = pickle.loads(pickle.dumps(in_memory))
    np.testing.assert_array_equal(restored[1].image, on_disk[1].image)


def test_hdf5_id_key_and_3d_single_band(tmp_path: Path, galaxies: np.ndarray) -> None:
    with h5py.File(tmp_path / "single.h5", "w") as file:
        file["cutouts"] = galaxies[:, 0]
        file["objid"] = np.array([10, 20, 30])
    with HDF5Source(tmp_path / "single.h5", images_key="cutouts", id_key="objid") as source:
        assert source.catalog["id_str"].tolist() == ["10", "20", "30"]
        np.testing.assert_array_equal(source[1].image, galaxies[1, :1])


def test_hdf5_forced_layout(tmp_path: Path, galaxies: np.ndarray) -> None:
    with h5py.File(tmp_path / "plain.h5", "w") as file:
        file["images"] = galaxies  # NCHW without the layout attribute
    with HDF5Source(tmp_path / "plain.h5", layout="NCHW") as source:
        np.testing.assert_array_equal(source[0].image, galaxies[0])
    with HDF5Source(tmp_path / "plain.h5") as source:
        assert source[0].image.shape == (8, 2, 8)  # read as NHWC: (C=8, H=2, W=8)


def test_hdf5_source_pickles_without_its_handle(morpho_h5: Path, galaxies: np.ndarray) -> None:
    with HDF5Source(morpho_h5) as source:
        source[0]  # opens the handle
        with pickle.loads(pickle.dumps(source)) as copy:
            assert copy._file._handle is None
            np.testing.assert_array_equal(copy[2].image, galaxies[2])
            assert copy.catalog.equals(source.catalog)


def test_hdf5_reopens_in_another_process(
    morpho_h5: Path, galaxies: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HDF5Source(morpho_h5) as source:
        source[0]
        parent_handle = source._file.get()
        monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a forked DataLoader worker
        np.testing.assert_array_equal(source[1].image, galaxies[1])
        worker_handle = source._file.get()
        assert worker_handle is not parent_handle
        assert worker_handle.id.valid
        assert not parent_handle.id.valid  # the inherited copy was closed


# PNG / JPEG --------------------------------------------------------------------------------


def test_grey_png_folder_from_csv(grey_pngs: tuple[Path, np.ndarray]) -> None:
    catalog, pixels = grey_pngs
    source = ImageFolderSource(catalog)
    assert source.catalog["id_str"].tolist() == ["007", "008", "009"]
    for i in range(3):
        record = source[i]
        assert record.image.dtype == NATIVE_FLOAT32
        np.testing.assert_array_equal(record.image, pixels[i])
        assert record.row["smooth"] == [0.1, 0.5, 0.9][i]
    assert source[2].origin == str(catalog.parent / "png" / "p2.png")


def test_rgb_and_rgba_png_from_parquet_with_root(tmp_path: Path) -> None:
    rgb = (np.arange(4 * 5 * 3) * 3).astype(np.uint8).reshape(4, 5, 3)
    rgba = np.concatenate([rgb[::-1], np.full((4, 5, 1), 7, np.uint8)], axis=-1)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(rgb).save(tmp_path / "imgs" / "rgb.png")
    Image.fromarray(rgba).save(tmp_path / "imgs" / "rgba.png")
    catalog = pd.DataFrame({"id_str": ["rgb", "rgba"], "file_loc": ["rgb.png", "rgba.png"]})
    catalog.to_parquet(tmp_path / "catalog.parquet")
    source = ImageFolderSource(tmp_path / "catalog.parquet", root=tmp_path / "imgs")
    np.testing.assert_array_equal(source[0].image, rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(source[1].image, rgb[::-1].transpose(2, 0, 1))


def test_jpeg_folder_from_dataframe(tmp_path: Path) -> None:
    y, x = np.mgrid[0:16, 0:16]
    rgb = np.stack([8 * y, 8 * x, 100 + 4 * (x + y)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "smooth.jpg", quality=95, subsampling=0)
    catalog = pd.DataFrame({"id_str": ["j"], "file_loc": ["smooth.jpg"]})
    record = ImageFolderSource(catalog, root=tmp_path)[0]
    assert record.image.shape == (3, 16, 16)
    error = np.abs(record.image - rgb.transpose(2, 0, 1))  # JPEG is lossy
    assert error.max() <= 6
    assert error.mean() < 2


# open_source -------------------------------------------------------------------------------


def test_open_source_dispatches_on_path(
    fits_folder: Path, morpho_h5: Path, grey_pngs: tuple[Path, np.ndarray]
) -> None:
    assert isinstance(open_source(fits_folder), FITSSource)
    assert open_source(fits_folder, pattern="g1*").catalog["id_str"].tolist() == ["g1"]
    with open_source(fits_folder / "g0.fits") as cube:
        assert isinstance(cube, FITSSource)
        assert len(cube) == 2  # a single 3-D file is read as a cube of 2 single-band stamps
    with open_source(morpho_h5) as source:
        assert isinstance(source, HDF5Source)
    assert isinstance(open_source(grey_pngs[0]), ImageFolderSource)
    (fits_folder / "table.txt").write_text("x")
    with pytest.raises(DataError, match=r"table\.txt"):
        open_source(fits_folder / "table.txt")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_source(fits_folder / "nowhere")
