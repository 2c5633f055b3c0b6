"""The autoencoder that embeds galaxies for the taxonomy.

Training objective, per batch of flux images ``x``:

- two random views ``(clean_k, noisy_k) = views(x)`` (:class:`NuisanceViews`:
  rotation, mirror, small zoom and shift; extra noise, blur and flux scale);
- reconstruction (denoising): ``decoder(encoder(P(noisy_1)))`` against ``P(clean_1)``,
  mean squared error in the preprocessed (arcsinh-stretched, standardised) space,
  where faint structure weighs as much as the core;
- invariance: VICReg (Bardes et al. 2022) between ``projector(encoder(P(noisy_1)))`` and
  ``projector(encoder(P(noisy_2)))``, so the embedding keeps what two views share
  (morphology) and drops what they do not (orientation, noise, blur, flux);
- optionally, decorrelation (``nuisance_weight``): the squared correlations, over
  the batch, between the embedding of view 1 and each galaxy's own log S/N (and, if
  asked, log size), measured on its image (no labels): both views of a galaxy share
  its S/N, so the invariance term alone leaves it in the embedding.

``P`` is the preprocessor fitted on the training split (optionally canonicalising
each galaxy first). Validation uses the reconstruction of un-augmented images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from morpho.data.augment import dihedral_views
from morpho.data.canonical import border_noise_sigma, measure_nuisances
from morpho.data.views import NuisanceViews
from morpho.models.base import MorphoModule
from morpho.models.losses import nuisance_correlation, vicreg_terms

__all__ = ["AutoencoderModule", "measured_nuisances"]


class AutoencoderModule(MorphoModule):
    """Train an encoder/decoder pair (and a VICReg projector) on galaxy images.

    Parameters
    ----------
    encoder : nn.Module
        ``(N, C, S, S) -> (N, d)``, e.g. :class:`morpho.nets.ConvEncoder`.
    decoder : nn.Module
        ``(N, d) -> (N, C, S, S)``.
    projector : nn.Module, optional
        ``(N, d) -> (N, D)`` expander for the VICReg terms; None trains a plain
        (denoising) autoencoder.
    views : NuisanceViews, optional
        Random views for training; None feeds the batch as it is.
    optimizer, scheduler
        Factories, see :class:`MorphoModule`.
    reconstruction_weight, invariance_weight, variance_weight, covariance_weight : float
        Weights of the loss terms (VICReg's defaults are 25, 25, 1).
    nuisance_weight : float
        Weight of the decorrelation of the embedding from the measured nuisances
        (:func:`measured_nuisances`, :func:`~morpho.models.losses.nuisance_correlation`);
        0 (default): off.
    nuisances : sequence of {"snr", "size"}
        Which measured nuisances the decorrelation removes (default: S/N only).
        Neither is a pure nuisance of the simulated six-class mix: the moment size
        depends on the profile's concentration (the class explains 65% of its
        variance), and the measured S/N is flux over noise times that size. With
        either, weight 25 took the morphology with the nuisance (probe accuracy 0.67
        against 0.90; benchmarks/RESULTS.md, taxonomy q7–q9).
    embedding_views : {"auto", "dihedral", "flips", "none"}
        Views averaged by :meth:`embed`: the 8 dihedral views, the 4 flips that keep
        the major axis of canonicalised images along x, or none. ``"auto"`` picks
        flips when the preprocessor aligns galaxies, dihedral otherwise.
    """

    kind = "autoencoder"
    net_names = ("encoder", "decoder", "projector")

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        projector: nn.Module | None = None,
        views: NuisanceViews | None = None,
        *,
        optimizer=None,
        scheduler=None,
        preprocessor=None,
        reconstruction_weight: float = 1.0,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        nuisance_weight: float = 0.0,
        nuisances: Sequence[str] = ("snr",),
        embedding_views: str = "auto",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, preprocessor=preprocessor)
        if embedding_views not in ("auto", "dihedral", "flips", "none"):
            raise ValueError(
                f"embedding_views must be auto, dihedral, flips or none, got {embedding_views!r}"
            )
        if not (isinstance(nuisance_weight, (int, float)) and nuisance_weight >= 0):
            raise ValueError(f"nuisance_weight must be a number >= 0, got {nuisance_weight!r}")
        nuisances = list(nuisances)
        if not nuisances or set(nuisances) - set(NUISANCES) or len(set(nuisances)) < len(nuisances):
            raise ValueError(
                f"nuisances must be distinct names among {list(NUISANCES)}, got {nuisances!r}"
            )
        self._nuisance_columns = [NUISANCES.index(name) for name in nuisances]
        self.save_hyperparameters(
            ignore=[
                "encoder",
                "decoder",
                "projector",
                "views",
                "optimizer",
                "scheduler",
                "preprocessor",
            ],
            logger=False,
        )
        self.encoder, self.decoder, self.projector = encoder, decoder, projector
        self.views = views

    def forward(self, images: Tensor) -> Tensor:
        """Embeddings ``(N, d)`` of flux images ``(N, C, S, S)`` (one view, no averaging)."""
        return self.encoder(self.preprocessor(images))

    def _view_mode(self) -> str:
        mode = self.hparams.embedding_views
        if mode != "auto":
            return mode
        canon = getattr(self.preprocessor, "canonicalize", None)
        return "flips" if canon is not None and getattr(canon, "align", False) else "dihedral"

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Orientation-invariant embeddings ``(N, d)``: the mean over symmetric views."""
        x = self.preprocessor(images)
        mode = self._view_mode()
        if mode == "none":
            return self.encoder(x)
        views = dihedral_views(x)
        if mode == "flips":
            views = views[[0, 2, 4, 6]]  # identity, rot180, flip-x, flip-y: major axis stays on x
        n = x.shape[0]
        return self.encoder(views.flatten(0, 1)).view(len(views), n, -1).mean(dim=0)

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        x = batch["image"]
        train_views = stage == "train" and self.views is not None
        if train_views:
            clean, noisy = self.views(x)
            inputs, target = self.preprocessor(noisy), self.preprocessor(clean)
        else:
            inputs = target = self.preprocessor(x)  # canonicalise and stretch once
        z = self.encoder(inputs)
        reconstruction = F.mse_loss(self.decoder(z), target)
        hp = self.hparams
        loss = hp.reconstruction_weight * reconstruction
        log = {"batch_size": x.shape[0], "sync_dist": stage != "train"}
        self.log(f"{stage}/reconstruction", reconstruction, **log)
        if train_views and self.projector is not None:
            _, noisy_2 = self.views(x)
            z_2 = self.encoder(self.preprocessor(noisy_2))
            inv, var, cov = vicreg_terms(self.projector(z), self.projector(z_2))
            loss = (
                loss
                + hp.invariance_weight * inv
                + hp.variance_weight * var
                + hp.covariance_weight * cov
            )
            terms = {
                f"{stage}/invariance": inv,
                f"{stage}/variance": var,
                f"{stage}/covariance": cov,
            }
            self.log_dict(terms, **log)
        if train_views and hp.get("nuisance_weight", 0.0):
            measured = measured_nuisances(x)[:, self._nuisance_columns]
            nuisance = nuisance_correlation(z, measured)
            loss = loss + hp.nuisance_weight * nuisance
            self.log(f"{stage}/nuisance", nuisance, **log)
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        return loss


#: The columns of :func:`measured_nuisances`.
NUISANCES = ("snr", "size")


@torch.no_grad()
def measured_nuisances(images: Tensor) -> Tensor:
    """Log S/N and log size of each ``(N, C, H, W)`` flux image, (N, 2), from the image alone.

    On the sum of the bands: the adaptive-moment size of
    :func:`~morpho.data.canonical.measure_nuisances` and the stamp's flux over the
    border noise σ times that size (the S/N within the galaxy's own area, up to a
    constant).
    """
    measured = measure_nuisances(images)
    size = measured["size"]
    noise = border_noise_sigma(images.sum(dim=1, keepdim=True))[:, 0].clamp_min(1e-12)
    snr = measured["flux"].clamp_min(1e-12) / (noise * size)
    return torch.stack([snr.log(), size.log()], dim=1)
