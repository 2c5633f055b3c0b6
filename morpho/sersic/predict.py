"""Run a trained Sérsic model over a data set, batch by batch, into a table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from morpho.data.errors import DataError
from morpho.models.sersic import SersicModule
from morpho.sersic.inputs import detection_snr

__all__ = ["TABLE_COLUMNS", "check_signal", "fit_dataset", "psf_fwhm_column"]

#: Columns of the table :func:`fit_dataset` returns, after ``id``.
TABLE_COLUMNS = (
    "flux",
    "flux_err",
    "flux_lo",
    "flux_hi",
    "r_e_pix",
    "r_e_pix_err",
    "r_e_pix_lo",
    "r_e_pix_hi",
    "r_e_arcsec",
    "r_e_arcsec_err",
    "n",
    "n_err",
    "n_lo",
    "n_hi",
    "q",
    "q_err",
    "pa_deg",
    "pa_deg_err",
    "out_of_range",
)


def check_signal(
    images: torch.Tensor, model: SersicModule, ids: Sequence[str], *, min_snr: float
) -> torch.Tensor:
    """Raise DataError naming the galaxies whose stamp holds no source above the noise.

    Parameters
    ----------
    images : (N, C, H, W) tensor
        Flux images.
    model : SersicModule
        Its inputs module says which band and how the noise σ is measured.
    ids : sequence of str
        The galaxies' ids, for the message.
    min_snr : float
        Smallest accepted :func:`~morpho.sersic.inputs.detection_snr` (pure noise
        exceeds 4 in 0.3% of stamps; faint, large galaxies may fall below it);
        0 accepts everything.

    Returns
    -------
    (N,) tensor
        The detection S/N of each galaxy.
    """
    band = model.inputs.band
    sigma = model.inputs.noise_sigma(images)
    snr = detection_snr(images[:, band] / sigma[:, None, None])
    blank = torch.nonzero(snr < min_snr).flatten().tolist()
    if blank:
        names = ", ".join(str(ids[i]) for i in blank[:5]) + (" ..." if len(blank) > 5 else "")
        raise DataError(
            f"{len(blank)} image(s) hold no source above the noise (all sky?): {names} "
            f"(detection S/N < {min_snr:g}); remove them, or set min_detection_snr=0 to fit anyway"
        )
    return snr


def psf_fwhm_column(catalog: pd.DataFrame, model: SersicModule) -> np.ndarray:
    """Per-galaxy PSF FWHM in pixels from the catalog column the model was trained with."""
    column = model.hparams.columns[5]
    if column not in catalog.columns:
        raise DataError(
            f"the catalog has no PSF column {column!r} (the model reads the PSF FWHM there); "
            "give psf_fwhm_pix= or psf_file= instead"
        )
    values = model.psf_fwhm_pix(torch.tensor(catalog[column].to_numpy(np.float64)))
    if not torch.isfinite(values).all() or (values <= 0).any():
        raise DataError(f"catalog column {column!r} holds PSF FWHMs that are not positive numbers")
    return values.numpy()


def fit_dataset(
    model: SersicModule,
    dataset: Dataset,
    psf_fwhm_pix: np.ndarray | float,
    *,
    batch_size: int = 512,
    num_workers: int = 0,
    min_detection_snr: float = 4.0,
    zeropoint: float | None = None,
) -> pd.DataFrame:
    """Sérsic parameters of every galaxy of ``dataset``, one table row each.

    Parameters
    ----------
    model : SersicModule
        A trained model (e.g. from :func:`morpho.models.load_model`).
    dataset : Dataset
        Items with ``"image"`` (C, S, S) flux tensors, ``"index"`` (the galaxy's row
        in the source, used to look up ``psf_fwhm_pix``) and ``"id"``, such as
        :class:`morpho.data.GalaxyDataset` or a split of it.
    psf_fwhm_pix : float or (N_source,) array
        PSF FWHM in pixels: one value for all galaxies, or one per source row.
    batch_size, num_workers
        DataLoader settings.
    min_detection_snr : float
        See :func:`check_signal`.
    zeropoint : float, optional
        Magnitude zero-point of the images' flux unit; when given, the table also
        has ``mag = zeropoint - 2.5 log10(flux)`` and ``mag_err`` (from ``flux_err``).

    Returns
    -------
    DataFrame
        ``id``, then :data:`TABLE_COLUMNS` (see :meth:`SersicModule.predict` for units).
    """
    model.eval()
    fwhm = torch.as_tensor(np.atleast_1d(np.asarray(psf_fwhm_pix, dtype=np.float32)))
    parts = []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        images = batch["image"].to(model.device)
        check_signal(images, model, batch["id"], min_snr=min_detection_snr)
        psf = fwhm.expand(len(images)) if len(fwhm) == 1 else fwhm[batch["index"]]
        predicted = model.predict(images, psf.to(images))
        part = {name: predicted[name].cpu().numpy() for name in TABLE_COLUMNS}
        parts.append(pd.DataFrame({"id": list(batch["id"]), **part}))
    if not parts:
        return pd.DataFrame(columns=["id", *TABLE_COLUMNS])
    table = pd.concat(parts, ignore_index=True)
    if zeropoint is not None:
        table["mag"] = zeropoint - 2.5 * np.log10(table["flux"])
        table["mag_err"] = 2.5 / np.log(10) * table["flux_err"] / table["flux"]
    return table
