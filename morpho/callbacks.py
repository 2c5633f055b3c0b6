"""Lightning callbacks of morpho's own.

:class:`WeightsDigest` checks that distributed training kept every rank in step: each
rank writes a SHA-256 digest of its model's ``state_dict`` when ``fit`` ends, and equal
digests mean equal weights and buffers. Enable it with ``callbacks=ddp_check``.

:class:`TrainingThroughput` measures training images per second over all ranks, after a
warm-up, e.g. ``+callbacks.throughput._target_=morpho.callbacks.TrainingThroughput
+callbacks.throughput.dirpath=throughput`` (``benchmarks/throughput.py`` uses it to set
two-process DDP beside one process).

:class:`ChannelsLast` trains in the channels-last memory layout (model and images), which
oneDNN's convolutions prefer on many CPUs and cuDNN's on tensor-core GPUs:
``callbacks=channels_last`` (``benchmarks/throughput.py`` measures what it gives).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch

__all__ = ["ChannelsLast", "TrainingThroughput", "WeightsDigest", "state_dict_digest"]

log = logging.getLogger(__name__)


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a ``state_dict``: names, dtypes, shapes and exact bytes.

    Parameters
    ----------
    state_dict : mapping of str to Tensor
        Parameters and buffers, e.g. ``module.state_dict()``; any device, any dtype.

    Returns
    -------
    str
        64 hexadecimal digits; equal for two state dicts exactly when they hold the
        same names with bit-identical tensors (the order of the names does not matter).
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class WeightsDigest(L.Callback):
    """Write each rank's :func:`state_dict_digest` to ``<dirpath>/weights_rank{r}.txt``.

    Runs at the end of ``fit`` on every rank (it is the one morpho callback that writes
    on ranks other than 0, on purpose): after data-parallel training all files must hold
    the same digest; a difference means that the ranks drifted apart (a buffer updated
    on one rank only, a parameter left out of gradient synchronisation, ...).

    Parameters
    ----------
    dirpath : path-like
        Folder of the digest files (created if missing), e.g. the run's output folder.
    """

    def __init__(self, dirpath: str | os.PathLike) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"weights_rank{trainer.global_rank}.txt"
        path.write_text(state_dict_digest(pl_module.state_dict()) + "\n")


class ChannelsLast(L.Callback):
    """Train, validate and test in the channels-last memory layout.

    When a stage starts, the module's 4-D parameters and buffers are put in
    ``torch.channels_last``; every batch's ``image`` (N, C, H, W) is made channels-last
    before the step. Values are unchanged: only their order in memory, which decides
    which convolution kernels run (and so the speed, and the last bits of float sums).
    Checkpoints store the same tensors in either layout.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        _images_channels_last(batch)

    def on_validation_batch_start(
        self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        _images_channels_last(batch)

    def on_test_batch_start(
        self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        _images_channels_last(batch)


def _images_channels_last(batch) -> None:
    """Make ``batch["image"]`` channels-last in place (other batches are left alone)."""
    image = batch.get("image") if isinstance(batch, dict) else None
    if isinstance(image, torch.Tensor) and image.ndim == 4:
        batch["image"] = image.contiguous(memory_format=torch.channels_last)


class TrainingThroughput(L.Callback):
    """Training images per second over all ranks, written to ``<dirpath>/throughput.json``.

    Each rank times its training batches from the end of batch ``warmup_steps`` (start-up,
    first-batch allocations and compilation excluded) to the end of its last batch, and
    counts the images of the batches in between (the length of ``batch["image"]``, or of
    the batch's first tensor). When ``fit`` ends the counts are gathered: global rank 0
    writes the JSON file and logs the figure. On CUDA the device is synchronised at each
    timed batch end (as Lightning's ``ThroughputMonitor`` does), so that the clock sees
    finished work.

    The file holds ``world_size``, ``warmup_steps``, per rank the timed ``batches``, their
    ``images`` and ``seconds``, and ``images_per_second``: all ranks' images divided by the slowest
    rank's seconds (None when a rank had no batch after the warm-up).

    Parameters
    ----------
    dirpath : path-like
        Folder of ``throughput.json`` (created if missing), e.g. the run's output folder.
    warmup_steps : int
        Training batches per rank left out of the timing (>= 1: the clock starts at the
        end of one).

    Raises
    ------
    ValueError
        If ``warmup_steps`` < 1.
    """

    def __init__(self, dirpath: str | os.PathLike, *, warmup_steps: int = 5) -> None:
        if warmup_steps < 1:
            raise ValueError(
                f"warmup_steps must be >= 1 (the clock starts after one), got {warmup_steps}"
            )
        self.dirpath = Path(dirpath)
        self.warmup_steps = int(warmup_steps)
        self._batches = self._images = 0
        self._start = self._end = 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self._batches += 1
        if self._batches < self.warmup_steps:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        if self._batches == self.warmup_steps:
            self._start = now
        else:
            self._images += _batch_length(batch)
        self._end = now

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = max(self._batches - self.warmup_steps, 0)
        ranks = torch.tensor(
            [[batches, self._images, self._end - self._start]], dtype=torch.float64
        )
        if trainer.world_size > 1:
            ranks = pl_module.all_gather(ranks[0].to(pl_module.device)).reshape(-1, 3).cpu()
        if trainer.global_rank != 0:
            return
        rate = float(ranks[:, 1].sum() / ranks[:, 2].max()) if (ranks[:, 0] > 0).all() else None
        record = {
            "world_size": len(ranks),
            "warmup_steps": self.warmup_steps,
            "batches": [int(b) for b in ranks[:, 0]],
            "images": [int(n) for n in ranks[:, 1]],
            "seconds": [float(t) for t in ranks[:, 2]],
            "images_per_second": rate,
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / "throughput.json").write_text(json.dumps(record, indent=2) + "\n")
        if rate is None:
            log.info(
                "Training throughput: no batch after the %d warm-up batches", self.warmup_steps
            )
        else:
            log.info("Training throughput: %.1f images/s over %d rank(s)", rate, len(ranks))


def _batch_length(batch) -> int:
    """Images in a batch: the length of ``batch["image"]``, or of its first element."""
    if isinstance(batch, Mapping):
        return len(batch["image"] if "image" in batch else next(iter(batch.values())))
    return len(batch[0] if isinstance(batch, list | tuple) else batch)
