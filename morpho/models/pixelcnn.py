"""PixelCNN density model: exact likelihoods (bits/dim), samples and completions.

Per batch of flux images: :class:`morpho.density.quantize.Quantizer` turns them
into integer levels (the clipped fraction is logged), the network
(:class:`morpho.nets.pixelcnn.PixelCNN`) gives a discretised logistic mixture for
every pixel given the pixels before it, and the loss is the exact negative
log-likelihood in bits per dimension (pixel × band):
``-Σ log2 p(k_ij | k_<ij) / (C H W)``.

Conditioning (``condition``): ``"label"`` on the catalog's integer label
(``data.label_key``: a class, or a taxonomy cluster joined into the catalog);
``"vector"`` on numeric catalog columns (``data.columns``: e.g. an embedding).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from morpho.data.augment import dihedral_views
from morpho.density.anomaly import bits_per_dim
from morpho.density.logistic import mixture_log_prob
from morpho.density.quantize import Quantizer
from morpho.density.sampling import cached_sample, draw_uniforms, naive_sample
from morpho.models.base import MorphoModule
from morpho.nets.pixelcnn import PixelCNN

__all__ = ["CONDITIONS", "SYMMETRIES", "PixelCNNModule", "check_symmetry"]

CONDITIONS = ("none", "label", "vector")

#: What ``symmetry`` may be in :meth:`PixelCNNModule.log_likelihood` (and ``morpho-score``).
SYMMETRIES = (None, "dihedral")


def check_symmetry(symmetry: str | None) -> None:
    """Raise ValueError unless ``symmetry`` is one of :data:`SYMMETRIES`."""
    if symmetry not in SYMMETRIES:
        raise ValueError(
            f"symmetry must be None (null in a config) or 'dihedral', got {symmetry!r}"
        )


class PixelCNNModule(MorphoModule):
    """Train a PixelCNN on quantised galaxy images, then score, sample and complete.

    Parameters
    ----------
    net : PixelCNN
        The network; its ``in_channels`` is the number of bands.
    quantizer : Quantizer or mapping
        Quantisation of flux images (a mapping of its arguments when rebuilt from a
        checkpoint).
    condition : {"none", "label", "vector"}
        What the network is conditioned on (it must be built for it: ``n_classes`` or
        ``condition_dim``).
    optimizer, scheduler, preprocessor
        See :class:`MorphoModule`; the preprocessor is not used (the quantizer is the
        model's whole view of pixels).
    """

    kind = "pixelcnn"
    net_names = ("net",)

    def __init__(
        self,
        net: PixelCNN,
        quantizer: Quantizer | Mapping | None = None,
        *,
        condition: str = "none",
        optimizer=None,
        scheduler=None,
        preprocessor=None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, preprocessor=preprocessor)
        if quantizer is None:
            quantizer = Quantizer()
        elif not isinstance(quantizer, Quantizer):
            quantizer = Quantizer(**dict(quantizer))
        if condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
        if (condition == "label") != bool(net.n_classes) or (condition == "vector") != bool(
            net.condition_dim
        ):
            raise ValueError(
                f"condition={condition!r} needs a net built for it: n_classes > 0 for 'label', "
                f"condition_dim > 0 for 'vector', neither for 'none' (got n_classes="
                f"{net.n_classes}, condition_dim={net.condition_dim})"
            )
        self.save_hyperparameters(
            ignore=["net", "optimizer", "scheduler", "preprocessor"], logger=False
        )
        self.hparams["quantizer"] = quantizer.describe()
        self.net = net
        self.quantizer = quantizer
        # Images seen in training per label (which labels a sample may be conditioned on),
        # and the (C, H, W) of the training images (the default size of samples).
        self.register_buffer("label_counts", torch.zeros(max(net.n_classes, 1), dtype=torch.int64))
        self.register_buffer("image_shape", torch.zeros(3, dtype=torch.int64))
        self._epoch_counts: Tensor | None = None
        self._recorded_shape: tuple[int, ...] | None = None

    def setup(self, stage: str) -> None:
        """Warn when the data's augmentation interpolates pixels (no preprocessor is needed)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        augment = getattr(datamodule, "augment", None)
        if augment is not None and (
            getattr(augment, "rotate", False) or getattr(augment, "max_shift", 0)
        ):
            rank_zero_warn(
                "the data's augmentation rotates by arbitrary angles or shifts by sub-pixel "
                "amounts: that interpolates pixels and changes their noise, so the likelihood "
                "is no longer that of the survey's images. Set data.augment.rotate=false "
                "data.augment.max_shift=0 (or use experiment=density)"
            )

    # -- likelihood --------------------------------------------------------------------
    def _conditioning(self, labels, vectors, n: int) -> dict[str, Tensor | None]:
        condition = self.hparams.condition
        if condition == "label":
            if labels is None:
                raise ValueError("this model is conditioned on labels: pass labels (N,)")
            if not isinstance(labels, Tensor):  # a copy: pandas may hand out read-only arrays
                labels = torch.from_numpy(np.array(labels, dtype=np.int64))
            labels = labels.to(device=self.device, dtype=torch.int64).reshape(-1)
            if len(labels) != n:
                raise ValueError(f"got {len(labels)} labels for {n} images")
            self._check_labels(labels)
            return {"labels": labels, "vectors": None}
        if condition == "vector":
            if vectors is None:
                raise ValueError("this model is conditioned on vectors: pass vectors (N, D)")
            if not isinstance(vectors, Tensor):
                vectors = torch.from_numpy(np.array(vectors, dtype=np.float32))
            vectors = vectors.to(device=self.device, dtype=torch.float32)
            if vectors.shape != (n, self.net.condition_dim):
                raise ValueError(
                    f"vectors must have shape (N, D) = ({n}, {self.net.condition_dim}), "
                    f"got {tuple(vectors.shape)}"
                )
            return {"labels": None, "vectors": vectors}
        return {"labels": None, "vectors": None}

    def _check_labels(self, labels: Tensor) -> None:
        outside = (labels < 0) | (labels >= self.net.n_classes)
        if outside.any():
            raise ValueError(
                f"label(s) {sorted(set(labels[outside].tolist()))} are outside the model's "
                f"labels 0 .. {self.net.n_classes - 1}"
            )
        bad = torch.zeros_like(labels, dtype=torch.bool)
        if not self.training and self.label_counts.sum() > 0:
            bad = self.label_counts[labels] == 0
        if bad.any():
            seen = torch.nonzero(self.label_counts).flatten().tolist()
            raise ValueError(
                f"label(s) {sorted(set(labels[bad].tolist()))} were never seen in training; "
                f"this model knows labels {seen}"
            )

    def _levels(self, images: Tensor, *, strict: bool) -> tuple[Tensor, Tensor]:
        """Levels on the model's device and the clipped fraction (a () tensor, not read
        back from the device)."""
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if images.shape[1] != self.net.in_channels:
            raise ValueError(
                f"images have {images.shape[1]} band(s) but this model was trained on "
                f"{self.net.in_channels}"
            )
        quantized = self.quantizer.quantize(images.detach(), strict=strict)  # on their device
        return quantized.levels.to(self.device), quantized.below + quantized.above

    def pixel_log_prob(self, levels: Tensor, labels=None, vectors=None) -> Tensor:
        """ln p of every pixel given those before it, (N, H, W), for (N, C, H, W) levels."""
        cond = self._conditioning(labels, vectors, len(levels))
        x = self.quantizer.network_input(levels)
        params = self.net(x, **cond)
        return mixture_log_prob(
            levels,
            params,
            n_mix=self.net.n_mix,
            scale=self.quantizer.level_scale,
            component=self.net.component,
        )

    @torch.no_grad()
    def log_likelihood(
        self,
        images: Tensor,
        labels=None,
        vectors=None,
        *,
        strict: bool = True,
        symmetry: str | None = None,
    ) -> dict[str, Tensor]:
        """Exact log-likelihood of flux images under the model.

        Parameters
        ----------
        images : (N, C, H, W) float tensor
            Flux images in the quantizer's units.
        labels, vectors : optional
            Conditioning, when the model is conditional.
        strict : bool
            Refuse images with pixels outside the quantisation range (default) instead
            of clipping them.
        symmetry : {None, "dihedral"}
            None: the likelihood of the image as it is, one pass. ``"dihedral"``: that of
            the mixture ``p(x) = 1/8 Σ_g p_net(g x)`` over the 8 quarter turns and mirror
            images ``g`` of square images (8 passes). Each ``g`` permutes the pixels, so
            every term is a normalised distribution over images and so is their mean: an
            exact likelihood, never below the single pass by more than ln 8 nats per
            image, and above it where the network predicts some orientations of a galaxy
            better than others (it was trained on all of them).

        Returns
        -------
        dict of (N,) tensors
            ``log_likelihood`` (nats, of the quantised image), ``bits_per_dim``.

        Raises
        ------
        ValueError
            Wrong band count, pixels outside the quantisation range (``strict``),
            missing or unseen conditioning.
        """
        levels, _ = self._levels(images, strict=strict)
        log_p = self.image_log_prob(levels, labels, vectors, symmetry=symmetry)
        dims = levels[0].numel()
        return {"log_likelihood": log_p, "bits_per_dim": bits_per_dim(log_p, dims)}

    def image_log_prob(
        self,
        levels: Tensor,
        labels=None,
        vectors=None,
        *,
        symmetry: str | None = None,
        as_is: Tensor | None = None,
    ) -> Tensor:
        """ln p of each (C, H, W) image of ``levels``, (N,) nats; ``symmetry`` as in
        :meth:`log_likelihood`. ``as_is`` (N,), optional: ln p of the images as they
        are, already computed, which saves the dihedral mixture one of its 8 passes."""
        check_symmetry(symmetry)
        if symmetry is None:
            return self.pixel_log_prob(levels, labels, vectors).sum(dim=(1, 2))
        views = dihedral_views(levels)  # (8, N, C, H, W); views[0] is the image as it is
        terms = [self.pixel_log_prob(view, labels, vectors).sum(dim=(1, 2)) for view in views[1:]]
        first = (
            as_is.to(terms[0])
            if as_is is not None
            else self.image_log_prob(levels, labels, vectors)
        )
        stacked = torch.stack([first, *terms])
        return torch.logsumexp(stacked.double(), dim=0).sub(math.log(len(views))).to(stacked)

    # -- sampling ----------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        labels=None,
        vectors=None,
        image_size: tuple[int, int] | None = None,
        cached: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``n`` images; returns their levels, (N, C, H, W) int64.

        ``image_size`` defaults to the training images' size; ``labels`` (N,) or
        ``vectors`` (N, D) condition a conditional model. The same seed gives the same
        images with ``cached`` True or False. :meth:`Quantizer.dequantize` turns levels
        back into flux.
        """
        if int(n) != n or n <= 0:
            raise ValueError(f"the number of samples must be a positive integer, got {n}")
        h, w = image_size or self._trained_size()
        uniforms = draw_uniforms(int(n), self.net.in_channels, h, w, seed=seed, dtype=dtype)
        return self._run_sampler(uniforms, labels, vectors, cached=cached)

    @torch.no_grad()
    def complete(
        self,
        images: Tensor,
        mask: Tensor,
        *,
        seed: int = 0,
        labels=None,
        vectors=None,
        cached: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Redraw the masked pixels of flux images, each given all pixels before it.

        Parameters
        ----------
        images : (N, C, H, W) float tensor
            Flux images (masked pixels may hold anything finite).
        mask : (N, H, W) or (H, W) bool tensor
            True where pixels are to be drawn.

        Returns
        -------
        (N, C, H, W) int64 tensor
            Levels: the unmasked pixels quantised, the masked ones drawn.
        """
        levels, _ = self._levels(torch.nan_to_num(torch.as_tensor(images)), strict=False)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.ndim == 2:
            mask = mask.expand(len(levels), *mask.shape)
        n, c, h, w = levels.shape
        uniforms = draw_uniforms(n, c, h, w, seed=seed, dtype=dtype)
        return self._run_sampler(
            uniforms, labels, vectors, cached=cached, known=levels.cpu(), mask=mask
        )

    def _run_sampler(self, uniforms, labels, vectors, *, cached: bool, **completion) -> Tensor:
        cond = self._conditioning(labels, vectors, len(uniforms))
        cond = {k: None if v is None else v.cpu() for k, v in cond.items()}
        net = self.net
        if uniforms.dtype != torch.float32 or self.device.type != "cpu" or net.training:
            net = copy.deepcopy(net).to(device="cpu", dtype=uniforms.dtype).eval()
        sampler = cached_sample if cached else naive_sample
        return sampler(net, self.quantizer, uniforms, **cond, **completion)

    def _trained_size(self) -> tuple[int, int]:
        if int(self.image_shape[1]) == 0:
            raise ValueError("this model has not been trained: pass image_size=(H, W)")
        return int(self.image_shape[1]), int(self.image_shape[2])

    # -- training ----------------------------------------------------------------------
    def _record_shape(self, shape: torch.Size) -> None:
        """Keep the training images' (C, H, W) in the ``image_shape`` buffer: copied to
        the device when it changes, not at every step."""
        if tuple(shape) != self._recorded_shape:
            self.image_shape.copy_(torch.tensor(tuple(shape)))
            self._recorded_shape = tuple(shape)

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        images = batch["image"]
        levels, clipped = self._levels(images, strict=False)
        labels = batch.get("label")
        vectors = batch.get("columns")
        log_p = self.pixel_log_prob(levels, labels, vectors)  # checks the labels
        if stage == "train":
            self._record_shape(levels.shape[1:])
            if self.hparams.condition == "label":
                labels = labels.long()
                counts = torch.zeros_like(self.label_counts).scatter_add_(
                    0, labels, torch.ones_like(labels)
                )
                seen = self._epoch_counts
                self._epoch_counts = counts if seen is None else seen + counts
        bits = -log_p.mean() / (levels.shape[1] * math.log(2))
        log = {"batch_size": len(levels), "sync_dist": stage != "train"}
        self.log(f"{stage}/loss", bits, prog_bar=True, **log)
        self.log(f"{stage}/bits_per_dim", bits, **log)
        self.log(f"{stage}/clipped_fraction", clipped, **log)
        return bits

    def on_train_epoch_end(self) -> None:
        """Add the labels every rank saw in this epoch to ``label_counts`` (all ranks).

        Counted apart from the buffer during the epoch: DDP copies rank 0's buffers to
        the other ranks at every step, which would lose the other ranks' counts.
        """
        counts, self._epoch_counts = self._epoch_counts, None
        if counts is None:
            counts = torch.zeros_like(self.label_counts)
        if self.trainer.world_size > 1:
            counts = self.all_gather(counts).sum(dim=0)
        self.label_counts += counts.to(self.label_counts)
