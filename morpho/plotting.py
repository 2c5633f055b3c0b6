"""Pictures of galaxies: display stretches and mosaics."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from astropy.visualization import make_lupton_rgb
from matplotlib.figure import Figure

from morpho.utils import atomic_output

__all__ = ["display_image", "save_figure", "save_mosaic"]


def _robust_sigma(image: np.ndarray) -> float:
    """Noise level from the median absolute deviation of the stamp's border pixels."""
    border = np.concatenate(
        [image[:3].ravel(), image[-3:].ravel(), image[:, :3].ravel(), image[:, -3:].ravel()]
    )
    mad = np.median(np.abs(border - np.median(border)))
    return float(1.4826 * mad) if mad > 0 else float(np.std(image) or 1.0)


def display_image(image: np.ndarray) -> np.ndarray:
    """Map a ``(C, H, W)`` flux image to something to show.

    One band: ``asinh(x / σ)`` scaled to [0, 1] between the background and the 99.8th
    percentile, σ the noise of the stamp's border; three bands or more: the first
    three as an RGB image (Lupton et al. 2004), reddest band first as R.

    Returns
    -------
    ndarray
        (H, W) in [0, 1] for one band, (H, W, 3) uint8 for colour.
    """
    image = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if image.shape[0] >= 3:
        b, g, r = image[0], image[1], image[2]
        sigma = _robust_sigma(g)
        return make_lupton_rgb(r, g, b, minimum=-sigma, stretch=20 * sigma, Q=8)
    band = image[0]
    sigma = _robust_sigma(band)
    stretched = np.arcsinh(band / sigma)
    low, high = np.percentile(stretched, [5.0, 99.8])
    return np.clip((stretched - low) / max(high - low, 1e-12), 0.0, 1.0)


def save_figure(figure: Figure, path: str | os.PathLike, *, dpi: int = 100) -> None:
    """Save a figure atomically: to a temporary name, then renamed into place.

    Figures are built with :class:`matplotlib.figure.Figure` (no pyplot), so saving
    works with any backend and leaves a notebook's backend alone.
    """
    with atomic_output(path, overwrite=True) as tmp:
        figure.savefig(tmp, dpi=dpi, format=str(path).rsplit(".", 1)[-1], bbox_inches="tight")


def save_mosaic(
    rows: Sequence[np.ndarray],
    path: str | os.PathLike,
    *,
    row_labels: Sequence[str] | None = None,
    cell_titles: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
) -> Figure:
    """Save (and return) a mosaic: one row per entry of ``rows``, each ``(N, C, H, W)``.

    Rows may have different lengths; empty cells stay blank. ``cell_titles[r][c]``,
    when given, is written above image ``c`` of row ``r`` (e.g. a galaxy's id).
    """
    n_cols = max((len(r) for r in rows), default=1) or 1
    row_height = 1.3 if cell_titles is None else 1.6
    figure = Figure(figsize=(1.3 * n_cols + 1.2, row_height * len(rows) + 0.4))
    axes = figure.subplots(len(rows), n_cols, squeeze=False)
    for r, stack in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            if c < len(stack):
                ax.imshow(display_image(stack[c]), origin="lower", cmap="gray")
                if cell_titles is not None:
                    ax.set_title(cell_titles[r][c], fontsize=7)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        # Above the cells' own titles, when they have some.
        figure.suptitle(title, **({} if cell_titles is None else {"y": 1.03}))
    save_figure(figure, path)
    return figure
