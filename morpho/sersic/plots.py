"""Diagnostic pictures of Sérsic fits: image, model and residual; predicted vs true."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from morpho.data.canonical import adaptive_moments
from morpho.plotting import save_figure
from morpho.sersic.profile import render_sersic

__all__ = ["model_image", "save_predicted_vs_true", "save_residuals"]


def model_image(row: pd.Series, image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """The PSF-convolved model of one predicted row, centred on the image's adaptive centroid."""
    offset, _, _ = adaptive_moments(torch.from_numpy(np.asarray(image, dtype=np.float64))[None])
    x0, y0 = offset[0].numpy() + (np.array(image.shape[::-1]) - 1) / 2
    params = (row["flux"], x0, y0, row["r_e_pix"], row["n"], row["q"], row["pa_deg"])
    return render_sersic(params, psf, shape=image.shape)


def save_residuals(
    path: str | os.PathLike,
    images: Sequence[np.ndarray],
    models: Sequence[np.ndarray],
    sigmas: Sequence[float],
    titles: Sequence[str],
) -> Figure:
    """One row per galaxy: image, model (same stretch) and residual in units of the noise σ."""
    figure = Figure(figsize=(6.6, 2.2 * len(images) + 0.3))
    axes = figure.subplots(len(images), 3, squeeze=False)
    for row, (image, model, sigma, title) in enumerate(
        zip(images, models, sigmas, titles, strict=True)
    ):
        low, high = np.percentile(np.arcsinh(image / sigma), [5.0, 99.8])
        for col, shown in enumerate((image, model)):
            stretched = np.arcsinh(shown / sigma)
            axes[row, col].imshow(stretched, origin="lower", cmap="gray", vmin=low, vmax=high)
        residual = axes[row, 2].imshow(
            (image - model) / sigma, origin="lower", cmap="RdBu_r", vmin=-4, vmax=4
        )
        figure.colorbar(residual, ax=axes[row, 2], fraction=0.046, label="residual / σ")
        axes[row, 0].set_ylabel(title, fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], ("image", "model", "residual"), strict=True):
        ax.set_title(name)
    save_figure(figure, path)
    return figure


def save_predicted_vs_true(
    path: str | os.PathLike, predicted: pd.DataFrame, truth: pd.DataFrame
) -> Figure:
    """Predicted against true flux, r_e, n, q and PA (with 1σ bars), one panel each.

    ``truth`` has columns ``flux``, ``r_e_pix``, ``n``, ``q``, ``pa_deg`` row-aligned
    with ``predicted``.
    """
    panels = [("flux", True), ("r_e_pix", True), ("n", True), ("q", False), ("pa_deg", False)]
    figure = Figure(figsize=(16, 3.4))
    for ax, (name, log) in zip(figure.subplots(1, 5), panels, strict=True):
        x, y, err = truth[name].to_numpy(), predicted[name].to_numpy(), predicted[f"{name}_err"]
        ax.errorbar(x, y, yerr=err.to_numpy(), fmt=".", ms=2, alpha=0.4, elinewidth=0.5)
        low, high = np.nanmin([x.min(), y.min()]), np.nanmax([x.max(), y.max()])
        ax.plot([low, high], [low, high], "k--", lw=0.8)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
    figure.tight_layout()
    save_figure(figure, path)
    return figure
