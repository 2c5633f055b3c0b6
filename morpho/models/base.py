"""What every morpho LightningModule shares: preprocessing, optimisers, checkpoints."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from lightning import LightningModule
from torch import nn

from morpho import __version__
from morpho.data.preprocess import Preprocessor

__all__ = ["CHECKPOINT_KEY", "MorphoModule"]

#: Key of morpho's own record in a Lightning checkpoint.
CHECKPOINT_KEY = "morpho"


class MorphoModule(LightningModule):
    """Base of morpho's LightningModules.

    - ``preprocessor``: taken over from the DataModule in :meth:`setup` (fitted on
      the training split), then saved with the model;
    - ``optimizer`` / ``scheduler``: factories (Hydra ``_partial_: true``) called in
      :meth:`configure_optimizers`;
    - checkpoints carry ``checkpoint["morpho"]``: the model kind, how to rebuild its
      networks and preprocessor, and the morpho version, so that
      :func:`morpho.models.load_model` can rebuild it without any config.

    Subclasses set ``kind``, list their network attributes in ``net_names`` and
    implement ``_shared_step(batch, stage)``, which serves training, validation and
    test (``stage`` is ``"train"``, ``"val"`` or ``"test"``) and returns the loss.
    """

    kind: ClassVar[str] = ""
    net_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        preprocessor: Preprocessor | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.preprocessor = preprocessor

    def setup(self, stage: str) -> None:
        """Take over the DataModule's fitted preprocessor unless one was restored."""
        if self.preprocessor is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or getattr(datamodule, "preprocessor", None) is None:
            raise RuntimeError(
                f"{type(self).__name__} needs a fitted preprocessor: train it with a "
                "morpho GalaxyDataModule (which fits one on the training split)"
            )
        self.preprocessor = copy.deepcopy(datamodule.preprocessor)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _shared_step")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError(
                "no optimizer was given: pass optimizer=partial(torch.optim.AdamW, ...)"
            )
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        nets = {
            name: getattr(self, name).init_config
            for name in self.net_names
            if isinstance(getattr(self, name), nn.Module)
        }
        checkpoint[CHECKPOINT_KEY] = {
            "kind": self.kind,
            "version": __version__,
            "nets": nets,
            "preprocessor": None if self.preprocessor is None else self.preprocessor.describe(),
        }
