"""Small Lightning helpers shared by the model tests."""

from __future__ import annotations

import lightning as L


class LossRecorder(L.Callback):
    """Records the training loss of every batch in ``values``."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def cpu_trainer(tmp_path, **kwargs) -> L.Trainer:
    """A quiet CPU trainer writing under ``tmp_path``; ``kwargs`` override the defaults."""
    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "log_every_n_steps": 1,
        **kwargs,
    }
    return L.Trainer(**options)
