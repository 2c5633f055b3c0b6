"""``morpho-embed``: embed a data set with a trained autoencoder into a parquet table."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.config import config_dir
from morpho.data.datamodule import GalaxyDataModule
from morpho.models import load_model
from morpho.taxonomy.embed import write_embeddings

__all__ = ["embed", "main"]

log = logging.getLogger(__name__)


def embed(cfg: DictConfig) -> Path:
    """Embed ``cfg.data`` (split ``cfg.split``) with the checkpoint ``cfg.ckpt_path``."""
    model = load_model(cfg.ckpt_path, kind="autoencoder")
    dm: GalaxyDataModule = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dataset = dm.dataset(cfg.split)
    path = write_embeddings(
        model,
        dataset,
        cfg.output,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        overwrite=cfg.overwrite,
    )
    log.info("Embedded %d galaxies into %s", len(dataset), path)
    return path


@hydra.main(config_path=config_dir(), config_name="embed", version_base="1.3")
@report_user_errors("morpho-embed")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    embed(cfg)


if __name__ == "__main__":
    main()
