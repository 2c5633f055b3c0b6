"""Small helpers shared across morpho."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_output", "available_cpus", "check_new", "full_precision", "lazy_exports"]


def available_cpus() -> int:
    """Number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Write a file under a temporary name and move it into place only on success.

    Yields the temporary path to write to. If the block raises, the temporary
    file is removed and ``path`` is left untouched, so an earlier output is
    never lost or left half-written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=true to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_new(paths: Iterable[str | os.PathLike], *, overwrite: bool) -> None:
    """Refuse, before any work, to replace existing outputs unless ``overwrite``.

    Raises
    ------
    FileExistsError
        Naming the first existing path.
    """
    for path in paths:
        if Path(path).exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=true to replace it")


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether this machine computes bfloat16 natively on ``device_type`` ("cpu", "cuda").

    On CPUs only AVX-512 BF16 or AMX make bfloat16 faster than float32; elsewhere it is
    emulated and several times slower (measured on an AVX2 AMD EPYC: 7x, see
    ``benchmarks/RESULTS.md``), so callers choosing a precision should ask first.
    """
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so guarded
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@contextlib.contextmanager
def full_precision(x):
    """Run a block in float32 whatever mixed precision is on; yields ``x`` in float32.

    Autocast is switched off for ``x``'s device inside the block (float64 stays float64).
    For the pixel stages whose arithmetic needs more than bfloat16's 8 significant bits:
    image moments and resampling, noise estimates, stretches, the PixelCNN's levels.
    """
    import torch

    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        yield x.to(dtype)


def lazy_exports(package: str, where: dict[str, str]) -> tuple[Callable, Callable]:
    """Module ``__getattr__`` and ``__dir__`` that import each public name on first use.

    ``where`` maps a name to the module defining it; a package then does
    ``__getattr__, __dir__ = lazy_exports(__name__, {...})`` (PEP 562), so that
    importing it does not pay for heavy dependencies until they are used.
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__


@contextlib.contextmanager
def torch_threads(count: int | None = None) -> Iterator[None]:
    """Run a block with ``count`` torch threads (None: as now), then restore the count.

    The count is restored even when a library changed it behind torch's back inside the
    block (numba's OpenMP layer, which UMAP uses, does).
    """
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def keeps_torch_threads(function: Callable) -> Callable:
    """Decorate ``function`` to leave torch's thread count as it found it."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with torch_threads():
            return function(*args, **kwargs)

    return wrapper
