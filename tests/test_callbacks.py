"""morpho's own Lightning callbacks."""

from __future__ import annotations

import copy
import itertools
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from morpho import callbacks
from morpho.callbacks import TrainingThroughput, WeightsDigest, state_dict_digest


def _module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 2))


def test_equal_state_dicts_have_equal_digests_whatever_their_order():
    module = _module()
    module(torch.zeros(2, 1, 8, 8))  # updates the BatchNorm buffers
    state = module.state_dict()
    reordered = dict(reversed(list(copy.deepcopy(state).items())))
    assert state_dict_digest(reordered) == state_dict_digest(state)
    assert len(state_dict_digest(state)) == 64


def test_the_digest_sees_one_ulp_a_buffer_a_name_and_a_dtype():
    state = {"w": torch.linspace(0, 1, 5), "n": torch.tensor(3), "b": torch.tensor([True, False])}
    reference = state_dict_digest(state)
    nudged = dict(state, w=state["w"].clone())
    nudged["w"][2] = torch.nextafter(nudged["w"][2], torch.tensor(2.0))
    assert state_dict_digest(nudged) != reference
    assert state_dict_digest(dict(state, n=torch.tensor(4))) != reference
    assert state_dict_digest({"v" if k == "w" else k: v for k, v in state.items()}) != reference
    assert state_dict_digest(dict(state, w=state["w"].double())) != reference
    assert state_dict_digest(dict(state, w=state["w"].bfloat16())) != reference


def test_weights_digest_writes_one_file_per_rank(tmp_path):
    module = _module()
    callback = WeightsDigest(tmp_path / "run")
    for rank in (0, 1):
        callback.on_fit_end(SimpleNamespace(global_rank=rank), module)
    texts = [(tmp_path / "run" / f"weights_rank{r}.txt").read_text() for r in (0, 1)]
    assert texts[0] == texts[1] == state_dict_digest(module.state_dict()) + "\n"


def test_throughput_times_the_batches_after_the_warm_up(tmp_path, monkeypatch):
    """Batches of 8 images ending one (fake) second apart, 2 warm-up batches of 6: the
    clock runs from the end of batch 2 to the end of batch 6, 4 batches, 32 images: 8/s."""
    clock = itertools.count(1.0)
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    callback = TrainingThroughput(tmp_path / "run", warmup_steps=2)
    trainer = SimpleNamespace(global_rank=0, world_size=1)
    module = SimpleNamespace(device=torch.device("cpu"))
    for i in range(6):
        batch = {"image": torch.zeros(8, 1, 4, 4), "index": torch.arange(8)}
        callback.on_train_batch_end(trainer, module, None, batch, i)
    callback.on_fit_end(trainer, module)
    record = json.loads((tmp_path / "run" / "throughput.json").read_text())
    assert record["batches"] == [4]
    assert record["images"] == [32]
    assert record["seconds"] == [4.0]
    assert record["images_per_second"] == 8.0


def test_throughput_without_a_timed_batch_says_none(tmp_path):
    callback = TrainingThroughput(tmp_path, warmup_steps=3)
    trainer = SimpleNamespace(global_rank=0, world_size=1)
    module = SimpleNamespace(device=torch.device("cpu"))
    callback.on_train_batch_end(trainer, module, None, {"image": torch.zeros(2, 1)}, 0)
    callback.on_fit_end(trainer, module)
    assert json.loads((tmp_path / "throughput.json").read_text())["images_per_second"] is None
    with pytest.raises(ValueError, match="warmup_steps must be >= 1"):
        TrainingThroughput(tmp_path, warmup_steps=0)


class _Regression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch["image"]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path, callbacks_: list, *, max_steps: int) -> L.Trainer:
    """A quiet CPU trainer for a few steps."""
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks_,
        default_root_dir=tmp_path,
    )


def test_throughput_in_a_real_fit(tmp_path):
    """5 steps of batches of 8 with 2 warm-up batches: 3 timed batches, 24 images."""
    data = [{"image": torch.randn(4)} for _ in range(40)]
    callback = TrainingThroughput(tmp_path, warmup_steps=2)
    _trainer(tmp_path, [callback], max_steps=5).fit(_Regression(), DataLoader(data, batch_size=8))
    record = json.loads((tmp_path / "throughput.json").read_text())
    assert record["world_size"] == 1
    assert record["batches"] == [3]
    assert record["images"] == [24]
    assert record["images_per_second"] > 0


class _Convolution(L.LightningModule):
    """Records the memory layout of each batch's images and of its weight at every step."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.layouts = []

    def training_step(self, batch, batch_idx):
        channels_last = torch.channels_last
        self.layouts.append(
            (
                batch["image"].is_contiguous(memory_format=channels_last),
                self.conv.weight.is_contiguous(memory_format=channels_last),
            )
        )
        return self.conv(batch["image"]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_convolution(tmp_path, extra_callbacks) -> _Convolution:
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model = _Convolution()
    trainer = _trainer(tmp_path, extra_callbacks, max_steps=3)
    trainer.fit(model, DataLoader([{"image": x} for x in images], batch_size=4))
    return model


def test_channels_last_trains_in_that_layout_to_the_same_weights(tmp_path):
    plain = _fit_convolution(tmp_path, [])
    fast = _fit_convolution(tmp_path, [callbacks.ChannelsLast()])
    assert plain.layouts == [(False, False)] * 3
    assert fast.layouts == [(True, True)] * 3
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-5, atol=1e-6)
