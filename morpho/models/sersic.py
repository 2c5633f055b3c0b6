"""Supervised Sérsic fitting: a CNN head with calibrated uncertainties.

Per batch of flux images with catalog columns ``(F, r_e [pix], n, q, PA [deg],
PSF FWHM)``: :class:`morpho.sersic.inputs.SersicInputs` scales each image by its
noise σ and turns it to its canonical orientation; the encoder and head give a
posterior (:mod:`morpho.sersic.likelihood`) whose negative log-likelihood is the
loss. After every validation epoch one temperature per parameter and per bin of
the stamp's S/N is fitted on the validation split so that the 68% and 95%
intervals hold what they claim, faint and bright galaxies alike; the
temperatures are saved with the weights they were fitted for.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from morpho.models.base import MorphoModule
from morpho.sersic.inputs import SersicInputs
from morpho.sersic.likelihood import (
    PARAMETERS,
    SersicPosterior,
    circular_sigma,
    coverage,
    decode,
    fit_binned_temperatures,
    negative_log_likelihood,
    raw_output_count,
    z_scores,
)
from morpho.sersic.pose import pa_from_canonical, pa_to_canonical
from morpho.utils import full_precision

__all__ = ["DEFAULT_COLUMNS", "SersicModule"]

#: Catalog columns of the simulated single-Sérsic data, in the order the module needs:
#: total flux, r_e (pixels, major axis), n, q, PA (degrees), PSF FWHM, PSF wing fraction.
DEFAULT_COLUMNS = (
    "total_flux",
    "sersic_r_e_pix",
    "sersic_n",
    "sersic_q",
    "sersic_pa_deg",
    "psf_fwhm_arcsec",
    "psf_wing_fraction",
)
PSF_UNITS = ("arcsec", "pix")


class SersicModule(MorphoModule):
    """Regress Sérsic parameters with uncertainties from galaxy images.

    Parameters
    ----------
    encoder : nn.Module
        ``(N, 1, S, S) -> (N, D)``, e.g. :class:`morpho.nets.FastEncoder` or the
        autoencoder's :class:`morpho.nets.ConvEncoder`.
    head : nn.Module
        ``(N, D), (N, 6) -> (N, 11)``, e.g. :class:`morpho.nets.SersicHead`.
    inputs : SersicInputs, optional
        Image preparation (band, stretch); the defaults if None.
    optimizer, scheduler, preprocessor
        See :class:`MorphoModule`; no preprocessor is needed (the inputs module
        has no fitted state).
    columns : sequence of 6 or 7 str
        Catalog columns holding total flux, r_e (pixels), n, q, PA (degrees), the
        PSF FWHM and, optionally, the PSF's wing fraction
        (:func:`morpho.sersic.psf.psf_wing_fraction`; a Gaussian PSF's when absent);
        only the PSF columns are needed to predict.
    psf_fwhm_unit : {"arcsec", "pix"}
        Unit of the PSF column; arcsec are divided by ``pixel_scale``.
    pixel_scale : float
        Arcsec per pixel, for the PSF column and the r_e in arcsec.
    beta : float
        β-NLL exponent (see :func:`morpho.sersic.likelihood.negative_log_likelihood`).
    pa_weight : float
        Weight of the position angle's term in the training loss (1: the likelihood's).
    shape_likelihood : {"separate", "ellipse"}
        q and PA as a Gaussian and a von Mises apart (the head gives 11 raw outputs),
        or as one Gaussian of the ellipticity components (10; see
        :mod:`morpho.sersic.likelihood`).
    calibration_bins : int
        Quantile bins of the stamp S/N, each with its own temperatures.
    encoder_checkpoint : str, optional
        An autoencoder checkpoint whose encoder weights start the encoder (its
        architecture must match); None trains from scratch.
    freeze_encoder : bool
        Keep the encoder's weights fixed (only the head trains).
    train_noise : float
        In training only, add fresh Gaussian noise of ``train_noise`` times each
        image's own noise σ (estimated from its border, as the inputs do) to the
        fitted band, drawn anew every time a galaxy is seen: a slightly deeper-noised
        exposure of the same galaxy, so the truth is unchanged, and a noise pattern
        the network cannot memorise over the epochs (S/N lowered by a factor
        ``1 / sqrt(1 + train_noise²)``). 0: off.
    noise_columns : (str, str, str), optional
        Train on *noiseless* images (simulated data: ``data.source.images_key=noiseless``)
        and draw their CCD noise here: the catalog columns holding each galaxy's sky
        level (ADU), read noise (e-) and gain (e-/ADU), which the batches' columns
        carry after ``columns``. Every pixel gets Gaussian noise of the CCD variance
        ``(max(m, 0) + sky) / gain + (read noise / gain)²`` of its noiseless value
        ``m``: fresh every time a galaxy is seen in training (the training images are
        then exactly as noisy as real ones, with a new noise pattern each epoch), and
        the same every epoch for a validation or test galaxy (drawn from its index).
        None: the images are used as they are.
    """

    kind = "sersic"
    net_names = ("encoder", "head", "inputs")

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        inputs: SersicInputs | None = None,
        *,
        optimizer=None,
        scheduler=None,
        preprocessor=None,
        columns: Sequence[str] = DEFAULT_COLUMNS,
        psf_fwhm_unit: str = "arcsec",
        pixel_scale: float = 0.2,
        beta: float = 0.5,
        pa_weight: float = 1.0,
        shape_likelihood: str = "separate",
        calibration_bins: int = 4,
        encoder_checkpoint: str | None = None,
        freeze_encoder: bool = False,
        train_noise: float = 0.0,
        noise_columns: Sequence[str] | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, preprocessor=preprocessor)
        if columns is None or len(columns) not in (6, 7):
            raise ValueError(
                "columns must name 6 or 7 catalog columns: flux, r_e (pix), n, q, PA (deg), "
                f"PSF FWHM [, PSF wing fraction]; got {columns}. Train on "
                "data=simulated_sersic, or set data.columns"
            )
        columns = [str(c) for c in columns]
        if psf_fwhm_unit not in PSF_UNITS:
            raise ValueError(f"psf_fwhm_unit must be one of {PSF_UNITS}, got {psf_fwhm_unit!r}")
        if not (isinstance(train_noise, (int, float)) and 0 <= train_noise <= 10):
            raise ValueError(f"train_noise must be a number in [0, 10], got {train_noise!r}")
        if noise_columns is not None:
            noise_columns = [str(c) for c in noise_columns]
            if len(noise_columns) != 3 or len(columns) != 7:
                raise ValueError(
                    "noise_columns must name 3 catalog columns (sky level [ADU], read noise "
                    f"[e-], gain [e-/ADU]) beside 7 columns (with the PSF wing fraction); got "
                    f"noise_columns={noise_columns} and columns={columns}"
                )
        if not (isinstance(pa_weight, (int, float)) and pa_weight > 0):
            raise ValueError(f"pa_weight must be a positive number, got {pa_weight!r}")
        raw_outputs = raw_output_count(shape_likelihood)
        self.save_hyperparameters(
            ignore=["encoder", "head", "inputs", "optimizer", "scheduler", "preprocessor"],
            logger=False,
        )
        self.hparams["columns"] = columns
        self.hparams["noise_columns"] = noise_columns
        self.inputs = inputs if inputs is not None else SersicInputs()
        _check_sizes(encoder, head, self.inputs, raw_outputs)
        self.encoder, self.head = encoder, head
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        self.register_buffer("temperature", torch.ones(calibration_bins, len(PARAMETERS)))
        self.register_buffer("temperature_edges", torch.zeros(calibration_bins - 1))
        # Training ranges, rows min/max: the input features, then the 4 transformed targets.
        width = self.inputs.n_features + 4
        self.register_buffer("train_range", torch.tensor([[math.inf] * width, [-math.inf] * width]))
        self._val_z: list[Tensor] = []
        # This rank's ranges of the current epoch, merged over ranks into train_range at
        # its end (a buffer updated in a step would be overwritten by DDP's broadcast).
        self._epoch_range: Tensor | None = None
        self._fused_encoder: tuple[nn.Module, tuple] | None = None

    # -- setup -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Start the encoder from an autoencoder checkpoint when one is configured."""
        path = self.hparams.encoder_checkpoint
        if stage == "fit" and path and not getattr(self, "_encoder_loaded", False):
            from morpho.models.checkpoint import read_checkpoint

            state = read_checkpoint(path, kind="autoencoder")["state_dict"]
            weights = {
                k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")
            }
            self.encoder.load_state_dict(weights)
            self._encoder_loaded = True

    # -- prediction --------------------------------------------------------------------
    def psf_fwhm_pix(self, psf_column: Tensor) -> Tensor:
        """PSF FWHM in pixels from the catalog's PSF column."""
        if self.hparams.psf_fwhm_unit == "arcsec":
            return psf_column / self.hparams.pixel_scale
        return psf_column

    def forward(
        self,
        images: Tensor,
        psf_fwhm_pix: Tensor,
        psf_wings: Tensor | None = None,
        *,
        bf16: bool = False,
    ):
        """Posterior of ``(N, C, S, S)`` flux images; returns ``(posterior, inputs batch)``.

        The posterior is in the canonical frame (see :mod:`morpho.sersic.pose`) and
        before temperatures; :meth:`predict` gives physical values. ``bf16`` runs
        the encoder in bfloat16 (autocast). The inputs, the head and the decoding run
        in float32 whatever the trainer's precision; only the encoder follows it.
        """
        batch = self.inputs(images, psf_fwhm_pix, psf_wings)
        # No autocast block unless asked: a disabled one would switch off the trainer's own
        # mixed precision (bf16-mixed) for the encoder.
        autocast = (
            torch.autocast(images.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        )
        encoder = self._encoder_for_mode()
        # A conditioned encoder also reads the scalars (PSF, S/N, shape).
        scalars = (batch.features,) if _condition_dim(self.encoder) else ()
        with autocast:
            features = encoder(batch.image, *scalars)
        with full_precision(features) as features:  # the head and decoding in float32
            raw = self.head(features, batch.features)
            shape = self.hparams.get("shape_likelihood", "separate")
            return decode(raw, batch.anchor, shape), batch

    def _encoder_for_mode(self) -> nn.Module:
        """In eval mode, the encoder with BatchNorm folded (when it can fold).

        The folded copy is rebuilt whenever a weight or statistic of the encoder has
        changed (tensor version counters) or moved to another device.
        """
        if self.training or not hasattr(self.encoder, "fused"):
            return self.encoder
        tensors = [*self.encoder.parameters(), *self.encoder.buffers()]
        key = (tensors[0].device, tuple(t._version for t in tensors), tuple(map(id, tensors)))
        if self._fused_encoder is None or self._fused_encoder[1] != key:
            fused = self.encoder.fused().to(memory_format=torch.channels_last)
            self._fused_encoder = (fused, key)  # a tuple: not a registered submodule
        return self._fused_encoder[0]

    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        psf_fwhm_pix: Tensor,
        psf_wings: Tensor | None = None,
        *,
        bf16: bool = False,
    ) -> dict[str, Tensor]:
        """Calibrated Sérsic parameters of ``(N, C, S, S)`` flux images.

        ``psf_fwhm_pix`` (N,) are the PSFs' FWHM in pixels and ``psf_wings`` (N,)
        their wing fractions (None: Gaussian PSFs).

        ``bf16=True`` runs the encoder in bfloat16: about twice as fast on CPUs with
        AVX-512 BF16 or AMX, at a cost in precision far below the errors (measured in
        ``benchmarks/sersic.py``).

        Returns
        -------
        dict of (N,) tensors
            ``flux`` (image units, total), ``r_e_pix``, ``r_e_arcsec``, ``n``, ``q``,
            ``pa_deg`` (from +x towards +y, [0, 180)); for each, ``*_err`` (half the
            calibrated 68% interval) and, for flux, r_e and n, the interval's ends
            ``*_lo`` / ``*_hi`` (asymmetric: these are log-normal); and
            ``out_of_range`` (True where the input or the prediction lies outside
            what the model saw in training).
        """
        posterior, batch = self(images, psf_fwhm_pix, psf_wings, bf16=bf16)
        temperature = self._temperatures(batch.features)
        mean, sigma = posterior.mean, posterior.sigma * temperature[:, :4]
        mean = mean.clone()
        mean[:, 0] = mean[:, 0] + batch.log_sigma
        out: dict[str, Tensor] = {}
        for i, name in enumerate(("flux", "r_e_pix", "n")):
            value, lo, hi = (
                mean[:, i].exp(),
                (mean[:, i] - sigma[:, i]).exp(),
                (mean[:, i] + sigma[:, i]).exp(),
            )
            out.update(
                {name: value, f"{name}_err": (hi - lo) / 2, f"{name}_lo": lo, f"{name}_hi": hi}
            )
        out["r_e_arcsec"] = out["r_e_pix"] * self.hparams.pixel_scale
        out["r_e_arcsec_err"] = out["r_e_pix_err"] * self.hparams.pixel_scale
        out["q"], out["q_err"] = mean[:, 3], sigma[:, 3]
        out["pa_deg"] = pa_from_canonical(posterior.pa_deg, batch.pose)
        out["pa_deg_err"] = torch.rad2deg(temperature[:, 4] * circular_sigma(posterior.kappa)) / 2
        observed = torch.cat([batch.features, posterior.mean], dim=1)
        low, high = self.train_range
        out["out_of_range"] = ((observed < low) | (observed > high)).any(dim=1)
        return out

    def predictor(self, *, bf16: bool = False, compile: bool = False) -> Callable[..., dict]:
        """:meth:`predict` as a function ``(images, psf_fwhm_pix[, psf_wings]) -> dict``.

        ``compile=True`` wraps it in :func:`torch.compile` (static shapes): a one-off
        cost of tens of seconds per batch shape, then the noise estimate, orientation
        and stretch run fused; worth it for large catalogs.
        """
        function = functools.partial(self.predict, bf16=bf16)
        return torch.compile(function, dynamic=False) if compile else function

    # -- training ----------------------------------------------------------------------
    def _temperatures(self, features: Tensor) -> Tensor:
        """(N, 5) temperatures of each galaxy, by the bin of its stamp S/N (features[:, 1])."""
        bins = torch.bucketize(features[:, 1].contiguous(), self.temperature_edges)
        return self.temperature[bins]

    def _targets(self, columns: Tensor, log_sigma: Tensor, pose) -> tuple[Tensor, Tensor]:
        flux, r_e, n, q, pa = columns[:, :5].unbind(dim=1)
        targets = torch.stack([flux.log() - log_sigma, r_e.log(), n.log(), q], dim=1)
        return targets, pa_to_canonical(pa, pose)

    def _update_range(self, features: Tensor, targets: Tensor) -> None:
        observed = torch.cat([features, targets], dim=1).detach()
        seen = self.train_range if self._epoch_range is None else self._epoch_range
        self._epoch_range = torch.stack(
            [
                torch.minimum(seen[0], observed.amin(dim=0)),
                torch.maximum(seen[1], observed.amax(dim=0)),
            ]
        )

    def on_train_epoch_end(self) -> None:
        """Merge the ranges every rank saw in this epoch into ``train_range`` (all ranks)."""
        seen = self.train_range if self._epoch_range is None else self._epoch_range
        self._epoch_range = None
        if self.trainer.world_size > 1:
            gathered = self.all_gather(seen)  # (ranks, 2, width)
            seen = torch.stack([gathered[:, 0].amin(dim=0), gathered[:, 1].amax(dim=0)])
        self.train_range.copy_(seen)

    def _noised(self, images: Tensor, sigma: Tensor) -> Tensor:
        """``images`` with fresh noise of ``train_noise`` times their (N,) σ in the fitted band."""
        band = self.inputs.band
        with full_precision(images) as images:
            scale = self.hparams.train_noise * sigma[:, None, None]
            noise = torch.randn_like(images[:, band]) * scale
            noised = images.clone()
            noised[:, band] += noise
        return noised

    def _renoised(self, noiseless: Tensor, columns: Tensor, indices: Tensor | None) -> Tensor:
        """Noiseless ``(N, C, H, W)`` images with CCD noise (see ``noise_columns``).

        ``indices`` (N,): draw each galaxy's noise from its dataset index (the same
        every epoch); None: fresh noise.
        """
        expected = len(self.hparams.columns) + 3
        if columns.shape[1] != expected:
            raise ValueError(
                f"noise_columns={self.hparams.noise_columns} needs the batches to carry "
                f"{expected} columns ({self.hparams.columns} then the noise columns), got "
                f"{columns.shape[1]}; set data.columns to both lists joined"
            )
        # Here, not at import: the simulator's package loads GalSim.
        from morpho.data.simulate.noise import ccd_variance

        with full_precision(noiseless) as noiseless:
            sky, read, gain = (c[:, None, None, None] for c in columns[:, -3:].unbind(dim=1))
            if ((gain <= 0) | (sky < 0) | (read < 0)).any():  # one device sync, not three
                raise ValueError(
                    f"noise columns {self.hparams.noise_columns} need sky >= 0, read noise "
                    ">= 0 and gain > 0"
                )
            variance = ccd_variance(noiseless, sky, read, gain)
            if indices is None:
                unit = torch.randn_like(noiseless)
            else:
                shape = noiseless.shape[1:]
                unit = torch.stack(
                    [
                        torch.randn(shape, generator=torch.Generator().manual_seed(int(i)))
                        for i in indices.tolist()
                    ]
                ).to(noiseless.device)
            return noiseless + unit * variance.sqrt()

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        columns, images = batch["columns"], batch["image"]
        if self.hparams.get("noise_columns"):
            fixed = None if stage == "train" else batch["index"]
            images = self._renoised(images, columns, fixed)
        wings = columns[:, 6] if columns.shape[1] > 6 else None
        fwhm = self.psf_fwhm_pix(columns[:, 5])
        clean = None
        if stage == "train" and self.hparams.get("train_noise", 0.0):
            # The clean images' inputs give the σ of the added noise and the training
            # ranges, which describe the training images, not their noised copies.
            with torch.no_grad():
                clean = self.inputs(images, fwhm, wings)
            images = self._noised(images, clean.log_sigma.exp())
        posterior, inputs = self(images, fwhm, wings)
        targets, pa = self._targets(columns, inputs.log_sigma, inputs.pose)
        loss = negative_log_likelihood(
            posterior,
            targets,
            pa,
            beta=self.hparams.beta,
            pa_weight=self.hparams.get("pa_weight", 1.0),
        ).mean()
        log = {"batch_size": len(columns), "sync_dist": stage != "train"}
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        if stage == "train":
            if clean is None:
                self._update_range(inputs.features, targets)
            else:
                clean_targets = self._targets(columns, clean.log_sigma, clean.pose)[0]
                self._update_range(clean.features, clean_targets)
            return loss
        self.log_dict(
            {f"{stage}/{k}": v for k, v in _errors(posterior, targets, pa).items()}, **log
        )
        z = z_scores(posterior, targets, pa)
        if stage == "val":
            self._val_z.append(torch.cat([z, inputs.features[:, 1:2]], dim=1).detach())
        else:
            calibrated = z / self._temperatures(inputs.features)
            for level in (68, 95):
                value = coverage(calibrated, level=level / 100).mean()
                self.log(f"test/coverage{level}", value, **log)
        return loss

    def on_validation_epoch_end(self) -> None:
        """Fit the temperatures on this epoch's validation predictions (all ranks)."""
        if not self._val_z:
            return
        z = torch.cat(self._val_z)
        self._val_z.clear()
        if self.trainer.world_size > 1:
            z = self.all_gather(z).flatten(0, 1)
        z = z[torch.isfinite(z).all(dim=1)].float().cpu()
        if len(z) == 0:
            return
        z, key = z[:, :-1], z[:, -1].contiguous()
        edges, temperature = fit_binned_temperatures(z, key, n_bins=len(self.temperature))
        self.temperature_edges.copy_(edges)
        self.temperature.copy_(temperature)
        calibrated = z / temperature[torch.bucketize(key, edges)]
        self.log("val/coverage68", coverage(calibrated, level=0.68).mean(), sync_dist=False)
        self.log("val/coverage95", coverage(calibrated, level=0.95).mean(), sync_dist=False)


