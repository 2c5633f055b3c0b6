"""Galaxy data: readers, the GalSim simulator, preprocessing and the DataModule.

Names are imported lazily, so that ``morpho.data.simulate`` (used in rendering
worker processes) does not pay for importing torch and Lightning.
"""

from __future__ import annotations

from morpho.utils import lazy_exports

__all__ = [
    "Augment",
    "DataError",
    "GalaxyDataModule",
    "GalaxyDataset",
    "Preprocessor",
    "make_stretch",
    "noise_entropy_bits",
    "open_source",
]

_WHERE = {
    "Augment": "morpho.data.augment",
    "DataError": "morpho.data.errors",
    "GalaxyDataModule": "morpho.data.datamodule",
    "GalaxyDataset": "morpho.data.dataset",
    "Preprocessor": "morpho.data.preprocess",
    "make_stretch": "morpho.data.stretches",
    "noise_entropy_bits": "morpho.data.entropy",
    "open_source": "morpho.data.sources",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
