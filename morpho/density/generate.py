"""Draw new galaxy images from a trained PixelCNN, in batches, reproducibly.

Batch ``b`` (of ``batch_size`` images) is drawn with the seed
``SeedSequence([seed, b])``, so the same ``seed`` and ``batch_size`` give the same
images, and no two batches (nor two runs with different seeds) share their uniforms.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from morpho.models.pixelcnn import PixelCNNModule

__all__ = ["batch_seed", "check_count", "check_label", "draw_samples"]


def check_count(name: str, value: object) -> int:
    """``value`` as an int, if it is a positive integer; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_label(model: PixelCNNModule, label: int | None, *, origin: str = "the model") -> None:
    """Refuse a label for an unconditional model, and no label for a label-conditioned one.

    Labels the model never saw in training are refused by the model itself when sampling.

    Raises
    ------
    ValueError
        Naming ``origin`` (e.g. the checkpoint) and what to pass instead.
    """
    condition = model.hparams.condition
    if condition == "vector":
        raise ValueError(
            f"{origin} is conditioned on catalog columns (condition='vector'); this command "
            "draws from label-conditioned or unconditional models only: use "
            "PixelCNNModule.sample(n, vectors=...) instead"
        )
    known = torch.nonzero(model.label_counts).flatten().tolist()
    if condition == "none" and label is not None:
        raise ValueError(
            f"{origin} is an unconditional model (condition='none'), but label={label} was "
            "given; drop label"
        )
    if condition == "label" and label is None:
        raise ValueError(f"{origin} is conditioned on labels: pass label=, one of {known}")
    if label is not None and (isinstance(label, bool) or int(label) != label):
        raise ValueError(f"label must be an integer, got {label!r}")


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch ``batch`` of a run seeded with ``seed`` (a 63-bit integer)."""
    state = np.random.SeedSequence([int(seed), int(batch)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def draw_samples(
    model: PixelCNNModule,
    n: int,
    *,
    seed: int = 0,
    label: int | None = None,
    cached: bool = True,
    batch_size: int = 64,
) -> Tensor:
    """Draw ``n`` images from ``model``, ``batch_size`` at a time.

    Parameters
    ----------
    model : PixelCNNModule
        Trained; the images have its training size ``model.image_shape`` (C, H, W).
    n : int
        Number of images, > 0.
    seed : int
        With ``batch_size``, fixes the images (see the module).
    label : int, optional
        The class to draw, for a label-conditioned model (required there, refused
        otherwise).
    cached : bool
        Use the cached sampler (the same images as the naive one, much faster).
    batch_size : int
        Images drawn together, > 0.

    Returns
    -------
    (n, C, H, W) int64 tensor
        Levels; :meth:`Quantizer.dequantize` turns them into flux.

    Raises
    ------
    ValueError
        If ``n`` or ``batch_size`` is not a positive integer, or the label does not fit the
        model (see :func:`check_label`).
    """
    n, batch_size = check_count("n", n), check_count("batch_size", batch_size)
    check_label(model, label)
    batches = []
    for number, start in enumerate(range(0, n, batch_size)):
        size = min(batch_size, n - start)
        labels = None if label is None else torch.full((size,), int(label), dtype=torch.int64)
        batches.append(
            model.sample(size, seed=batch_seed(seed, number), labels=labels, cached=cached)
        )
    return torch.cat(batches)
