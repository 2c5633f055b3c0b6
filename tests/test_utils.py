"""Small utilities."""

from morpho.utils import native_bf16, torch_threads


def test_torch_threads_restores_the_count_changed_inside():
    import torch

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)  # as a library might, behind torch's back
    assert torch.get_num_threads() == before
    with torch_threads():
        torch.set_num_threads(1 if before != 1 else 2)
    assert torch.get_num_threads() == before


def test_native_bf16_follows_what_the_cpu_reports(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert native_bf16("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert native_bf16("cpu") is True
    assert native_bf16("mps") is False
