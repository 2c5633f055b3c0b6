"""``morpho-fit``: Sérsic parameters of a data set from a trained checkpoint.

Writes a table (``id``, flux, r_e in pixels and arcsec, n, q, PA, their
uncertainties and an ``out_of_range`` flag) in parquet and ECSV, a picture of
image / model / residual for the first galaxies, and predicted-vs-true plots
when the catalog holds the truth columns the model was trained on.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from astropy.io import fits
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.config import config_dir
from morpho.data.datamodule import GalaxyDataModule
from morpho.data.errors import DataError
from morpho.data.sources import HDF5Source
from morpho.models import SersicModule, load_model
from morpho.sersic.plots import model_image, save_predicted_vs_true, save_residuals
from morpho.sersic.predict import fit_dataset, psf_columns
from morpho.sersic.psf import check_psf, check_psfs, gaussian_psf, psf_fwhm, psf_wing_fraction
from morpho.sersic.table import write_table

__all__ = ["fit", "main"]

log = logging.getLogger(__name__)


def _read_psf(path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise FileNotFoundError(f"PSF file {path} does not exist")
    with fits.open(path) as hdul:
        hdu = next((h for h in hdul if h.data is not None), None)
        if hdu is None:
            raise DataError(f"{path}: no HDU holds an image")
        return check_psf(np.asarray(hdu.data, dtype=np.float64), origin=path)


def _psf_for(cfg: DictConfig, dm: GalaxyDataModule, model: SersicModule):
    """(FWHM in pixels, wing fraction or None: each one value or one per source row, PSF image)."""
    if cfg.psf_file is not None:
        psf = _read_psf(cfg.psf_file)
        return psf_fwhm(psf), psf_wing_fraction(psf), psf
    if cfg.psf_fwhm_pix is not None:
        if not float(cfg.psf_fwhm_pix) > 0:
            raise DataError(
                f"psf_fwhm_pix must be a positive number of pixels, got {cfg.psf_fwhm_pix}"
            )
        return float(cfg.psf_fwhm_pix), None, None
    fwhm, wings = psf_columns(dm.source.catalog, model)
    return fwhm, wings, None


def _stored_psf(dm: GalaxyDataModule, index: int) -> np.ndarray | None:
    """The PSF image an HDF5 source stores for galaxy ``index`` (morpho's simulations)."""
    if not isinstance(dm.source, HDF5Source):
        return None
    psf = dm.source.read_array("psf", index)
    return None if psf is None else np.asarray(psf[0], dtype=np.float64)


def _psf_images(cfg: DictConfig, dm: GalaxyDataModule, psf: np.ndarray | None):
    """``rows -> PSF images`` for the refinement: the PSF file, a Gaussian of the
    given FWHM, or the PSFs an HDF5 source stores per galaxy."""
    if psf is not None:
        return lambda rows: psf
    if cfg.psf_fwhm_pix is not None:
        gaussian = gaussian_psf(float(cfg.psf_fwhm_pix))
        return lambda rows: gaussian
    if _stored_psf(dm, 0) is None:
        raise DataError(
            "refine_steps > 0 needs PSF images: give psf_file= (or psf_fwhm_pix= for a "
            "Gaussian PSF); this source stores no per-galaxy 'psf' dataset"
        )
    return functools.partial(_stored_psfs, dm)


def _stored_psfs(dm: GalaxyDataModule, rows: np.ndarray) -> np.ndarray:
    """The stored PSFs of ``rows`` in one read (h5py wants increasing, unique rows)."""
    unique, inverse = np.unique(rows, return_inverse=True)
    psfs = dm.source.read_array("psf", unique)[:, 0]
    return check_psfs(psfs, origin=f"{dm.source.path}: dataset 'psf'", rows=unique)[inverse]


def _rows(dm: GalaxyDataModule, split: str) -> np.ndarray:
    """Source rows of the galaxies of ``split``, in the dataset's order."""
    return np.arange(len(dm.source)) if split == "all" else dm.indices[split]


def _truth(dm: GalaxyDataModule, rows: np.ndarray, model: SersicModule) -> pd.DataFrame | None:
    """True flux, r_e, n, q, PA of ``rows`` when the catalog has the model's truth columns."""
    columns = list(model.hparams.columns[:5])
    catalog = dm.source.catalog
    if not set(columns) <= set(catalog.columns):
        return None
    truth = catalog.iloc[rows][columns].reset_index(drop=True)
    truth.columns = ["flux", "r_e_pix", "n", "q", "pa_deg"]
    return truth


def _pictures(cfg, dm, dataset, rows, table, fwhm, psf, model) -> None:
    out = Path(cfg.output_dir)
    shown = min(int(cfg.show), len(dataset))
    if shown > 0:
        items = [dataset[i] for i in range(shown)]
        images = [item["image"][0].double().numpy() for item in items]
        stack = torch.stack([item["image"] for item in items])
        sigmas = model.inputs.noise_sigma(stack).tolist()
        models, titles = [], []
        for i, item in enumerate(items):
            kernel = psf if psf is not None else _stored_psf(dm, item["index"])
            if kernel is None:
                width = fwhm if np.ndim(fwhm) == 0 else fwhm[item["index"]]
                kernel = gaussian_psf(float(width))
            row = table.iloc[i]
            models.append(model_image(row, images[i], kernel))
            titles.append(f"{item['id']}\nn={row['n']:.2f} r_e={row['r_e_pix']:.1f}px")
        save_residuals(out / "residuals.png", images, models, sigmas, titles)
    truth = _truth(dm, rows, model)
    if truth is not None:
        save_predicted_vs_true(out / "predicted_vs_true.png", table, truth)


def fit(cfg: DictConfig) -> dict[str, Path]:
    """Fit ``cfg.data`` (split ``cfg.split``) with the Sérsic checkpoint ``cfg.ckpt_path``.

    Returns
    -------
    dict
        Name -> path of every file written.
    """
    model = load_model(cfg.ckpt_path, kind="sersic")
    dm: GalaxyDataModule = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dataset = dm.dataset(cfg.split)
    fwhm, wings, psf = _psf_for(cfg, dm, model)
    refine_steps = int(cfg.refine_steps)
    psf_images = _psf_images(cfg, dm, psf) if refine_steps else None
    table = fit_dataset(
        model,
        dataset,
        fwhm,
        wings,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        min_detection_snr=cfg.min_detection_snr,
        zeropoint=cfg.zeropoint,
        refine_steps=refine_steps,
        psf_images=psf_images,
        gain=cfg.gain,
    )
    out = Path(cfg.output_dir)
    written = {name: write_table(table, out / name, overwrite=cfg.overwrite) for name in cfg.tables}
    _pictures(cfg, dm, dataset, _rows(dm, cfg.split), table, fwhm, psf, model)
    log.info(
        "Fitted %d galaxies; %d outside the training ranges",
        len(table),
        table["out_of_range"].sum(),
    )
    for path in written.values():
        log.info("Wrote %s", path)
    return written


@hydra.main(config_path=config_dir(), config_name="fit", version_base="1.3")
@report_user_errors("morpho-fit")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    fit(cfg)


if __name__ == "__main__":
    main()
