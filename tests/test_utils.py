"""Small utilities."""

from morpho.utils import torch_threads


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
