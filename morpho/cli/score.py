"""``morpho-score``: likelihoods and anomaly scores of a data set under a PixelCNN checkpoint.

Writes a table by ``id`` (``log_likelihood`` in nats, ``bits_per_dim``, the anomaly
scores ``typicality`` and ``local``, ``clipped_fraction`` and, with ``baseline=true``,
``baseline_bits_per_dim`` and ``likelihood_ratio``; see :mod:`morpho.density.score`),
in the data set's order, and ``anomalies.png``: the images with the highest ``local``
score, with their ids.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.config import config_dir
from morpho.data.datamodule import GalaxyDataModule
from morpho.density.outputs import check_new, save_anomalies_picture
from morpho.density.score import fit_baseline, score_dataset
from morpho.models import load_model
from morpho.sersic.table import FORMATS, write_table

__all__ = ["main", "score"]

log = logging.getLogger(__name__)


def _table_paths(cfg: DictConfig) -> list[Path]:
    paths = [Path(cfg.output_dir) / name for name in cfg.tables]
    for path in paths:
        if path.suffix.lower() not in FORMATS:
            raise ValueError(f"tables: {path.name} has an unknown format; use {sorted(FORMATS)}")
    check_new(paths, overwrite=cfg.overwrite)
    return paths


def score(cfg: DictConfig) -> dict[str, Path]:
    """Score ``cfg.data`` (split ``cfg.split``) with the PixelCNN checkpoint ``cfg.ckpt_path``.

    Returns
    -------
    dict
        Name -> path of every file written.
    """
    paths = _table_paths(cfg)
    model = load_model(cfg.ckpt_path, kind="pixelcnn")
    dm: GalaxyDataModule = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dataset = dm.dataset(cfg.split)
    baseline = None
    if cfg.baseline:
        baseline = fit_baseline(
            model.quantizer,
            dm.dataset("train"),
            max_images=cfg.baseline_images,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
    table = score_dataset(
        model,
        dataset,
        baseline=baseline,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        n_draws=cfg.n_draws,
        window=cfg.window,
        seed=cfg.seed,
        device=cfg.device,
    )
    written = {p.name: write_table(table, p, overwrite=cfg.overwrite) for p in paths}
    top = table.nlargest(min(int(cfg.show), len(table)), "local")
    if len(top):
        images = np.stack([dataset[int(i)]["image"].numpy() for i in top.index])
        picture = Path(cfg.output_dir) / "anomalies.png"
        save_anomalies_picture(picture, images, top["id"].tolist(), top["local"].tolist())
        written[picture.name] = picture
    log.info(
        "Scored %d galaxies: median %.4f bits/dim; highest local score %.1f (%s)",
        len(table),
        table["bits_per_dim"].median(),
        table["local"].max(),
        table.loc[table["local"].idxmax(), "id"],
    )
    for path in written.values():
        log.info("Wrote %s", path)
    return written


@hydra.main(config_path=config_dir(), config_name="score", version_base="1.3")
@report_user_errors("morpho-score")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    score(cfg)


if __name__ == "__main__":
    main()
