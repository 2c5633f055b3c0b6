"""What every morpho command shares: user-facing errors."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from lightning.fabric import Fabric
    from torch.utils.data import Dataset

    from morpho.data.datamodule import GalaxyDataModule

__all__ = ["prepared_dataset", "report_user_errors"]

T = TypeVar("T")


def report_user_errors(command: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Turn errors caused by the user's input into one clear line and exit status 2.

    Bad paths, bad data and bad settings (``OSError``, ``ValueError`` and their
    subclasses such as :class:`morpho.data.errors.DataError`) are reported as
    ``<command>: error: <message>`` without a traceback; set ``HYDRA_FULL_ERROR=1``
    to see the traceback. Anything else propagates unchanged.
    """

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except (OSError, ValueError) as err:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"{command}: error: {err}", file=sys.stderr)
                raise SystemExit(2) from err

        return wrapper

    return decorate


def prepared_dataset(fabric: Fabric, datamodule: GalaxyDataModule, split: str) -> Dataset:
    """The ``split`` of ``datamodule``, its data prepared once per node (by local rank 0)
    while the other ranks wait.

    Raises
    ------
    DataError
        If the split holds no galaxy (on every rank, before any work).
    """
    from morpho.data.errors import DataError

    if fabric.local_rank == 0:
        datamodule.prepare_data()
    fabric.barrier()
    dataset = datamodule.dataset(split)
    if len(dataset) == 0:
        raise DataError(f"the {split!r} split of the data holds no galaxy: nothing to do")
    return dataset
