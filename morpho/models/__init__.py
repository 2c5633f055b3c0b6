"""LightningModules that train morpho's networks; they receive the networks ready-made."""

from morpho.models.autoencoder import AutoencoderModule
from morpho.models.base import MorphoModule
from morpho.models.checkpoint import MODEL_KINDS, load_model, read_checkpoint
from morpho.models.pixelcnn import PixelCNNModule
from morpho.models.sersic import SersicModule

__all__ = [
    "MODEL_KINDS",
    "AutoencoderModule",
    "MorphoModule",
    "PixelCNNModule",
    "SersicModule",
    "load_model",
    "read_checkpoint",
]
