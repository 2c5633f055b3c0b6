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
import pandas as pd
from lightning.fabric import Fabric
from omegaconf import DictConfig

from morpho.cli._common import prepared_dataset, report_user_errors
from morpho.config import config_dir
from morpho.data.datamodule import GalaxyDataModule
from morpho.density.outputs import save_anomalies_picture
from morpho.density.score import clipped_message, fit_baseline, iter_scores
from morpho.models import load_model
from morpho.sersic.table import FORMATS, write_table
from morpho.sharding import fresh_parts, launch, read_parquet_parts, shard
from morpho.utils import atomic_output, check_new

__all__ = ["main", "score"]

log = logging.getLogger(__name__)


def _table_paths(cfg: DictConfig) -> list[Path]:
    paths = [Path(cfg.output_dir) / name for name in cfg.tables]
    for path in paths:
        if path.suffix.lower() not in FORMATS:
            raise ValueError(f"tables: {path.name} has an unknown format; use {sorted(FORMATS)}")
    check_new(paths, overwrite=cfg.overwrite)
    return paths


def score(cfg: DictConfig) -> dict[str, Path] | None:
    """Score ``cfg.data`` (split ``cfg.split``) with the PixelCNN checkpoint ``cfg.ckpt_path``.

    Runs on the ranks of ``cfg.trainer`` (one CPU process by default); each scores one
    share of the galaxies (see :mod:`morpho.sharding`) and rank 0 writes the outputs.

    Returns
    -------
    dict or None
        Name -> path of every file written, on global rank 0 (None on the other ranks).
    """
    done = launch(cfg.get("trainer"), _score_on_rank, cfg)
    if done is None:  # not global rank 0
        return None
    written, messages = done
    for level, message in messages:
        log.log(level, message)
    return written


def _score_on_rank(fabric: Fabric, cfg: DictConfig):
    """Rank 0 returns the files written and what to log (spawned ranks have no Hydra log
    to write to); the other ranks return None."""
    paths = _table_paths(cfg)
    model = load_model(cfg.ckpt_path, kind="pixelcnn")
    datamodule: GalaxyDataModule = hydra.utils.instantiate(cfg.data)
    dataset = prepared_dataset(fabric, datamodule, cfg.split)
    baseline = None
    if cfg.baseline:
        baseline = fit_baseline(
            model.quantizer,
            datamodule.dataset("train"),
            max_images=cfg.baseline_images,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
    options = {
        "baseline": baseline,
        "batch_size": cfg.batch_size,
        "num_workers": cfg.num_workers,
        "n_draws": cfg.n_draws,
        "window": cfg.window,
        "seed": cfg.seed,
        "device": fabric.device,
        "symmetry": cfg.get("symmetry"),
    }
    if fabric.world_size == 1:
        table = pd.concat(list(iter_scores(model, dataset, **options)), ignore_index=True)
    else:
        table = _score_shares(fabric, model, dataset, paths[0], options)
        if table is None:
            return None
    written = _write_outputs(cfg, table, dataset, paths)
    messages = [(logging.INFO, _summary(table, fabric.world_size))]
    clipped = clipped_message(table, model.quantizer)
    if clipped:
        messages.insert(0, (logging.WARNING, clipped))
    messages += [(logging.INFO, f"Wrote {path}") for path in written.values()]
    return written, messages


def _score_shares(fabric: Fabric, model, dataset, output: Path, options: dict):
    """Score this rank's share into a part file; on rank 0, the joined table."""
    parts = fresh_parts(fabric, output)
    mine = shard(
        dataset,
        batch_size=options["batch_size"],
        rank=fabric.global_rank,
        world_size=fabric.world_size,
    )
    if len(mine):
        rows = pd.concat(list(iter_scores(model, mine, **options)), ignore_index=True)
        with atomic_output(parts[fabric.global_rank], overwrite=True) as tmp:
            rows.to_parquet(tmp, index=False)
    fabric.barrier()
    if fabric.global_rank != 0:
        return None
    return read_parquet_parts(parts)


def _write_outputs(cfg: DictConfig, table: pd.DataFrame, dataset, paths: list[Path]):
    written = {p.name: write_table(table, p, overwrite=cfg.overwrite) for p in paths}
    top = table.nlargest(min(int(cfg.show), len(table)), "local")
    if len(top):
        images = np.stack([dataset[int(i)]["image"].numpy() for i in top.index])
        picture = Path(cfg.output_dir) / "anomalies.png"
        save_anomalies_picture(picture, images, top["id"].tolist(), top["local"].tolist())
        written[picture.name] = picture
    return written


def _summary(table: pd.DataFrame, world_size: int) -> str:
    top = table.loc[table["local"].idxmax()]
    return (
        f"Scored {len(table)} galaxies on {world_size} rank(s): median "
        f"{table['bits_per_dim'].median():.4f} bits/dim; highest local score "
        f"{top['local']:.1f} ({top['id']})"
    )


@hydra.main(config_path=config_dir(), config_name="score", version_base="1.3")
@report_user_errors("morpho-score")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    score(cfg)


if __name__ == "__main__":
    main()
