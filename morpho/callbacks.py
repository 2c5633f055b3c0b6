"""Lightning callbacks of morpho's own.

:class:`WeightsDigest` checks that distributed training kept every rank in step: each
rank writes a SHA-256 digest of its model's ``state_dict`` when ``fit`` ends, and equal
digests mean equal weights and buffers. Enable it with ``callbacks=ddp_check``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch

__all__ = ["WeightsDigest", "state_dict_digest"]


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
