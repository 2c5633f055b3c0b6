"""``morpho-inspect``: load a data set as training will, summarise it and draw it.

Writes ``summary.json`` and ``mosaic_by_class.png`` (or ``mosaic.png`` without
class labels) to ``output_dir``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.config import config_dir
from morpho.data.datamodule import GalaxyDataModule
from morpho.plotting import save_mosaic
from morpho.utils import atomic_output

__all__ = ["inspect_data", "main"]

log = logging.getLogger(__name__)


def _summary(dm: GalaxyDataModule) -> dict[str, Any]:
    first = dm.datasets["train"][0]["image"]
    pre = dm.preprocessor
    catalog = dm.source.catalog
    summary = {
        "source": repr(dm.source),
        "n_galaxies": len(dm.source),
        "splits": {stage: len(idx) for stage, idx in dm.indices.items()},
        "image_shape": list(first.shape),
        "normalisation": {
            "stretch": repr(pre.stretch),
            "mean": pre.mean.tolist(),
            "std": pre.std.tolist(),
        },
        "catalog_columns": list(catalog.columns),
    }
    if "class_name" in catalog:
        counts = catalog["class_name"].value_counts().sort_index()
        summary["classes"] = {str(k): int(v) for k, v in counts.items()}
    return summary


def _mosaic_rows(dm: GalaxyDataModule, columns: int) -> tuple[list[np.ndarray], list[str]]:
    catalog = dm.source.catalog
    raw = dm.raw
    train = dm.indices["train"]
    if "class_name" in catalog:
        names = catalog["class_name"].to_numpy()[train]
        groups = {name: train[names == name][:columns] for name in dict.fromkeys(names)}
        if "label" in catalog:
            order = catalog.groupby("class_name")["label"].first().sort_values().index
            groups = {name: groups[name] for name in order if name in groups}
    else:
        groups = {"": train[: columns * 4]}
    rows, labels = [], []
    for name, indices in groups.items():
        stack = np.stack([raw[int(i)]["image"].numpy() for i in indices])
        for start in range(0, len(stack), columns):
            rows.append(stack[start : start + columns])
            labels.append(name if start == 0 else "")
    return rows, labels


def inspect_data(cfg: DictConfig) -> dict[str, Any]:
    """Set up ``cfg.data`` and write its summary and mosaic to ``cfg.output_dir``."""
    dm: GalaxyDataModule = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    out = Path(cfg.output_dir)
    summary = _summary(dm)
    rows, labels = _mosaic_rows(dm, cfg.mosaic_columns)
    mosaic = out / ("mosaic_by_class.png" if "classes" in summary else "mosaic.png")
    save_mosaic(rows, mosaic, row_labels=labels)
    summary["mosaic"] = str(mosaic)
    with atomic_output(out / "summary.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    log.info(
        "%d galaxies, splits %s, images %s",
        summary["n_galaxies"],
        summary["splits"],
        summary["image_shape"],
    )
    log.info("Wrote %s and %s", out / "summary.json", mosaic)
    return summary


@hydra.main(config_path=config_dir(), config_name="inspect", version_base="1.3")
@report_user_errors("morpho-inspect")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    inspect_data(cfg)


if __name__ == "__main__":
    main()
