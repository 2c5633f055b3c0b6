"""Data-layer throughput: GalSim simulation and DataModule reads of 64×64 stamps.

Usage::

    python benchmarks/data.py            # 1200 galaxies (about 1 min on 2 cores)
    python benchmarks/data.py --n 5000

Prints each figure, then one JSON line with all of them.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from morpho.data.augment import Augment
from morpho.data.datamodule import GalaxyDataModule
from morpho.data.simulate import SimulationSpec, simulate_to_hdf5
from morpho.data.sources import HDF5Source
from morpho.data.stretches import ArcsinhStretch
from morpho.utils import available_cpus


def simulation_rate(path: Path, n: int, workers: int) -> float:
    """Galaxies per second rendering the six-class mix into ``path`` (warm-up included)."""
    start = time.perf_counter()
    simulate_to_hdf5(
        path, n_galaxies=n, spec=SimulationSpec(), workers=workers, overwrite=True, progress=False
    )
    return n / (time.perf_counter() - start)


def read_rate(path: Path, workers: int, *, augment: bool, epochs: int = 2) -> float:
    """Training images per second through the DataModule (crop, stretch, normalise[, augment])."""
    dm = GalaxyDataModule(
        functools.partial(HDF5Source, path=path),
        image_size=64,
        batch_size=64,
        num_workers=workers,
        stretch=ArcsinhStretch(scale=6.0),
        augment=Augment() if augment else None,
        split=(1.0, 0.0, 0.0),
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    for _ in loader:  # one warm-up epoch: worker start-up and page cache
        pass
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            seen += len(batch["image"])
    rate = seen / (time.perf_counter() - start)
    del loader, dm  # shut persistent workers down before the next run forks its own
    gc.collect()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1200, help="galaxies to simulate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"n_galaxies": args.n, "cpus": available_cpus(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        results["simulate_galaxies_per_s_1_worker"] = simulation_rate(path, args.n // 2, 1)
        results["simulate_galaxies_per_s_2_workers"] = simulation_rate(path, args.n, 2)
        for workers in (0, 2):
            results[f"read_images_per_s_{workers}_workers"] = read_rate(
                path, workers, augment=False
            )
            results[f"read_augmented_images_per_s_{workers}_workers"] = read_rate(
                path, workers, augment=True
            )
    for key, value in results.items():
        print(f"{key:45s} {value:.1f}" if isinstance(value, float) else f"{key:45s} {value}")
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results.items()}))


if __name__ == "__main__":
    main()
