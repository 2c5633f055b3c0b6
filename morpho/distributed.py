"""Data-parallel training: the effective batch size and a safe way to launch sweeps.

Lightning runs data-parallel training (DDP) on every device of every node; each rank
sees ``data.batch_size`` galaxies per step, so one optimiser step averages the
gradients of :func:`effective_batch_size` galaxies.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

__all__ = ["check_sweep_launch", "effective_batch_size"]


def effective_batch_size(trainer: L.Trainer, batch_size: int) -> int:
    """Galaxies per optimiser step over all ranks.

    ``batch_size × devices × num_nodes × accumulate_grad_batches``, where
    ``devices × num_nodes`` is ``trainer.world_size`` (known once the Trainer is built).

    Parameters
    ----------
    trainer : lightning.Trainer
        The trainer that will run ``fit``.
    batch_size : int
        Galaxies per batch on one device (``data.batch_size``).

    Returns
    -------
    int
        The effective batch size.
    """
    return int(batch_size) * trainer.world_size * int(trainer.accumulate_grad_batches)


def check_sweep_launch(trainer: L.Trainer, *, multirun: bool) -> None:
    """Refuse a Hydra sweep that would make Lightning's ``ddp`` launcher re-run the sweep.

    With ``strategy=ddp`` on one machine Lightning starts ranks 1, 2, ... by re-running
    the command line; inside a ``-m`` sweep that command is the whole sweep, so every
    extra rank would run its own sweep. Spawned ranks (``ddp_spawn``, ``ddp_notebook``)
    and ranks started by a cluster (SLURM through ``hydra/launcher=slurm``, torchrun)
    are safe.

    Parameters
    ----------
    trainer : lightning.Trainer
        The trainer about to run ``fit``.
    multirun : bool
        Whether this job is part of a Hydra multirun (``-m``).

    Raises
    ------
    ValueError
        If ``multirun`` and the trainer would start its ranks by re-running the command.
    """
    strategy = trainer.strategy
    reruns_command = (
        isinstance(strategy.launcher, _SubprocessScriptLauncher)
        and not strategy.cluster_environment.creates_processes_externally
        and trainer.num_devices > 1
    )
    if multirun and reruns_command:
        raise ValueError(
            "a Hydra sweep (-m) cannot use strategy=ddp on one machine: each extra rank "
            "would re-run the whole sweep. Use trainer=ddp_spawn (on CPUs: trainer=ddp_cpu "
            "trainer.strategy=ddp_spawn), or one cluster job per run with hydra/launcher=slurm"
        )
