"""Render many galaxies in parallel and stream them into one HDF5 file.

File layout (read it back with :class:`morpho.data.sources.HDF5Source`):

- ``images`` (N, C, H, W) float32: noisy, sky-subtracted images in ADU
  (attribute ``layout = "NCHW"``);
- ``noiseless`` (N, C, H, W) float32: the same without noise;
- ``psf`` (N, C, P, P) float32: each galaxy's effective PSF, summing to 1;
- ``catalog/<column>`` (N,): truth and metadata, one dataset per column
  (NaN where a component is absent);
- file attributes: ``morpho_format``, ``morpho_version``, ``spec`` (JSON),
  ``seed``, ``bands`` and ``class_names`` (JSON lists).

Galaxy ``i`` depends only on ``(spec, seed, i)``, so the file is identical for
any number of workers or chunk size.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from morpho import __version__
from morpho.data.simulate.render import render_galaxy
from morpho.data.simulate.spec import SimulationSpec
from morpho.utils import atomic_output, available_cpus

__all__ = ["SIMULATION_FORMAT", "simulate_to_hdf5"]

#: File format and simulator revision: bumped whenever the layout or the way galaxies
#: are drawn changes, so that a file made by an older simulator is not silently reused.
SIMULATION_FORMAT = "morpho-simulated-galaxies/3"


def _render_chunk(args: tuple[SimulationSpec, int, int, int]):
    spec, seed, start, stop = args
    galaxies = [render_galaxy(spec, i, seed) for i in range(start, stop)]
    return (
        start,
        np.stack([g.image for g in galaxies]),
        np.stack([g.noiseless for g in galaxies]),
        np.stack([g.psf for g in galaxies]),
        pd.DataFrame([g.truth for g in galaxies]),
    )


def _chunks(spec, seed, n_galaxies, chunk_size) -> list[tuple]:
    return [
        (spec, seed, start, min(start + chunk_size, n_galaxies))
        for start in range(0, n_galaxies, chunk_size)
    ]


def _rendered(tasks: list[tuple], workers: int) -> Iterator[tuple]:
    if workers == 1:
        yield from map(_render_chunk, tasks)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap(_render_chunk, tasks)


def _create_datasets(h5: h5py.File, spec: SimulationSpec, n: int) -> None:
    c, s, p = len(spec.bands), spec.image_size, spec.psf.stamp_size
    for key, shape, unit in [
        ("images", (n, c, s, s), "ADU"),
        ("noiseless", (n, c, s, s), "ADU"),
        ("psf", (n, c, p, p), "1"),
    ]:
        ds = h5.create_dataset(key, shape=shape, dtype="float32", chunks=(1, *shape[1:]))
        ds.attrs["layout"] = "NCHW"
        ds.attrs["unit"] = unit


def _write_catalog(h5: h5py.File, catalog: pd.DataFrame) -> None:
    group = h5.create_group("catalog")
    for column in catalog.columns:
        values = catalog[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            group.create_dataset(
                column, data=values.astype(str).to_numpy(dtype=object), dtype=h5py.string_dtype()
            )
        else:
            group.create_dataset(column, data=values.to_numpy())


def _spec_json(spec: SimulationSpec) -> str:
    return json.dumps(dataclasses.asdict(spec), default=list)


def simulate_to_hdf5(
    path: str | os.PathLike,
    *,
    n_galaxies: int,
    spec: SimulationSpec | None = None,
    seed: int = 0,
    workers: int | None = None,
    chunk_size: int = 128,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render ``n_galaxies`` simulated galaxies into the HDF5 file ``path``.

    Parameters
    ----------
    path : path-like
        Output file. Written under a temporary name and renamed when complete.
    n_galaxies : int
        Number of galaxies (> 0).
    spec : SimulationSpec, optional
        The population; the six-class mix at 64×64 by default.
    seed : int
        Random seed; galaxy ``i`` depends only on ``(spec, seed, i)``.
    workers : int, optional
        Rendering processes; all available cores by default, 1 renders in-process.
        Workers are started with the ``spawn`` method, so a script calling this
        with more than one worker needs the usual ``if __name__ == "__main__":`` guard.
    chunk_size : int
        Galaxies per work unit and per write; memory stays bounded by a few chunks.
    overwrite : bool
        Replace an existing ``path``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        If ``n_galaxies``, ``workers`` or ``chunk_size`` is not a positive integer.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    spec = spec or SimulationSpec()
    for name, value in [("n_galaxies", n_galaxies), ("chunk_size", chunk_size)]:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    workers = available_cpus() if workers is None else workers
    if workers <= 0:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    tasks = _chunks(spec, seed, int(n_galaxies), chunk_size)
    workers = min(workers, len(tasks))
    catalogs = []
    with atomic_output(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as h5:
        _create_datasets(h5, spec, n_galaxies)
        with _progress_bar(progress) as bar:
            job = bar.add_task(f"Rendering {n_galaxies} galaxies", total=n_galaxies)
            for start, images, noiseless, psf, catalog in _rendered(tasks, workers):
                stop = start + len(images)
                h5["images"][start:stop] = images
                h5["noiseless"][start:stop] = noiseless
                h5["psf"][start:stop] = psf
                catalogs.append(catalog)
                bar.advance(job, len(images))
        _write_catalog(h5, pd.concat(catalogs, ignore_index=True))
        h5.attrs.update(
            {
                "morpho_format": SIMULATION_FORMAT,
                "morpho_version": __version__,
                "spec": _spec_json(spec),
                "seed": seed,
                "bands": json.dumps(list(spec.bands)),
                "class_names": json.dumps(list(spec.class_names)),
            }
        )
    return Path(path)


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
