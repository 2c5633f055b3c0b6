"""Load a morpho model from a Lightning checkpoint, without the config that trained it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from morpho.data.errors import DataError
from morpho.data.preprocess import Preprocessor
from morpho.data.stretches import make_stretch
from morpho.models.base import CHECKPOINT_KEY, MorphoModule
from morpho.nets.base import build_from_config

__all__ = ["MODEL_KINDS", "load_model", "read_checkpoint"]


def _kinds() -> dict[str, type[MorphoModule]]:
    from morpho.models.autoencoder import AutoencoderModule
    from morpho.models.pixelcnn import PixelCNNModule
    from morpho.models.sersic import SersicModule

    return {cls.kind: cls for cls in (AutoencoderModule, PixelCNNModule, SersicModule)}


#: Model kinds that :func:`load_model` knows.
MODEL_KINDS = ("autoencoder", "pixelcnn", "sersic")


def read_checkpoint(path: str | os.PathLike, *, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check it is a morpho model.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataError
        If the file is not a torch checkpoint, not a morpho checkpoint, or of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise DataError(f"{path} is not a readable torch checkpoint ({err})") from err
    record = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(record, dict) or "kind" not in record:
        raise DataError(f"{path} is not a morpho checkpoint (it has no '{CHECKPOINT_KEY}' record)")
    if kind is not None and record["kind"] != kind:
        raise DataError(
            f"{path} holds a morpho {record['kind']!r} model, but a {kind!r} model is needed; "
            f"pass a checkpoint trained with model={kind}"
        )
    return checkpoint


def _preprocessor(description: dict[str, Any] | None) -> Preprocessor | None:
    if description is None:
        return None
    canon = description.get("canonicalize")
    return Preprocessor(
        make_stretch(description["stretch"]),
        canonicalize=None if canon is None else build_from_config(canon),
        normalize=description["normalize"],
    )


def load_model(path: str | os.PathLike, *, kind: str | None = None) -> MorphoModule:
    """Rebuild a trained morpho model from its checkpoint, in eval mode on the CPU.

    Parameters
    ----------
    path : path-like
        A checkpoint written while training a morpho model.
    kind : str, optional
        The model kind required (e.g. ``"autoencoder"``); any kind if None.

    Returns
    -------
    MorphoModule
        The model with its networks and fitted preprocessor.
    """
    checkpoint = read_checkpoint(path, kind=kind)
    record = checkpoint[CHECKPOINT_KEY]
    cls = _kinds().get(record["kind"])
    if cls is None:
        raise DataError(f"{path} holds an unknown morpho model kind {record['kind']!r}")
    nets = {name: build_from_config(config) for name, config in record["nets"].items()}
    hparams = checkpoint.get("hyper_parameters", {})
    model = cls(**nets, preprocessor=_preprocessor(record["preprocessor"]), **hparams)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise DataError(
            f"{path}: its weights do not fit a {record['kind']!r} model of this morpho "
            f"version (the checkpoint was written by morpho {record.get('version', '?')}): {err}"
        ) from err
    return model.eval()
