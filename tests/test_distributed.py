"""Effective batch size and safe sweep launching (morpho.distributed); no process is started."""

from __future__ import annotations

import lightning as L
import pytest

from morpho.distributed import check_sweep_launch, effective_batch_size


def _trainer(**kwargs) -> L.Trainer:
    options = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False}
    return L.Trainer(**options, **kwargs)


def test_effective_batch_size_counts_devices_nodes_and_accumulation():
    assert effective_batch_size(_trainer(devices=1), 64) == 64
    trainer = _trainer(devices=2, num_nodes=3, strategy="ddp", accumulate_grad_batches=4)
    assert effective_batch_size(trainer, 8) == 8 * 2 * 3 * 4


def test_a_sweep_may_not_start_ranks_by_rerunning_the_command():
    rerunning = _trainer(devices=2, strategy="ddp")
    check_sweep_launch(rerunning, multirun=False)
    with pytest.raises(ValueError, match="trainer=ddp_spawn"):
        check_sweep_launch(rerunning, multirun=True)
    for safe in (_trainer(devices=2, strategy="ddp_spawn"), _trainer(devices=1)):
        check_sweep_launch(safe, multirun=True)
