"""``morpho-simulate``: render galaxies with GalSim into one HDF5 file.

Examples
--------
``morpho-simulate n_galaxies=5000 output=data/galaxies.h5``
``morpho-simulate simulation=single_sersic simulation.snr=[5,20]``
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import hydra
import pandas as pd
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.config import config_dir
from morpho.data.simulate import simulate_to_hdf5

__all__ = ["main", "simulate"]

log = logging.getLogger(__name__)


def simulate(cfg: DictConfig) -> Path:
    """Render the galaxies that ``cfg`` describes; returns the written file."""
    spec = hydra.utils.instantiate(cfg.simulation, _convert_="all")
    path = simulate_to_hdf5(
        cfg.output,
        n_galaxies=cfg.n_galaxies,
        spec=spec,
        seed=cfg.seed,
        workers=cfg.workers,
        chunk_size=cfg.chunk_size,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
    )
    with h5py.File(path, "r") as h5:
        classes = pd.Series(h5["catalog/class_name"].asstr()[:]).value_counts().sort_index()
    log.info("Wrote %d galaxies to %s", cfg.n_galaxies, path)
    log.info("Galaxies per class: %s", ", ".join(f"{k}: {v}" for k, v in classes.items()))
    return path


@hydra.main(config_path=config_dir(), config_name="simulate", version_base="1.3")
@report_user_errors("morpho-simulate")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    simulate(cfg)


if __name__ == "__main__":
    main()
