"""A test-only callback that makes one rank of a distributed run fail.

Imported by the training subprocesses of ``test_distributed.py`` through Hydra
(``+callbacks.fail._target_=tests.cli.ddp_faults.FailOnRank``), with the repository
root on ``PYTHONPATH``.
"""

from __future__ import annotations

import lightning as L

__all__ = ["FailOnRank"]


class FailOnRank(L.Callback):
    """Raise ``RuntimeError`` at the start of the second training batch on global ``rank``.

    The other ranks are then inside the first backward pass's gradient all-reduce or
    about to enter the next one: without a launcher that ends the job, they would wait
    for the failed rank forever.
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 1 and trainer.global_rank == self.rank:
            raise RuntimeError(f"rank {self.rank} fails on purpose")
