"""What ``morpho-sample`` and ``morpho-complete`` share: checks, the model, header cards."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from morpho.density.generate import check_count, check_label
from morpho.models import load_model
from morpho.models.pixelcnn import PixelCNNModule
from morpho.utils import check_new

__all__ = ["draw_cards", "open_draw"]


def open_draw(cfg: DictConfig, *, count_key: str, name: str) -> tuple[PixelCNNModule, Path, Path]:
    """Check the count and the outputs, load the checkpoint and check the label.

    Parameters
    ----------
    cfg : DictConfig
        The command's config (``output_dir``, ``overwrite``, ``ckpt_path``, ``label``
        and ``count_key``).
    count_key : str
        The key of the number of images to draw (``n``, ``n_samples``).
    name : str
        Stem of the outputs: ``<output_dir>/<name>.fits`` and ``.png``.

    Returns
    -------
    model, cube, picture
        The PixelCNN and the paths of the FITS cube and the picture.

    Raises
    ------
    ValueError
        If the count is not a positive integer, or the label is one the model cannot draw.
    FileExistsError
        If the cube exists and ``overwrite`` is false.
    """
    check_count(count_key, cfg[count_key])
    out = Path(cfg.output_dir)
    cube, picture = out / f"{name}.fits", out / f"{name}.png"
    check_new([cube], overwrite=cfg.overwrite)
    model = load_model(cfg.ckpt_path, kind="pixelcnn")
    check_label(model, cfg.label, origin=f"checkpoint {cfg.ckpt_path}")
    return model, cube, picture


def draw_cards(cfg: DictConfig) -> dict[str, tuple]:
    """FITS header cards of a draw: its seed, label and sampler."""
    return {
        "SEED": (int(cfg.seed), "seed of the draw"),
        "LABEL": (-1 if cfg.label is None else int(cfg.label), "label drawn (-1: none)"),
        "CACHED": (bool(cfg.cached), "cached sampler (else naive; same images)"),
    }
