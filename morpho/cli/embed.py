"""``morpho-embed``: embed a data set with a trained autoencoder into a parquet table.

One process by default; with a trainer config of several ranks (``trainer=ddp_cpu``,
``trainer=ddp``, ``trainer=multinode``) each rank embeds one share of the galaxies and
rank 0 joins the shares into the same table (see :mod:`morpho.sharding`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from lightning.fabric import Fabric
from omegaconf import DictConfig

from morpho.cli._common import prepared_dataset, report_user_errors
from morpho.config import config_dir
from morpho.models import load_model
from morpho.sharding import fresh_parts, join_parquet_parts, launch, shard
from morpho.taxonomy.embed import write_embeddings
from morpho.utils import check_new

__all__ = ["embed", "main"]

log = logging.getLogger(__name__)


def embed(cfg: DictConfig) -> Path | None:
    """Embed ``cfg.data`` (split ``cfg.split``) with the checkpoint ``cfg.ckpt_path``.

    Returns
    -------
    Path or None
        The table, on global rank 0 (None on the other ranks).
    """
    done = launch(cfg.get("trainer"), _embed_on_rank, cfg)
    if done is None:  # not global rank 0
        return None
    output, n_galaxies, world_size = done
    log.info("Embedded %d galaxies into %s on %d rank(s)", n_galaxies, output, world_size)
    return output


def _embed_on_rank(fabric: Fabric, cfg: DictConfig) -> tuple[Path, int, int] | None:
    """Rank 0 returns what to log: spawned ranks have no Hydra log to write to."""
    output = Path(cfg.output)
    check_new([output], overwrite=cfg.overwrite)
    model = load_model(cfg.ckpt_path, kind="autoencoder")
    dataset = prepared_dataset(fabric, hydra.utils.instantiate(cfg.data), cfg.split)
    options = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
    if fabric.world_size == 1:
        write_embeddings(
            model, dataset, output, overwrite=cfg.overwrite, device=fabric.device, **options
        )
    else:
        parts = fresh_parts(fabric, output)
        mine = shard(
            dataset,
            batch_size=cfg.batch_size,
            rank=fabric.global_rank,
            world_size=fabric.world_size,
        )
        if len(mine):
            part = parts[fabric.global_rank]
            write_embeddings(model, mine, part, overwrite=True, device=fabric.device, **options)
        fabric.barrier()
        if fabric.global_rank != 0:
            return None
        join_parquet_parts(parts, output, overwrite=cfg.overwrite)
    return output, len(dataset), fabric.world_size


@hydra.main(config_path=config_dir(), config_name="embed", version_base="1.3")
@report_user_errors("morpho-embed")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    embed(cfg)


if __name__ == "__main__":
    main()
