"""Rebuildable modules: record constructor arguments, rebuild from them."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

__all__ = ["build_from_config", "remember_init"]


def remember_init(init: Callable) -> Callable:
    """Decorate ``__init__`` to record its arguments as ``self.init_config``.

    The record is ``{"target": "<module>.<class>", "kwargs": {...}}``.

    Only plain values (numbers, strings, lists, dicts, None) can be recorded; a
    module argument is recorded through its own ``init_config``.
    """

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = inspect.signature(init).bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        recorded = {k: _record(v) for k, v in bound.arguments.items() if k != "self"}
        cls = type(self)
        self.init_config = {"target": f"{cls.__module__}.{cls.__qualname__}", "kwargs": recorded}

    return wrapper


def _record(value: Any) -> Any:
    if isinstance(value, nn.Module):
        if not hasattr(value, "init_config"):
            raise TypeError(f"{type(value).__name__} does not record its init_config")
        return {"__module__": value.init_config}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):  # dict, or a Hydra DictConfig
        return {str(k): _record(v) for k, v in value.items()}
    if isinstance(value, Sequence):  # list, tuple, or a Hydra ListConfig
        return [_record(v) for v in value]
    raise TypeError(f"cannot record constructor argument of type {type(value).__name__}")


def build_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a module from its ``init_config`` (only ``morpho.`` classes are allowed)."""
    target = config["target"]
    if not target.startswith("morpho."):
        raise ValueError(f"refusing to build {target!r}: only morpho classes can be rebuilt")
    module_name, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    kwargs = {k: _rebuild(v) for k, v in config["kwargs"].items()}
    return cls(**kwargs)


def _rebuild(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__module__"}:
        return build_from_config(value["__module__"])
    if isinstance(value, dict):
        return {k: _rebuild(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebuild(v) for v in value]
    return value
