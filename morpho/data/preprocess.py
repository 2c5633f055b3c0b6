"""The fitted pixel preprocessing of morpho: a stretch, then per-band standardisation.

:class:`Preprocessor` is fitted once, on the training split only, and then
travels with the model: everything it learned is in buffers, so it is saved
in the model's ``state_dict`` and restored into a fresh, unfitted instance::

    pre = Preprocessor(make_stretch("arcsinh", scale=0.1)).fit(train_images)
    state = pre.state_dict()
    restored = Preprocessor(make_stretch("arcsinh"))
    restored.load_state_dict(state)  # restored(x) == pre(x), scale included
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from morpho.data.pixels import FittedStateModule, check_images, sample_band_pixels
from morpho.data.stretches import Stretch
from morpho.utils import full_precision

__all__ = ["Preprocessor"]


class Preprocessor(FittedStateModule):
    """Stretch then standardise each band: ``z = (stretch(x) - mean_c) / std_c``.

    ``mean_c`` and ``std_c`` are the mean and (population) standard deviation
    of the stretched training pixels of band ``c``, over a seeded random
    sample of at most ``max_pixels`` pixel positions (see
    :func:`morpho.data.pixels.sample_band_pixels`); a fitted stretch (e.g.
    :class:`morpho.data.stretches.PowerStretch`) is fitted on the same sample.
    Fitted state lives in the buffers ``mean``, ``std``, ``fitted`` and the
    stretch's own buffers, so the output depends on the ``state_dict`` alone.

    Non-finite inputs are rejected by :meth:`fit` and propagate through
    :meth:`forward` (NaN in, NaN out); the dataset fills NaN before this stage.

    Parameters
    ----------
    stretch : Stretch
        The stretch, e.g. ``make_stretch("arcsinh", scale=0.1)``.
    canonicalize : nn.Module, optional
        A per-image stage applied first, to flux images, with no fitted state
        (e.g. :class:`morpho.data.canonical.Canonicalize`: centre, align, rescale and
        flux-normalise); the stretch and statistics are then fitted on its output.
    normalize : bool, optional
        If False, :meth:`fit` stores ``mean = 0`` and ``std = 1``, so the
        output is the stretched image itself.
    max_pixels : int, optional
        Number of pixel positions the statistics are computed on.
    seed : int, optional
        Seed of the pixel sample.

    Raises
    ------
    TypeError
        If ``stretch`` is not a :class:`Stretch`.
    """

    def __init__(
        self,
        stretch: Stretch,
        *,
        canonicalize: nn.Module | None = None,
        normalize: bool = True,
        max_pixels: int = 200_000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(stretch, Stretch):
            raise TypeError(
                f"stretch must be a morpho Stretch (see make_stretch), got {type(stretch).__name__}"
            )
        self.stretch = stretch
        self.canonicalize = canonicalize
        self.normalize = normalize
        self.max_pixels = max_pixels
        self.seed = seed
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("std", torch.empty(0))
        self.register_buffer("fitted", torch.tensor(False))
        # Whether ``fitted`` was last seen True: checked once, not read back from the
        # device at every call (cleared when a state dict is loaded).
        self._seen_fitted = False

    def fit(self, images: Tensor | Iterable[Tensor]) -> Preprocessor:
        """Fit the stretch and the per-band statistics on training images.

        Parameters
        ----------
        images : (N, C, H, W) or (C, H, W) float Tensor, or iterable of them
            The training split in flux units: one tensor, or an iterable of
            ``(C, H, W)`` images or ``(B, C, H, W)`` batches (e.g. a
            DataLoader yielding image batches). Finite, one band count.

        Returns
        -------
        Preprocessor
            ``self``, fitted.

        Raises
        ------
        ValueError
            If the images are empty, not finite, change band count, or a band
            is constant after stretching (when ``normalize``).
        TypeError
            If an item of ``images`` is not a floating-point tensor.
        """
        if self.canonicalize is not None:
            images = self._canonical_batches(images)
        sample = sample_band_pixels(images, max_pixels=self.max_pixels, seed=self.seed)
        # A (P, C) pixel sample is a batch of P one-pixel images with C bands.
        pixel_images = sample[:, :, None, None]
        self.stretch.fit(pixel_images)
        bands = sample.shape[1]
        if self.normalize:
            stretched = self.stretch(pixel_images)[:, :, 0, 0]
            mean, std = stretched.mean(dim=0), stretched.std(dim=0, correction=0)
            self._check_spread(std)
        else:
            mean, std = torch.zeros(bands), torch.ones(bands)
        self._store("mean", mean)
        self._store("std", std)
        self.fitted.fill_(True)
        return self

    def _canonical_batches(self, images: Tensor | Iterable[Tensor]) -> Iterator[Tensor]:
        batches = [images] if isinstance(images, Tensor) else images
        with torch.no_grad():
            for batch in batches:
                batch = batch["image"] if isinstance(batch, dict) else batch
                yield self.canonicalize(batch if batch.ndim == 4 else batch[None])

    @staticmethod
    def _check_spread(std: Tensor) -> None:
        bad = torch.nonzero(~(torch.isfinite(std) & (std > 0))).flatten().tolist()
        if bad:
            raise ValueError(
                f"band(s) {bad} of the stretched training pixels have standard deviation "
                f"{std[bad].tolist()}; they cannot be standardised (drop the band or use "
                "normalize=False)"
            )

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._seen_fitted = False
        super()._load_from_state_dict(*args, **kwargs)

    def _check_input(self, x: Tensor, name: str) -> None:
        if not self._seen_fitted and not bool(self.fitted):
            raise RuntimeError(
                "Preprocessor is not fitted: call fit() on the training images, or "
                "load_state_dict() a fitted Preprocessor"
            )
        self._seen_fitted = True
        bands = check_images(x, name=name)
        if bands != self.mean.numel():
            raise ValueError(
                f"Preprocessor was fitted on {self.mean.numel()} bands but {name} has {bands} "
                f"bands (shape {tuple(x.shape)}); pass images with the training bands"
            )

    def _band_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``mean`` and ``std`` cast to ``x`` and shaped ``(C, 1, 1)``."""
        return (
            self.mean.to(dtype=x.dtype, device=x.device).view(-1, 1, 1),
            self.std.to(dtype=x.dtype, device=x.device).view(-1, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Preprocess images.

        Parameters
        ----------
        x : (C, H, W) or (N, C, H, W) float Tensor
            Images in flux units, with the training band count.

        Returns
        -------
        Tensor
            ``(stretch(x) - mean) / std``, shape of ``x``, in float32 (float64 stays):
            the pixel stages run in full precision under mixed precision too.

        Raises
        ------
        RuntimeError
            If the preprocessor is not fitted.
        ValueError
            If the shape or band count is wrong.
        """
        self._check_input(x, "images")
        with full_precision(x) as x:
            if self.canonicalize is not None:
                x = self.canonicalize(x if x.ndim == 4 else x[None]).reshape(x.shape)
            mean, std = self._band_stats(x)
            return (self.stretch(x) - mean) / std

    def inverse(self, z: Tensor) -> Tensor:
        """Map preprocessed images back to flux units: ``stretch.inverse(z · std + mean)``.

        With a ``canonicalize`` stage, the result stays in the canonical frame
        (centred, aligned, rescaled, in units of the galaxy's flux): that stage
        is not inverted.

        Parameters
        ----------
        z : (C, H, W) or (N, C, H, W) float Tensor
            Preprocessed images (e.g. a network's reconstruction).

        Returns
        -------
        Tensor
            Images in flux units, shape of ``z``, float32 (float64 stays).

        Raises
        ------
        RuntimeError
            If the preprocessor is not fitted.
        ValueError
            If the shape or band count is wrong.
        """
        self._check_input(z, "preprocessed images")
        with full_precision(z) as z:
            mean, std = self._band_stats(z)
            return self.stretch.inverse(z * std + mean)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, max_pixels={self.max_pixels}, seed={self.seed}"

    def describe(self) -> dict:
        """What rebuilds this preprocessor (before ``load_state_dict``), as plain values."""
        canon = getattr(self.canonicalize, "init_config", None)
        if self.canonicalize is not None and canon is None:
            raise TypeError(f"{type(self.canonicalize).__name__} does not record its init_config")
        return {"stretch": self.stretch.name, "canonicalize": canon, "normalize": self.normalize}
