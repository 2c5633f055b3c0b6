"""``morpho-assign``: place new galaxies in a saved taxonomy."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.config import config_dir
from morpho.taxonomy.embed import read_embeddings
from morpho.utils import atomic_output

__all__ = ["assign", "main"]

log = logging.getLogger(__name__)


def assign(cfg: DictConfig) -> Path:
    """Assign ``cfg.embeddings`` to the taxonomy in ``cfg.taxonomy_path``; write the table."""
    from morpho.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(cfg.taxonomy_path)
    meta, embeddings = read_embeddings(cfg.embeddings)
    table = taxonomy.assign(embeddings, ids=meta["id"].to_numpy())
    if "index" in meta:
        table.insert(1, "index", meta["index"].to_numpy())
    path = Path(cfg.output)
    with atomic_output(path, overwrite=cfg.overwrite) as tmp:
        table.to_parquet(tmp, index=False)
    counts = table["cluster"].value_counts().sort_index()
    log.info("Assigned %d galaxies: %s", len(table), dict(counts.items()))
    log.info("Wrote %s", path)
    return path


@hydra.main(config_path=config_dir(), config_name="assign", version_base="1.3")
@report_user_errors("morpho-assign")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    assign(cfg)


if __name__ == "__main__":
    main()
