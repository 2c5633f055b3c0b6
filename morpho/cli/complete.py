"""``morpho-complete``: redraw the masked pixels of an image with a PixelCNN checkpoint.

Writes ``completions.fits``, an ``(N, C, H, W)`` float32 cube of flux (extensions
``MASK``, 1 = redrawn, and ``ORIGINAL``, the input image), and ``completions.png``
(original, mask, completions).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from morpho.cli._common import report_user_errors
from morpho.cli._drawing import draw_cards, open_draw
from morpho.config import config_dir
from morpho.density.completion import complete_image, make_mask, read_image
from morpho.density.outputs import (
    provenance_header,
    save_completions_picture,
    write_cube,
)

__all__ = ["complete", "main"]

log = logging.getLogger(__name__)


def complete(cfg: DictConfig) -> dict[str, Path]:
    """Draw ``cfg.n_samples`` completions of ``cfg.image`` under ``cfg.mask``.

    Returns
    -------
    dict
        Name -> path of every file written.
    """
    model, cube, picture = open_draw(cfg, count_key="n_samples", name="completions")
    image = read_image(cfg.image, model)
    mask = make_mask(
        image.shape[1:],
        file=cfg.mask.file,
        rows_from=cfg.mask.rows_from,
        columns=cfg.mask.columns,
    )
    levels = complete_image(
        model,
        image,
        mask,
        n_samples=cfg.n_samples,
        seed=cfg.seed,
        label=cfg.label,
        cached=cfg.cached,
        origin=str(cfg.image),
    )
    flux = model.quantizer.dequantize(levels).numpy()
    header = provenance_header(
        cfg.ckpt_path,
        model.quantizer,
        {
            "IMAGE": (str(Path(cfg.image).resolve()), "completed image"),
            "NMASKED": (int(mask.sum()), "pixels redrawn (per band)"),
            **draw_cards(cfg),
        },
    )
    extensions = {"MASK": mask.astype(np.uint8), "ORIGINAL": image}
    write_cube(cube, flux, header, extensions=extensions, overwrite=cfg.overwrite)
    save_completions_picture(picture, image, mask, flux[: int(cfg.show)])
    log.info("Drew %d completions of %d masked pixels", len(flux), int(mask.sum()))
    for path in (cube, picture):
        log.info("Wrote %s", path)
    return {cube.name: cube, picture.name: picture}


@hydra.main(config_path=config_dir(), config_name="complete", version_base="1.3")
@report_user_errors("morpho-complete")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    complete(cfg)


if __name__ == "__main__":
    main()
