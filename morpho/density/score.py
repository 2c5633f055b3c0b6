"""Score a data set under a trained PixelCNN: likelihoods, anomaly scores and a baseline.

One row per galaxy, in the data set's order:

- ``log_likelihood``: ``ln p`` of the quantised image, in nats, summed over pixels and bands;
- ``bits_per_dim``: ``-log_likelihood / (C H W ln 2)``;
- ``typicality`` and ``local``: the anomaly scores of :mod:`morpho.density.anomaly`
  (large = more surprising than the model expects of its own images);
- ``clipped_fraction``: the fraction of the image's pixels outside the quantisation
  range, clipped before scoring (the likelihood is then that of the clipped image);
- with a baseline (:class:`morpho.density.baseline.NeighbourGaussian`),
  ``baseline_bits_per_dim`` and ``likelihood_ratio = baseline_bits_per_dim - bits_per_dim``,
  the bits per dimension the PixelCNN saves over the baseline (a likelihood-ratio score,
  Ren et al. 2019): it cancels most of what both models find hard (noise entropy), so a
  *low* ratio marks an image whose structure the PixelCNN did not learn.

Images are read in batches from a DataLoader: memory holds one batch of images and the
table, never the whole data set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from morpho.data.errors import DataError
from morpho.density.anomaly import bits_per_dim, local_scores, surprise_map
from morpho.density.baseline import NeighbourGaussian
from morpho.density.quantize import Quantizer
from morpho.models.pixelcnn import PixelCNNModule, check_symmetry

__all__ = [
    "BASELINE_COLUMNS",
    "SCORE_COLUMNS",
    "clipped_message",
    "fit_baseline",
    "image_seeds",
    "iter_scores",
    "score_dataset",
    "warn_clipped",
]

log = logging.getLogger(__name__)

#: The columns of every score table, after ``id`` and ``index``.
SCORE_COLUMNS = ("log_likelihood", "bits_per_dim", "typicality", "local", "clipped_fraction")
#: The columns a baseline adds.
BASELINE_COLUMNS = ("baseline_bits_per_dim", "likelihood_ratio")


@torch.no_grad()
def _conditioning(model: PixelCNNModule, batch: dict) -> dict[str, Tensor]:
    """The batch's labels or catalog columns, when the model is conditioned on them."""
    condition = model.hparams.condition
    if condition == "label":
        if "label" not in batch:
            raise DataError(
                "the checkpoint's model is conditioned on labels: set data.label_key to the "
                "catalog column of integer labels it was trained with"
            )
        return {"labels": batch["label"]}
    if condition == "vector":
        if "columns" not in batch:
            raise DataError(
                "the checkpoint's model is conditioned on catalog columns: set data.columns "
                "to the columns it was trained with"
            )
        return {"vectors": batch["columns"]}
    return {}


def fit_baseline(
    quantizer: Quantizer,
    dataset: Dataset,
    *,
    max_images: int = 1000,
    batch_size: int = 256,
    seed: int = 0,
) -> NeighbourGaussian:
    """Fit the neighbour-mean Gaussian on the quantised levels of up to ``max_images`` images.

    Parameters
    ----------
    quantizer : Quantizer
        The model's quantisation (pixels outside its range are clipped).
    dataset : Dataset
        Items with ``image`` (C, H, W) flux, e.g. the training split.
    max_images : int
        At most this many images, drawn without replacement with ``seed``; their levels
        are held in memory (``max_images × C × H × W`` int64).
    batch_size : int

    Returns
    -------
    NeighbourGaussian
        Fitted.

    Raises
    ------
    DataError
        If ``dataset`` is empty.
    """
    n = min(len(dataset), int(max_images))
    if n < 1:
        raise DataError(
            "no images to fit the baseline on (the split is empty or baseline_images < 1); "
            "set baseline=false or baseline_images to a positive number"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False))
    loader = DataLoader(Subset(dataset, chosen.tolist()), batch_size=batch_size)
    levels = np.concatenate([quantizer.quantize(b["image"]).levels.numpy() for b in loader])
    return NeighbourGaussian(n_levels=int(quantizer.n_levels)).fit(levels)


