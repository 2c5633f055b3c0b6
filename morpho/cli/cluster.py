"""``morpho-cluster``: embeddings -> a morphology taxonomy, its table and pictures.

Writes to ``output_dir``: ``taxonomy.morpho`` (the fitted taxonomy, for
``morpho-assign``), ``taxonomy.parquet`` (``id``, ``index``, ``cluster``,
``probability``, ``outlier_score``, ``map_x``, ``map_y``, ``parent``),
``tree.csv`` (the hierarchy), and the pictures ``map.png``, ``tree.png``,
``typical_members.png`` and ``outliers.png`` (the mosaics need ``data``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.config import config_dir
from morpho.taxonomy.embed import read_embeddings
from morpho.utils import atomic_output

__all__ = ["cluster", "main"]

log = logging.getLogger(__name__)


def _write_table(table, path: Path) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)


def _mosaics(cfg: DictConfig, taxonomy, meta, out: Path) -> list[Path]:
    from morpho.taxonomy import (
        plot_cluster_mosaic,
        plot_outlier_mosaic,
        strongest_outliers,
        typical_members,
    )

    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dataset = dm.dataset("all")
    rows = meta["index"].to_numpy()

    def images(members: np.ndarray) -> np.ndarray:
        return np.stack([dataset[int(rows[i])]["image"].numpy() for i in members])

    members = typical_members(taxonomy, cfg.mosaic_members)
    paths = [out / "typical_members.png", out / "outliers.png"]
    if members:
        plot_cluster_mosaic({label: images(idx) for label, idx in members.items()}, paths[0])
    outliers = strongest_outliers(taxonomy, cfg.mosaic_outliers)
    plot_outlier_mosaic(images(outliers), taxonomy.outlier_scores_[outliers], paths[1])
    return [p for p in paths if p.exists()]


def cluster(cfg: DictConfig) -> dict[str, Any]:
    """Fit a taxonomy to ``cfg.embeddings`` and write its table, file and pictures."""
    from morpho.taxonomy import plot_map, plot_tree, save_taxonomy

    meta, embeddings = read_embeddings(cfg.embeddings)
    taxonomy = hydra.utils.instantiate(cfg.taxonomy).fit(embeddings)
    out = Path(cfg.output_dir)
    table = taxonomy.table(meta["id"].to_numpy())
    if "index" in meta:
        table.insert(1, "index", meta["index"].to_numpy())
    _write_table(table, out / "taxonomy.parquet")
    _write_table(taxonomy.tree_, out / "tree.csv")
    save_taxonomy(taxonomy, out / "taxonomy.morpho", overwrite=True)
    plot_map(taxonomy, out / "map.png")
    plot_tree(taxonomy, out / "tree.png")
    pictures = [out / "map.png", out / "tree.png"]
    if cfg.get("data") is not None and "index" in meta:
        pictures += _mosaics(cfg, taxonomy, meta, out)
    noise = float(np.mean(taxonomy.labels_ < 0))
    log.info(
        "%d galaxies, %d clusters, %.1f%% noise", len(table), taxonomy.n_clusters_, 100 * noise
    )
    log.info(
        "Taxonomy table: %s; taxonomy file: %s", out / "taxonomy.parquet", out / "taxonomy.morpho"
    )
    log.info("Pictures: %s", ", ".join(str(p) for p in pictures))
    return {"n_clusters": taxonomy.n_clusters_, "noise_fraction": noise, "output_dir": out}


@hydra.main(config_path=config_dir(), config_name="cluster", version_base="1.3")
@report_user_errors("morpho-cluster")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    cluster(cfg)


if __name__ == "__main__":
    main()
