"""``morpho-sample``: draw galaxy images from a PixelCNN checkpoint.

Writes ``samples.fits``, an ``(N, C, H, W)`` float32 cube of flux whose header records
the morpho version, the checkpoint, the seed, label, sampler and quantizer, and
``samples.png``, a grid of the first samples.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.cli._drawing import draw_cards, open_draw
from morpho.config import config_dir
from morpho.density.generate import draw_samples
from morpho.density.outputs import (
    provenance_header,
    save_samples_picture,
    write_cube,
)

__all__ = ["main", "sample"]

log = logging.getLogger(__name__)


def sample(cfg: DictConfig) -> dict[str, Path]:
    """Draw ``cfg.n`` images from the PixelCNN checkpoint ``cfg.ckpt_path``.

    Returns
    -------
    dict
        Name -> path of every file written.
    """
    model, cube, picture = open_draw(cfg, count_key="n", name="samples")
    levels = draw_samples(
        model,
        cfg.n,
        seed=cfg.seed,
        label=cfg.label,
        cached=cfg.cached,
        batch_size=cfg.batch_size,
    )
    flux = model.quantizer.dequantize(levels).numpy()
    header = provenance_header(
        cfg.ckpt_path,
        model.quantizer,
        {
            **draw_cards(cfg),
            "BATCHSZ": (int(cfg.batch_size), "images drawn together (with SEED: the images)"),
        },
    )
    write_cube(cube, flux, header, overwrite=cfg.overwrite)
    save_samples_picture(picture, flux[: int(cfg.show)])
    log.info("Drew %d images of shape %s", len(flux), tuple(flux.shape[1:]))
    for path in (cube, picture):
        log.info("Wrote %s", path)
    return {cube.name: cube, picture.name: picture}


@hydra.main(config_path=config_dir(), config_name="sample", version_base="1.3")
@report_user_errors("morpho-sample")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    sample(cfg)


if __name__ == "__main__":
    main()
