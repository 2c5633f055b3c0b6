"""Density models of quantised galaxy images: quantisation, the mixture likelihood,
samplers, baselines and injected oddities for the anomaly benchmark.

The network is :class:`morpho.nets.PixelCNN` and the trained model
:class:`morpho.models.PixelCNNModule`. Names are imported lazily (the network
module imports :mod:`morpho.density.logistic`, and the samplers import the network).
"""

from __future__ import annotations

from morpho.utils import lazy_exports

__all__ = [
    "ODDITIES",
    "SCORES",
    "LevelScale",
    "NeighbourGaussian",
    "QuantizedImages",
    "Quantizer",
    "cached_sample",
    "draw_uniforms",
    "inject",
    "local_scores",
    "mixture_log_prob",
    "naive_sample",
    "sample_mixture",
    "surprise_map",
]

_WHERE = {
    "ODDITIES": "morpho.density.oddities",
    "SCORES": "morpho.density.anomaly",
    "NeighbourGaussian": "morpho.density.baseline",
    "inject": "morpho.density.oddities",
    "local_scores": "morpho.density.anomaly",
    "surprise_map": "morpho.density.anomaly",
    "LevelScale": "morpho.density.logistic",
    "QuantizedImages": "morpho.density.quantize",
    "Quantizer": "morpho.density.quantize",
    "cached_sample": "morpho.density.sampling",
    "draw_uniforms": "morpho.density.sampling",
    "mixture_log_prob": "morpho.density.logistic",
    "naive_sample": "morpho.density.sampling",
    "sample_mixture": "morpho.density.logistic",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
