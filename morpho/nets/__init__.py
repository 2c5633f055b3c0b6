"""Plain ``torch.nn.Module`` networks. Nothing here imports Lightning.

Every network records the arguments it was built with (``init_config``), so
that a checkpoint can rebuild it without the Hydra config that made it.
"""

from morpho.nets.autoencoder import ConvDecoder, ConvEncoder, Projector
from morpho.nets.base import build_from_config, remember_init
from morpho.nets.pixelcnn import PixelCNN
from morpho.nets.sersic import FastEncoder, SersicHead

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "FastEncoder",
    "PixelCNN",
    "Projector",
    "SersicHead",
    "build_from_config",
    "remember_init",
]
