"""Inference split across ranks: the same table as one process, from several.

``morpho-embed`` and ``morpho-score`` accept the trainer configs of training
(``trainer=ddp_cpu``, ``trainer=ddp``, ``trainer=multinode``, SLURM through
``hydra/launcher=slurm``). Lightning Fabric starts the ranks exactly as training
does; each rank then handles one contiguous share of the data set made of whole
batches (:func:`shard_range`), so every batch holds the galaxies it would hold in
one process, and writes its rows to a part file. Global rank 0 joins the parts in
rank order (:func:`join_parquet_parts`, streaming, so memory stays bounded) into
the table one process would have written, and removes them. Part files live in a
hidden folder beside the output, which must be on a file system every rank sees.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from lightning.fabric import Fabric
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, Subset

from morpho.utils import atomic_output

__all__ = [
    "fresh_parts",
    "join_parquet_parts",
    "launch",
    "part_paths",
    "read_parquet_parts",
    "shard",
    "shard_range",
]

#: The keys of a trainer config that say where and on how many ranks to run.
PLACEMENT_KEYS = ("accelerator", "devices", "num_nodes", "strategy")


def shard_range(n_items: int, *, batch_size: int, rank: int, world_size: int) -> range:
    """Indices of the items that ``rank`` of ``world_size`` handles.

    The ``ceil(n_items / batch_size)`` batches of one process are dealt out in
    contiguous runs, rank ``r`` taking batches ``floor(r B / W)`` to
    ``floor((r + 1) B / W) - 1``: the shares cover every item exactly once, in
    order, and each batch of a rank is a batch of the single process.

    Parameters
    ----------
    n_items, batch_size : int
        Items in the data set and per batch (> 0).
    rank, world_size : int
        This rank (0-based) and the number of ranks.

    Returns
    -------
    range
        Possibly empty when there are fewer batches than ranks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    n_batches = -(-int(n_items) // int(batch_size))
    first = rank * n_batches // world_size
    end = (rank + 1) * n_batches // world_size
    return range(min(first * batch_size, n_items), min(end * batch_size, n_items))


def shard(dataset: Dataset, *, batch_size: int, rank: int, world_size: int) -> Subset:
    """The items of ``dataset`` that ``rank`` handles (see :func:`shard_range`)."""
    indices = shard_range(len(dataset), batch_size=batch_size, rank=rank, world_size=world_size)
    return Subset(dataset, list(indices))


def part_paths(path: str | os.PathLike, world_size: int) -> list[Path]:
    """Where each rank writes its rows of the table ``path``: a hidden folder beside it."""
    path = Path(path)
    folder = path.parent / f".{path.name}.parts"
    return [folder / f"part-{r:05d}-of-{world_size:05d}.parquet" for r in range(world_size)]


def fresh_parts(fabric: Fabric, path: str | os.PathLike) -> list[Path]:
    """:func:`part_paths` of ``path`` for this job, once rank 0 has removed any part a
    killed earlier run left there (the other ranks wait for it)."""
    parts = part_paths(path, fabric.world_size)
    if fabric.global_rank == 0:
        _remove_parts(parts)
    fabric.barrier()
    return parts


def join_parquet_parts(
    parts: Sequence[str | os.PathLike], path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Concatenate parquet files, in the given order, into ``path``; remove the parts.

    Missing parts (ranks whose share was empty) are skipped. Row groups are copied
    one at a time, so memory holds one of them, and ``path`` is written under a
    temporary name and renamed.

    Raises
    ------
    FileNotFoundError
        If no part exists.
    ValueError
        If two parts have different columns.
    """
    present = [Path(p) for p in parts if Path(p).is_file()]
    if not present:
        raise FileNotFoundError(f"no part of {path} was written (looked for {parts[0]} ...)")
    schema = pq.read_schema(present[0])
    with atomic_output(path, overwrite=overwrite) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for part in present:
            source = pq.ParquetFile(part)
            if not source.schema_arrow.equals(schema):
                raise ValueError(f"{part} has other columns than {present[0]}")
            for group in range(source.num_row_groups):
                writer.write_table(source.read_row_group(group))
    _remove_parts(parts)
    return Path(path)


def read_parquet_parts(parts: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The parquet parts that exist, concatenated in order into one table; removes them.

    For tables that fit in memory (one row of scores per galaxy); see
    :func:`join_parquet_parts` for streaming into a file.

    Raises
    ------
    FileNotFoundError
        If no part exists.
    """
    present = [Path(p) for p in parts if Path(p).is_file()]
    if not present:
        raise FileNotFoundError(f"no part was written (looked for {parts[0]} ...)")
    table = pd.concat([pd.read_parquet(part) for part in present], ignore_index=True)
    _remove_parts(parts)
    return table


def _remove_parts(parts: Sequence[str | os.PathLike]) -> None:
    shutil.rmtree(Path(parts[0]).parent, ignore_errors=True)


def launch(trainer: Mapping[str, Any] | None, function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(fabric, *args)`` on every rank that ``trainer`` describes.

    Parameters
    ----------
    trainer : mapping or None
        A trainer config (``conf/trainer/*.yaml``); only ``accelerator``, ``devices``,
        ``num_nodes`` and ``strategy`` are read. None: one process on the CPU.
    function : callable
        Receives a launched :class:`lightning.fabric.Fabric` (its ``global_rank``,
        ``world_size``, ``device`` and ``barrier``) and ``args``.

    Returns
    -------
    object
        What ``function`` returned on global rank 0 (with spawned ranks, what it
        returned in the launching process).

    Notes
    -----
    Config arguments (``DictConfig``) are passed resolved, so that spawned ranks
    (``strategy=ddp_spawn``), which have no Hydra context, can read them. With
    ``strategy=ddp`` on one machine the extra ranks re-run the command line, as in
    training. If this process's ``function`` raises, the ranks it started are
    killed, so none is left waiting at a barrier; if one of them fails, Lightning
    ends the others.
    """
    placement = {key: trainer[key] for key in PLACEMENT_KEYS if trainer and key in trainer}
    placement.setdefault("accelerator", "cpu")
    placement.setdefault("devices", 1)
    fabric = Fabric(**placement)
    # Spawned ranks have no Hydra context to resolve ${hydra:...} in: resolve configs here.
    args = tuple(_resolved(arg) if isinstance(arg, DictConfig) else arg for arg in args)
    return fabric.launch(_ending_children_on_error, function, *args)


def _resolved(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with every interpolation resolved (missing values stay missing)."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def _ending_children_on_error(fabric: Fabric, function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(fabric, *args)
    except BaseException:
        for proc in getattr(fabric.strategy.launcher, "procs", []):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        raise
