"""Render the simulated default data set once, when it is missing."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from morpho.data.errors import DataError
from morpho.data.simulate.spec import SimulationSpec
from morpho.data.simulate.writer import SIMULATION_FORMAT, _spec_json, simulate_to_hdf5

__all__ = ["EnsureSimulated"]

log = logging.getLogger(__name__)


@dataclass
class EnsureSimulated:
    """Callable that makes sure ``path`` holds the described simulation.

    Used as the ``prepare`` hook of :class:`morpho.data.GalaxyDataModule`, so that
    every job runs out of the box: the file is rendered on first use and reused
    afterwards. An existing file made with other settings is an error rather than
    being silently used or overwritten.

    Parameters
    ----------
    path : path-like
        The HDF5 file.
    n_galaxies : int
        Number of galaxies.
    spec : SimulationSpec
        The population.
    seed : int
        Simulation seed.
    workers : int, optional
        Rendering processes (all cores by default).
    """

    path: str | os.PathLike
    n_galaxies: int
    spec: SimulationSpec = field(default_factory=SimulationSpec)
    seed: int = 0
    workers: int | None = None

    def __call__(self) -> Path:
        path = Path(self.path)
        if not path.exists():
            log.info("Rendering %d simulated galaxies into %s", self.n_galaxies, path)
            return simulate_to_hdf5(
                path,
                n_galaxies=self.n_galaxies,
                spec=self.spec,
                seed=self.seed,
                workers=self.workers,
            )
        self._check_matches(path)
        return path

    def _check_matches(self, path: Path) -> None:
        with h5py.File(path, "r") as h5:
            found = {
                "format": h5.attrs.get("morpho_format"),
                "n_galaxies": len(h5["images"]) if "images" in h5 else None,
                "seed": int(h5.attrs.get("seed", -1)),
                "spec": json.loads(h5.attrs.get("spec", "null")),
            }
        wanted = {
            "format": SIMULATION_FORMAT,
            "n_galaxies": self.n_galaxies,
            "seed": self.seed,
            "spec": json.loads(_spec_json(self.spec)),
        }
        differ = [key for key in wanted if found[key] != wanted[key]]
        if differ:
            raise DataError(
                f"{path} exists but was not made with these simulation settings "
                f"(different {', '.join(differ)}); delete it or choose another data path"
            )
