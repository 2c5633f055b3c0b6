"""Run a trained Sérsic model over a data set, batch by batch, into a table."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from morpho.data.errors import DataError
from morpho.models.sersic import SersicModule
from morpho.sersic.inputs import detection_snr
from morpho.sersic.refine import refine_shape

__all__ = ["TABLE_COLUMNS", "check_signal", "fit_dataset", "psf_columns"]

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
    images: torch.Tensor,
    model: SersicModule,
    ids: Sequence[str],
    *,
    min_snr: float,
    sigma: torch.Tensor | None = None,
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
    sigma : (N,) tensor, optional
        The images' noise σ, if already measured (``model.inputs.noise_sigma``).

    Returns
    -------
    (N,) tensor
        The detection S/N of each galaxy.
    """
    band = model.inputs.band
    sigma = model.inputs.noise_sigma(images) if sigma is None else sigma
    snr = detection_snr(images[:, band] / sigma[:, None, None])
    blank = torch.nonzero(snr < min_snr).flatten().tolist()
    if blank:
        names = ", ".join(str(ids[i]) for i in blank[:5]) + (" ..." if len(blank) > 5 else "")
        raise DataError(
            f"{len(blank)} image(s) hold no source above the noise (all sky?): {names} "
            f"(detection S/N < {min_snr:g}); remove them, or set min_detection_snr=0 to fit anyway"
        )
    return snr


def psf_columns(catalog: pd.DataFrame, model: SersicModule) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-galaxy PSF FWHM (pixels) and wing fraction from the catalog columns the model knows.

    The wing fraction is None when the model was trained without one.
    """
    names = list(model.hparams.columns[5:])
    missing = [name for name in names if name not in catalog.columns]
    if missing:
        raise DataError(
            f"the catalog has no PSF column {missing} (the model reads the PSF there); "
            "give psf_file= (or psf_fwhm_pix= for a Gaussian PSF) instead"
        )
    fwhm = model.psf_fwhm_pix(torch.tensor(catalog[names[0]].to_numpy(np.float64)))
    if not torch.isfinite(fwhm).all() or (fwhm <= 0).any():
        raise DataError(f"catalog column {names[0]!r} holds PSF FWHMs that are not positive")
    if len(names) == 1:
        return fwhm.numpy(), None
    wings = catalog[names[1]].to_numpy(np.float64)
    if not np.all((wings >= 0) & (wings <= 1)):
        raise DataError(f"catalog column {names[1]!r} holds PSF wing fractions outside [0, 1]")
    return fwhm.numpy(), wings


def _per_galaxy(values, rows: torch.Tensor, n: int) -> torch.Tensor | None:
    """One value per galaxy of a batch from a scalar or a per-source-row array."""
    if values is None:
        return None
    values = torch.as_tensor(np.atleast_1d(np.asarray(values, dtype=np.float32)))
    return values.expand(n) if len(values) == 1 else values[rows]


def _refine(
    predicted: dict[str, torch.Tensor],
    images: torch.Tensor,
    psfs: np.ndarray,
    model: SersicModule,
    *,
    sigma: torch.Tensor,
    gain: float | None,
    steps: int,
) -> None:
    """Replace the network's q and PA (and their errors) by :func:`refine_shape`'s."""
    band = model.inputs.band
    shape = refine_shape(
        images[:, band],
        torch.as_tensor(np.asarray(psfs), dtype=torch.float32, device=images.device),
        predicted,
        background_sigma=sigma,
        gain=gain,
        steps=steps,
    )
    predicted.update(q=shape.q, q_err=shape.q_err, pa_deg=shape.pa_deg)
    predicted.update(pa_deg_err=shape.pa_deg_err, refined=shape.refined)


def fit_dataset(
    model: SersicModule,
    dataset: Dataset,
    psf_fwhm_pix: np.ndarray | float,
    psf_wings: np.ndarray | float | None = None,
    *,
    batch_size: int = 512,
    num_workers: int = 0,
    min_detection_snr: float = 4.0,
    zeropoint: float | None = None,
    refine_steps: int = 0,
    psf_images: Callable[[np.ndarray], np.ndarray] | None = None,
    gain: float | None = None,
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
    psf_wings : float or (N_source,) array, optional
        PSF wing fractions, likewise; None for Gaussian PSFs.
    batch_size, num_workers
        DataLoader settings.
    min_detection_snr : float
        See :func:`check_signal`.
    zeropoint : float, optional
        Magnitude zero-point of the images' flux unit; when given, the table also
        has ``mag = zeropoint - 2.5 log10(flux)`` and ``mag_err`` (from ``flux_err``).
    refine_steps : int
        Gauss–Newton steps of :func:`~morpho.sersic.refine.refine_shape` on each
        galaxy's likelihood after the network (0: none). They replace q, PA and
        their errors, and add the column ``refined`` (False where the galaxy's model
        S/N is below 20 or a step failed: the network's values stay). At S/N 20–200
        one step brings q and PA to the classical fit's precision, at three to four
        times the network's cost; below S/N 20 the network's q is the better one
        (``benchmarks/RESULTS.md``, Q21 and F5).
    psf_images : callable, optional
        ``rows -> (len(rows), P, P)`` (or one ``(P, P)``) PSF images of those source
        rows; needed when ``refine_steps > 0``.
    gain : float, optional
        Electrons per image unit, for the source's Poisson noise in the refinement's
        weights (None: background noise only, which the benchmark measured worse).

    Returns
    -------
    DataFrame
        ``id``, then :data:`TABLE_COLUMNS` (see :meth:`SersicModule.predict` for units).

    Raises
    ------
    ValueError
        If ``refine_steps > 0`` without ``psf_images``.
    """
    if refine_steps and psf_images is None:
        raise ValueError("refine_steps > 0 needs psf_images (the PSF of every galaxy)")
    model.eval()
    parts = []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        images = batch["image"].to(model.device)
        sigma = model.inputs.noise_sigma(images)
        check_signal(images, model, batch["id"], min_snr=min_detection_snr, sigma=sigma)
        fwhm = _per_galaxy(psf_fwhm_pix, batch["index"], len(images)).to(images)
        wings = _per_galaxy(psf_wings, batch["index"], len(images))
        predicted = model.predict(images, fwhm, None if wings is None else wings.to(images))
        if refine_steps:
            psfs = psf_images(batch["index"].numpy())
            _refine(predicted, images, psfs, model, sigma=sigma, gain=gain, steps=refine_steps)
        names = (*TABLE_COLUMNS, "refined") if refine_steps else TABLE_COLUMNS
        part = {name: predicted[name].cpu().numpy() for name in names}
        parts.append(pd.DataFrame({"id": list(batch["id"]), **part}))
    if not parts:
        return pd.DataFrame(columns=["id", *TABLE_COLUMNS])
    table = pd.concat(parts, ignore_index=True)
    if zeropoint is not None:
        table["mag"] = zeropoint - 2.5 * np.log10(table["flux"])
        table["mag_err"] = 2.5 / np.log(10) * table["flux_err"] / table["flux"]
    return table
