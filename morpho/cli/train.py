"""``morpho-train``: train a model on a data set, configured with Hydra.

Examples
--------
``morpho-train`` (the autoencoder on the simulated default),
``morpho-train experiment=taxonomy trainer.max_epochs=40``,
``morpho-train trainer=gpu``, ``morpho-train trainer=ddp`` (every GPU of the machine).

``data.batch_size`` is per device; the effective batch size, logged at the start,
is ``batch_size × devices × num_nodes × accumulate_grad_batches``. Only global rank 0
writes checkpoints and logs (Lightning's checkpoints and loggers see to it).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.config import config_dir
from morpho.distributed import check_sweep_launch, effective_batch_size
from morpho.models.checkpoint import read_checkpoint

__all__ = ["main", "train"]

log = logging.getLogger(__name__)
#: ``log.info`` on global rank 0 only (the other ranks run the same code).
_log_rank_zero = rank_zero_only(log.info)

# Lightning (2.6) calls a torch API that torch (2.13) deprecates; nothing for users to do.
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
)


#: ``ckpt_path`` values that Lightning resolves itself (from the checkpoint callbacks).
LIGHTNING_CHECKPOINT_NAMES = ("last", "best", "hpc", "registry")


def _instantiate_group(node: DictConfig | None) -> list[Any]:
    if not node:
        return []
    return [hydra.utils.instantiate(item) for item in node.values() if item is not None]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.trainer``, then test the best checkpoint.

    Runs on every rank of a data-parallel job (``trainer=ddp``, ``ddp_cpu``,
    ``multinode``); Lightning writes checkpoints and logs on global rank 0 only.

    Returns
    -------
    dict
        ``metrics`` (the last logged value of every metric, as floats),
        ``best_checkpoint`` and ``last_checkpoint`` (paths or None) and
        ``effective_batch_size`` (galaxies per optimiser step over all ranks).

    Raises
    ------
    DataError
        If ``ckpt_path`` names a file that is not a morpho checkpoint of this model kind.
    ValueError
        If a Hydra sweep (``-m``) would start its ranks with ``strategy=ddp``
        (see :func:`morpho.distributed.check_sweep_launch`).
    """
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    check_sweep_launch(trainer, multirun=_in_multirun())
    batch = _log_batch_size(trainer, datamodule.hparams.batch_size)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and ckpt_path not in LIGHTNING_CHECKPOINT_NAMES:
        read_checkpoint(ckpt_path, kind=model.kind)  # refuse what is not a morpho checkpoint
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if cfg.get("test") and not trainer.fast_dev_run:
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    last = _latest_checkpoint(trainer)
    if best:
        _log_rank_zero("Best checkpoint: %s", best)
    if last:
        _log_rank_zero("Last checkpoint: %s", last)
    return {
        "metrics": metrics,
        "best_checkpoint": best or None,
        "last_checkpoint": last or None,
        "effective_batch_size": batch,
    }


def _log_batch_size(trainer: L.Trainer, per_device: int) -> int:
    batch = effective_batch_size(trainer, per_device)
    _log_rank_zero(
        "Effective batch size %d = %d per device × %d device(s) × %d node(s) × %d accumulated",
        batch,
        per_device,
        trainer.num_devices,
        trainer.num_nodes,
        trainer.accumulate_grad_batches,
    )
    return batch


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _latest_checkpoint(trainer: L.Trainer) -> str:
    """Path of the checkpoint of the latest epoch: a monitor-free ModelCheckpoint's, else last."""
    latest = ""
    for callback in trainer.checkpoint_callbacks:
        if callback.monitor is None and callback.best_model_path:
            return callback.best_model_path
        latest = latest or callback.last_model_path
    return latest


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
@report_user_errors("morpho-train")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    result = train(cfg)
    _log_rank_zero("Outputs are in %s", Path(cfg.paths.output_dir))
    for name, value in sorted(result["metrics"].items()):
        _log_rank_zero("%s = %.5g", name, value)


if __name__ == "__main__":
    main()
