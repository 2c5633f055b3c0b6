"""morpho's own Lightning callbacks."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
from torch import nn

from morpho.callbacks import WeightsDigest, state_dict_digest


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