def _condition_dim(encoder: nn.Module) -> int:
    """How many scalars a conditioned encoder reads beside the image (0: none, or any
    encoder without FiLM such as the autoencoder's)."""
    return getattr(encoder, "condition_dim", 0)


def _check_sizes(
    encoder: nn.Module, head: nn.Module, inputs: SersicInputs, raw_outputs: int
) -> None:
    """Raise ValueError when the head does not take the encoder's or the inputs' sizes,
    or does not give the shape likelihood's raw outputs."""
    given = getattr(head, "out_dim", None)
    if given is not None and given != raw_outputs:
        raise ValueError(
            f"the shape likelihood needs {raw_outputs} raw outputs but the head gives "
            f"out_dim={given}; set model.head.out_dim={raw_outputs}"
        )
    scalars = getattr(head, "n_features", None)
    if scalars is not None and scalars != inputs.n_features:
        raise ValueError(
            f"the inputs give {inputs.n_features} scalars per galaxy but the head takes "
            f"n_features={scalars}; set model.head.n_features={inputs.n_features}"
        )
    conditioned = _condition_dim(encoder)
    if conditioned and conditioned != inputs.n_features:
        raise ValueError(
            f"the inputs give {inputs.n_features} scalars per galaxy but the encoder is "
            f"conditioned on condition_dim={conditioned}; set "
            f"model.encoder.condition_dim={inputs.n_features} (or 0: not conditioned)"
        )
    channels = getattr(encoder, "in_channels", None)
    if channels is not None and channels != inputs.n_channels:
        raise ValueError(
            f"the inputs give {inputs.n_channels} image channels (one per stretch_scale) but "
            f"the encoder takes in_channels={channels}; set "
            f"model.encoder.in_channels={inputs.n_channels}"
        )
    out_dim = getattr(encoder, "out_dim", getattr(encoder, "embedding_dim", None))
    in_dim = getattr(head, "in_dim", None)
    if out_dim is not None and in_dim is not None and out_dim != in_dim:
        raise ValueError(
            f"the encoder gives {out_dim} features but the head takes in_dim={in_dim}; "
            f"set model.head.in_dim={out_dim}"
        )


def _errors(posterior: SersicPosterior, targets: Tensor, pa: Tensor) -> dict[str, Tensor]:
    """Median errors of a batch: relative for flux, r_e and n, absolute for q and PA (deg)."""
    relative = (posterior.mean[:, :3] - targets[:, :3]).exp() - 1
    pa_error = torch.remainder(posterior.pa_deg - pa + 90.0, 180.0) - 90.0
    return {
        "flux_mare": relative[:, 0].abs().median(),
        "re_mare": relative[:, 1].abs().median(),
        "n_mare": relative[:, 2].abs().median(),
        "q_mae": (posterior.mean[:, 3] - targets[:, 3]).abs().median(),
        "pa_mae_deg": pa_error.abs().median(),
    }
