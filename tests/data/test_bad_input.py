"""Bad input gets a clear error; NaN filling, cropping and resampling give known answers."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits

from morpho.data.dataset import GalaxyDataset, centre_crop, fill_non_finite, resample
from morpho.data.errors import DataError
from morpho.data.sources import FITSSource, HDF5Source, ImageFolderSource


def _fits_folder(folder: Path, *stamps: np.ndarray) -> Path:
    """Write ``stamps`` as ``s0.fits``, ``s1.fits``, ... in ``folder``."""
    folder.mkdir(exist_ok=True)
    for i, stamp in enumerate(stamps):
        fits.PrimaryHDU(stamp).writeto(folder / f"s{i}.fits")
    return folder


# Missing and unreadable files --------------------------------------------------------------


def test_missing_paths_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        FITSSource(tmp_path / "no_such_folder")
    with pytest.raises(FileNotFoundError, match=r"absent\.h5"):
        HDF5Source(tmp_path / "absent.h5")
    with pytest.raises(FileNotFoundError, match=r"absent\.csv"):
        ImageFolderSource(tmp_path / "absent.csv")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*no file matching '\*\.fits\*'"):
        FITSSource(tmp_path / "empty")


@pytest.mark.parametrize("keep_bytes", [1000, 2880 + 100], ids=["in-header", "in-data"])
def test_truncated_fits_stamp(tmp_path: Path, galaxies: np.ndarray, keep_bytes: int) -> None:
    folder = _fits_folder(tmp_path / "stamps", galaxies[0])
    path = folder / "s0.fits"
    path.write_bytes(path.read_bytes()[:keep_bytes])
    with pytest.raises(DataError, match=r"s0\.fits.*corrupt or truncated"):
        FITSSource(folder)[0]


def test_truncated_fits_cube(tmp_path: Path, galaxies: np.ndarray) -> None:
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(galaxies).writeto(path)
    path.write_bytes(path.read_bytes()[: 2880 + 500])
    with pytest.raises(DataError, match=r"cube\.fits.*corrupt or truncated"):
        FITSSource(path)


def test_random_bytes_named_fits(tmp_path: Path) -> None:
    (tmp_path / "noise.fits").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(DataError, match=r"noise\.fits.*corrupt or truncated"):
        FITSSource(tmp_path)[0]


def test_fits_with_only_a_table(tmp_path: Path) -> None:
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=[1.0])])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "table.fits")
    with pytest.raises(DataError, match=r"table\.fits holds no image data.*BinTableHDU"):
        FITSSource(tmp_path)[0]
    with pytest.raises(DataError, match=r"table\.fits holds no image data"):
        FITSSource(tmp_path / "table.fits")


def test_fits_hdu_that_does_not_exist(fits_folder: Path) -> None:
    with pytest.raises(DataError, match=r"g0\.fits has no HDU 'SCI'.*0 PRIMARY"):
        FITSSource(fits_folder, hdu="SCI")[0]


def test_unreadable_png(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"certainly not a PNG" * 10)
    catalog = pd.DataFrame({"id_str": ["bad"], "file_loc": ["bad.png"]})
    with pytest.raises(DataError, match=r"bad\.png.*corrupt"):
        ImageFolderSource(catalog, root=tmp_path)[0]


def test_hdf5_without_images_lists_its_keys(tmp_path: Path, galaxies: np.ndarray) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file["pixels"] = galaxies
        file["ans"] = np.arange(3)
    with pytest.raises(DataError, match=r"other\.h5 has no dataset 'images'.*\['ans', 'pixels'\]"):
        HDF5Source(tmp_path / "other.h5")


def test_hdf5_shape_that_does_not_fit_the_layout(tmp_path: Path, galaxies: np.ndarray) -> None:
    with h5py.File(tmp_path / "flat.h5", "w") as file:
        file["images"] = galaxies[:, 0]
    with pytest.raises(DataError, match=r"flat\.h5\[images\].*does not fit layout 'NHWC'"):
        HDF5Source(tmp_path / "flat.h5", layout="NHWC")


# Catalogs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["file_loc", "id_str"])
def test_catalog_missing_a_column(grey_pngs: tuple[Path, np.ndarray], column: str) -> None:
    catalog, _ = grey_pngs
    pd.read_csv(catalog).drop(columns=column).to_csv(catalog, index=False)
    with pytest.raises(DataError, match=rf"catalog\.csv lacks the column\(s\) \['{column}'\]"):
        ImageFolderSource(catalog)


def test_catalog_pointing_at_missing_files(grey_pngs: tuple[Path, np.ndarray]) -> None:
    catalog, _ = grey_pngs
    (catalog.parent / "png" / "p0.png").unlink()
    (catalog.parent / "png" / "p2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"catalog\.csv: 2 of 3 .*p0\.png.*p2\.png"):
        ImageFolderSource(catalog)


def test_catalog_with_duplicate_ids(grey_pngs: tuple[Path, np.ndarray]) -> None:
    catalog, _ = grey_pngs
    table = pd.read_csv(catalog, dtype={"id_str": str})
    table.loc[2, "id_str"] = "007"
    table.to_csv(catalog, index=False)
    with pytest.raises(DataError, match=r"catalog\.csv has 1 duplicated id.*'007'"):
        ImageFolderSource(catalog)


# GalaxyDataset: bad images -----------------------------------------------------------------


def test_wrong_band_count(fits_folder: Path) -> None:
    dataset = GalaxyDataset(FITSSource(fits_folder), bands=3)
    with pytest.raises(DataError, match=r"g0\.fits has 2 band\(s\), expected 3"):
        dataset[0]


def test_mixed_sizes_smaller_than_the_crop(tmp_path: Path) -> None:
    folder = _fits_folder(tmp_path / "mixed", np.ones((8, 8)), np.ones((5, 7)))
    dataset = GalaxyDataset(FITSSource(folder), image_size=6)
    assert dataset[0]["image"].shape == (1, 6, 6)
    with pytest.raises(DataError, match=r"s1\.fits is 5x7 pixels, smaller than image_size=6"):
        dataset[1]
    resized = GalaxyDataset(FITSSource(folder), image_size=6, resize=True)[1]
    assert resized["image"].shape == (1, 6, 6)


def test_all_nan_image(tmp_path: Path) -> None:
    stamp = np.ones((2, 4, 4))
    stamp[1] = np.nan
    stamp[1, 0, 0] = np.inf
    folder = _fits_folder(tmp_path / "nan", stamp)
    with pytest.raises(DataError, match=r"s0\.fits: band 1 of 2 has no finite pixel"):
        GalaxyDataset(FITSSource(folder))[0]


def test_label_key_must_be_a_numeric_column(morpho_h5: Path) -> None:
    with HDF5Source(morpho_h5) as source:
        with pytest.raises(DataError, match=r"'redshift' is not a catalog column.*'flux'"):
            GalaxyDataset(source, label_key="redshift")
        with pytest.raises(DataError, match=r"'kind' has dtype"):
            GalaxyDataset(source, label_key="kind")


# GalaxyDataset: known answers --------------------------------------------------------------


@pytest.mark.parametrize(("rule", "fill"), [("median", [56.5, 552.5]), ("zero", [0.0, 0.0])])
def test_nan_fill(tmp_path: Path, rule: str, fill: list[float]) -> None:
    stamp = np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4) ** 2  # skewed: mean != median
    bad = np.zeros(stamp.shape, dtype=bool)
    bad[0, 0, 0] = bad[0, 3, 3] = True  # band 0 keeps k² for k = 1..14: median (7² + 8²) / 2
    bad[1, 1, 2] = bad[1, 2, 1] = True  # band 1 keeps k = 16..31 but 22, 25: (23² + 24²) / 2
    stamp[0, 0, 0] = stamp[1, 1, 2] = np.nan
    stamp[0, 3, 3] = np.inf
    stamp[1, 2, 1] = -np.inf
    item = GalaxyDataset(FITSSource(_fits_folder(tmp_path / "f", stamp)), nan_fill=rule)[0]
    assert torch.isfinite(item["image"]).all()
    assert torch.equal(item["mask"], torch.from_numpy(bad))
    for band in range(2):
        assert item["image"][band][item["mask"][band]].tolist() == [fill[band]] * 2
        good = ~bad[band]
        np.testing.assert_array_equal(item["image"][band].numpy()[good], stamp[band][good])


def test_fill_non_finite_leaves_a_finite_image_alone() -> None:
    image = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    filled, mask = fill_non_finite(image)
    np.testing.assert_array_equal(filled, image)
    assert not mask.any()


def test_centre_crop_of_an_arange_image() -> None:
    image = torch.arange(100.0).reshape(1, 10, 10)
    expected = torch.tensor([[r * 10 + c for c in range(2, 8)] for r in range(2, 8)])
    assert torch.equal(centre_crop(image, 6)[0], expected.float())
    odd = centre_crop(image, 7)[0]  # excess 3: one pixel cut at the start, two at the end
    assert odd[0, 0].item() == 11.0
    assert odd[-1, -1].item() == 77.0


def test_dataset_crops_image_and_mask_together(tmp_path: Path) -> None:
    stamp = np.arange(100, dtype=np.float32).reshape(10, 10)
    stamp[4, 5] = np.nan
    item = GalaxyDataset(FITSSource(_fits_folder(tmp_path / "c", stamp)), image_size=6)[0]
    assert item["image"].shape == item["mask"].shape == (1, 6, 6)
    assert torch.nonzero(item["mask"]).tolist() == [[0, 2, 3]]
    assert item["image"][0, 0, 0].item() == 22.0


@pytest.mark.parametrize("size", [16, 40])
def test_resample_conserves_total_flux(size: int) -> None:
    y, x = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    blob = torch.exp(-((x - 11.5) ** 2 + (y - 10.0) ** 2) / 8.0)  # sigma = 2 pixels
    image = torch.stack([blob, 3.0 * blob.T])
    out = resample(image, size)
    assert out.shape == (2, size, size)
    flux_in, flux_out = image.sum(dim=(1, 2)), out.sum(dim=(1, 2))
    torch.testing.assert_close(flux_out, flux_in, rtol=1e-4, atol=0.0)


def test_dataset_item_with_label_and_transform(morpho_h5: Path, galaxies: np.ndarray) -> None:
    with HDF5Source(morpho_h5) as source:
        dataset = GalaxyDataset(source, label_key="label", transform=lambda x: 2 * x)
        item = dataset[1]
        assert len(dataset) == 3
        assert dataset.catalog is source.catalog
    assert set(item) == {"image", "mask", "index", "id", "label"}
    assert item["image"].dtype == torch.float32
    assert torch.equal(item["image"], 2 * torch.from_numpy(galaxies[1].copy()))
    assert (item["index"], item["id"], item["label"].item()) == (1, "sim_b", 1)
    assert item["label"].dtype == torch.int64
