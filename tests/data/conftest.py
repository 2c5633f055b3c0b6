"""Tiny deterministic galaxy files for the data-layer tests.

Every fixture writes under ``tmp_path``. The arrays they return are read-only:
tests compare against them and must not modify them.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from PIL import Image

N_GALAXIES, N_BANDS, SIZE = 3, 2, 8


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@pytest.fixture
def galaxies() -> np.ndarray:
    """(3, 2, 8, 8) float32: every pixel distinct, with fractional values."""
    values = np.arange(N_GALAXIES * N_BANDS * SIZE * SIZE, dtype=np.float32) * 0.5 - 7.25
    return _read_only(values.reshape(N_GALAXIES, N_BANDS, SIZE, SIZE))


@pytest.fixture
def fits_folder(tmp_path: Path, galaxies: np.ndarray) -> Path:
    """A folder of 2-band FITS stamps ``g0.fits``, ``g1.fits``, ``g2.fits``."""
    folder = tmp_path / "stamps"
    folder.mkdir()
    for i, galaxy in enumerate(galaxies):
        fits.PrimaryHDU(galaxy).writeto(folder / f"g{i}.fits")
    return folder


@pytest.fixture
def morpho_h5(tmp_path: Path, galaxies: np.ndarray) -> Path:
    """A morpho-style HDF5 file: NCHW float32 images and a ``catalog/`` group."""
    path = tmp_path / "sim.h5"
    with h5py.File(path, "w") as file:
        images = file.create_dataset("images", data=galaxies)
        images.attrs["layout"] = "NCHW"
        catalog = file.create_group("catalog")
        catalog["id_str"] = np.array(["sim_a", "sim_b", "sim_c"], dtype=h5py.string_dtype())
        catalog["kind"] = np.array([b"disk", b"bulge", b"merger"])
        catalog["flux"] = np.array([1.5, 2.5, 3.5])
        catalog["label"] = np.array([0, 1, 2])
        file["psf"] = np.ones((5, 5), dtype=np.float32)
    return path


@pytest.fixture
def grey_pngs(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Three 8-bit greyscale PNGs and a CSV catalog (relative ``file_loc``).

    Returns the catalog path and the (3, 1, 6, 7) uint8 pixels.
    """
    pixels = np.arange(3 * 6 * 7, dtype=np.uint8).reshape(3, 1, 6, 7) * 2
    (tmp_path / "png").mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image[0]).save(tmp_path / "png" / f"p{i}.png")
    catalog = pd.DataFrame(
        {
            "id_str": ["007", "008", "009"],
            "file_loc": [f"png/p{i}.png" for i in range(3)],
            "smooth": [0.1, 0.5, 0.9],
        }
    )
    path = tmp_path / "catalog.csv"
    catalog.to_csv(path, index=False)
    return path, _read_only(pixels)