def image_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """One random seed per galaxy, from the run's ``seed`` and each galaxy's ``index``.

    Raises
    ------
    ValueError
        If ``seed`` or an index is negative.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return [
        int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0] >> 1)
        for index in indices
    ]


def iter_scores(
    model: PixelCNNModule,
    dataset: Dataset,
    *,
    baseline: NeighbourGaussian | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    n_draws: int = 16,
    window: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    symmetry: str | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield the score table one batch at a time, in the data set's order.

    Parameters
    ----------
    model : PixelCNNModule
        Trained (see :func:`morpho.models.load_model`).
    dataset : Dataset
        Items with ``image`` (C, H, W) flux, ``id`` and ``index``, and ``label`` or
        ``columns`` for a conditional model.
    baseline : NeighbourGaussian, optional
        Fitted; adds :data:`BASELINE_COLUMNS`.
    batch_size, num_workers : int
        DataLoader settings.
    n_draws, window, seed : int
        Monte-Carlo draws of the expected surprise, the side (pixels) of the ``local``
        score's boxes, and the draws' seed: each galaxy's draws use a seed made from
        ``seed`` and its ``index`` (:func:`image_seeds`), so a galaxy's scores do not
        depend on the batch or the rank it is scored in.
    device : str or torch.device
        Where the network runs.
    symmetry : {None, "dihedral"}
        ``"dihedral"``: ``log_likelihood`` and ``bits_per_dim`` (and so
        ``likelihood_ratio``) are those of the mixture over the 8 quarter turns and
        mirror images (:meth:`~morpho.models.PixelCNNModule.log_likelihood`; 7 more
        passes); the anomaly scores stay those of the image as it is.

    Yields
    ------
    DataFrame
        ``id``, ``index``, :data:`SCORE_COLUMNS` (and :data:`BASELINE_COLUMNS`).
    """
    check_symmetry(symmetry)
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    for batch in loader:
        if batch["image"].shape[1] != model.net.in_channels:
            raise DataError(
                f"the data have {batch['image'].shape[1]} band(s) but the checkpoint was trained "
                f"on {model.net.in_channels}; score data with the training bands"
            )
        quantized = model.quantizer.quantize(batch["image"])
        levels, clipped = quantized.levels, quantized.clipped_per_image.cpu().numpy()
        cond = {k: v.to(device) for k, v in _conditioning(model, batch).items()}
        log_prob, surprise, variance = surprise_map(
            model,
            levels.to(device),
            **cond,
            n_draws=n_draws,
            seed=image_seeds(seed, batch["index"].tolist()),
        )
        log_likelihood = log_prob.sum(dim=(1, 2)).double()
        if symmetry is not None:
            with torch.no_grad():
                log_likelihood = model.image_log_prob(
                    levels.to(device), **cond, symmetry=symmetry, as_is=log_likelihood
                ).double()
        scores = local_scores(surprise, variance, window=window)
        columns = {
            "id": [str(i) for i in batch["id"]],
            "index": batch["index"].numpy().astype(np.int64),
            "log_likelihood": log_likelihood.cpu().numpy(),
            "bits_per_dim": bits_per_dim(log_likelihood, levels[0].numel()).cpu().numpy(),
            "typicality": scores["typicality"].double().cpu().numpy(),
            "local": scores["local"].double().cpu().numpy(),
            "clipped_fraction": clipped,
        }
        if baseline is not None:
            columns["baseline_bits_per_dim"] = baseline.bits_per_dim(levels.numpy())
            columns["likelihood_ratio"] = columns["baseline_bits_per_dim"] - columns["bits_per_dim"]
        yield pd.DataFrame(columns)


def score_dataset(model: PixelCNNModule, dataset: Dataset, **kwargs) -> pd.DataFrame:
    """The whole score table of ``dataset`` (see :func:`iter_scores`, which takes ``kwargs``).

    Logs a warning with the number of images that had pixels clipped
    (:func:`warn_clipped`).

    Raises
    ------
    DataError
        If ``dataset`` is empty.
    """
    parts = list(iter_scores(model, dataset, **kwargs))
    if not parts:
        raise DataError("the data set is empty: nothing to score")
    table = pd.concat(parts, ignore_index=True)
    warn_clipped(table, model.quantizer)
    return table


def warn_clipped(table: pd.DataFrame, quantizer: Quantizer) -> None:
    """Log a warning if some images of a score table had pixels clipped."""
    message = clipped_message(table, quantizer)
    if message:
        log.warning(message)


def clipped_message(table: pd.DataFrame, quantizer: Quantizer) -> str | None:
    """What :func:`warn_clipped` says of a score table (None when nothing was clipped)."""
    clipped = int((table["clipped_fraction"] > 0).sum())
    if not clipped:
        return None
    low, high = quantizer.flux_range
    return (
        f"{clipped} of {len(table)} images have pixels outside the quantisation range "
        f"[{low:g}, {high:g}] and were clipped (up to "
        f"{100 * table['clipped_fraction'].max():.3g}% of an image's pixels; see the "
        "clipped_fraction column): their scores are those of the clipped images"
    )
