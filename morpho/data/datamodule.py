"""One LightningDataModule over any galaxy source.

The module follows Lightning's contract: ``__init__`` only stores its
arguments; :meth:`GalaxyDataModule.prepare_data` runs once per node and does
the expensive preparation (rendering the simulated default when it is missing);
:meth:`GalaxyDataModule.setup` opens the source, splits it with a seeded
generator and fits the preprocessing on the training split only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Subset

from morpho.data.augment import Augment
from morpho.data.dataset import GalaxyDataset
from morpho.data.errors import DataError
from morpho.data.preprocess import Preprocessor
from morpho.data.sources.base import GalaxySource
from morpho.data.sources.joined import JoinedSource
from morpho.data.stretches import ArcsinhStretch, Stretch

__all__ = ["GalaxyDataModule", "split_indices"]

STAGES = ("train", "val", "test")

log = logging.getLogger(__name__)


def split_indices(n: int, fractions: Sequence[float], *, seed: int) -> dict[str, np.ndarray]:
    """Split ``range(n)`` into train/val/test indices with a seeded permutation.

    Parameters
    ----------
    n : int
        Number of galaxies.
    fractions : (train, val, test) floats
        Shares of each split, >= 0 and summing to 1; val and test get
        ``round(f·n)`` galaxies and train the rest.
    seed : int
        Seed of the permutation.

    Returns
    -------
    dict
        ``{"train", "val", "test"}`` → sorted int64 index arrays.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split must be three fractions >= 0 summing to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    n_train = n - n_val - n_test
    parts = np.split(order, [n_train, n_train + n_val])
    return {stage: np.sort(part) for stage, part in zip(STAGES, parts, strict=True)}


class GalaxyDataModule(LightningDataModule):
    """Galaxy cutouts from any source, split, augmented and batched.

    Batches hold flux images (cropped, NaN-filled and, in training, augmented).
    The preprocessing (optional canonicalisation, stretch, per-band
    standardisation) is fitted here on the training split only and exposed as
    :attr:`preprocessor`; models take it over in their ``setup`` and apply it on
    their device, so that it is saved with them.

    Parameters
    ----------
    source : callable
        Builds the :class:`GalaxySource` (e.g. ``functools.partial(HDF5Source, path=...)``,
        or Hydra's ``_partial_: true``); called in :meth:`setup`, so nothing is read
        at construction.
    image_size : int
        Side of the square images in pixels (centre crop, or resampling with ``resize``).
    bands : int, optional
        Expected number of bands; checked on every image.
    resize, nan_fill, label_key, columns
        Passed to :class:`GalaxyDataset`; they may name columns of ``join_table``.
    join_table : str, path-like or pandas.DataFrame, optional
        A table joined onto the source's catalog by galaxy id (its ``id`` column),
        e.g. ``morpho-cluster``'s ``taxonomy.parquet`` for ``label_key="cluster"``
        or ``morpho-embed``'s ``embeddings.parquet`` for ``columns=[e0, e1, ...]``;
        see :class:`~morpho.data.sources.joined.JoinedSource`. Every galaxy of the
        source must be in it.
    drop_unlabelled : bool
        Leave out of the splits the galaxies whose ``label_key`` value is negative
        or not finite (e.g. HDBSCAN's outliers, cluster -1); the split is then a
        seeded permutation of the remaining galaxies. Needs ``label_key``.
    stretch : Stretch, optional
        Pixel stretch before standardisation; ``ArcsinhStretch(scale=1)`` by default.
    canonicalize : nn.Module, optional
        Per-image canonicalisation before the stretch
        (:class:`morpho.data.canonical.Canonicalize`).
    normalize : bool
        Standardise each band with the training split's mean and standard deviation.
    augment : Augment, optional
        Training-time augmentation (flips, rotations, shifts); none at val/test time.
    split : (train, val, test)
        Split fractions; the permutation is seeded by ``seed``.
    seed : int
        Seed of the split and of the pixel sample the preprocessing is fitted on.
    batch_size : int
        Images per batch (per device).
    num_workers : int
        DataLoader worker processes.
    pin_memory : bool
        Pin batches in page-locked memory (speeds up copies to a GPU).
    fit_images : int
        At most this many training images are read to fit the preprocessing.
    prepare : callable, optional
        Run once in :meth:`prepare_data`, e.g.
        :class:`morpho.data.simulate.EnsureSimulated` to render the default data.

    Raises
    ------
    ValueError
        If ``drop_unlabelled`` is set without ``label_key``.
    """

    def __init__(
        self,
        source: Callable[[], GalaxySource],
        *,
        image_size: int = 64,
        bands: int | None = None,
        resize: bool = False,
        nan_fill: str = "median",
        label_key: str | None = None,
        columns: Sequence[str] | None = None,
        join_table: str | os.PathLike | pd.DataFrame | None = None,
        drop_unlabelled: bool = False,
        stretch: Stretch | None = None,
        canonicalize: torch.nn.Module | None = None,
        normalize: bool = True,
        augment: Augment | None = None,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        fit_images: int = 2000,
        prepare: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        if drop_unlabelled and label_key is None:
            raise ValueError(
                "drop_unlabelled=True needs label_key= the column whose negative or NaN "
                "values mark unlabelled galaxies (e.g. 'cluster')"
            )
        unsaved = ["source", "stretch", "canonicalize", "augment", "prepare", "split", "columns"]
        self.save_hyperparameters(ignore=[*unsaved, "join_table"], logger=False)
        # The table's path as text (a DataFrame is not saved), so that checkpoints load
        # with weights_only=True.
        self.hparams["join_table"] = _describe_table(join_table)
        self.join_table = join_table
        # Plain floats, not a Hydra ListConfig, so that checkpoints load with weights_only=True.
        self.split = tuple(float(f) for f in split)
        self.columns = None if columns is None else [str(c) for c in columns]
        self.source_factory = source
        self.stretch = stretch
        self.canonicalize = canonicalize
        self.augment = augment
        self.prepare = prepare
        self.source: GalaxySource | None = None
        self.preprocessor: Preprocessor | None = None
        self.indices: dict[str, np.ndarray] = {}
        self.datasets: dict[str, Subset] = {}
        #: The whole source as cropped, NaN-filled flux images (no augmentation,
        #: no preprocessing), indexed like the source; set by :meth:`setup`.
        self.raw: GalaxyDataset | None = None

    def prepare_data(self) -> None:
        """Run the ``prepare`` hook (e.g. render the simulated default if it is missing)."""
        if self.prepare is not None:
            self.prepare()

    def _open(self) -> GalaxySource:
        """Open the source (joining ``join_table``) and split it (no pixels read); idempotent."""
        if self.source is None:
            source = self.source_factory()
            if self.join_table is not None:
                source = JoinedSource(source, self.join_table)
            raw = self._dataset(source, transform=None)
            kept = self._labelled(source) if self.hparams.drop_unlabelled else None
            n_kept = len(source) if kept is None else len(kept)
            if n_kept < 3:
                raise DataError(
                    f"the data source holds {n_kept} galaxies to split; at least 3 are needed"
                )
            indices = split_indices(n_kept, self.split, seed=self.hparams.seed)
            self.indices = indices if kept is None else {k: kept[v] for k, v in indices.items()}
            self.raw = raw
            self.source = source
        return self.source

    def _labelled(self, source: GalaxySource) -> np.ndarray:
        """Rows of the galaxies whose label is a finite number >= 0; logs how many are left out."""
        key = self.hparams.label_key
        labels = source.catalog[key].to_numpy(dtype=np.float64, na_value=np.nan)
        kept = np.flatnonzero(np.isfinite(labels) & (labels >= 0))
        log.info(
            "drop_unlabelled: left out %d of %d galaxies whose %r is negative or not finite; "
            "%d remain",
            len(labels) - len(kept),
            len(labels),
            key,
            len(kept),
        )
        if len(kept) == 0:
            raise DataError(
                f"drop_unlabelled=True left no galaxy: all {len(labels)} have a negative or NaN "
                f"{key!r} in {source!r}. Check label_key, or set drop_unlabelled=false."
            )
        return kept

    def setup(self, stage: str | None = None) -> None:
        """Open the source, split it, and fit the preprocessing on the training split."""
        if self.datasets:
            return
        source = self._open()
        if self.preprocessor is None:
            self.preprocessor = self._fit_preprocessor(Subset(self.raw, self.indices["train"]))
        augmented = self._dataset(source, transform=self.augment) if self.augment else self.raw
        self.datasets = {
            stage: Subset(augmented if stage == "train" else self.raw, self.indices[stage])
            for stage in STAGES
        }

    def dataset(self, split: str = "all") -> GalaxyDataset | Subset:
        """Un-augmented flux images of one split (or ``"all"``), without fitting anything.

        Items carry ``index``, the galaxy's row in the source, whatever the split.
        ``"all"`` is every galaxy of the source, including those ``drop_unlabelled``
        leaves out of the splits.
        """
        self._open()
        if split == "all":
            return self.raw
        if split not in STAGES:
            raise ValueError(f"split must be 'all' or one of {STAGES}, got {split!r}")
        return Subset(self.raw, self.indices[split].tolist())

    def _dataset(self, source: GalaxySource, transform) -> GalaxyDataset:
        hp = self.hparams
        return GalaxyDataset(
            source,
            image_size=hp.image_size,
            bands=hp.bands,
            resize=hp.resize,
            nan_fill=hp.nan_fill,
            label_key=hp.label_key,
            columns=self.columns,
            transform=transform,
        )

    def _new_preprocessor(self) -> Preprocessor:
        stretch = self.stretch if self.stretch is not None else ArcsinhStretch(scale=1.0)
        return Preprocessor(
            stretch,
            canonicalize=self.canonicalize,
            normalize=self.hparams.normalize,
            seed=self.hparams.seed,
        )

    def _fit_preprocessor(self, train: Subset) -> Preprocessor:
        hp = self.hparams
        preprocessor = self._new_preprocessor()
        n_fit = min(len(train), hp.fit_images)
        chosen = np.random.default_rng(hp.seed).choice(len(train), size=n_fit, replace=False)
        loader = DataLoader(
            Subset(train, np.sort(chosen).tolist()),
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
        )
        return preprocessor.fit(batch["image"] for batch in loader)

    def _loader(self, stage: str, *, shuffle: bool) -> DataLoader:
        if not self.datasets:
            raise RuntimeError("call setup() before asking for a dataloader")
        hp = self.hparams
        return DataLoader(
            self.datasets[stage],
            batch_size=hp.batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """The fitted preprocessing, saved in Lightning checkpoints."""
        return {} if self.preprocessor is None else {"preprocessor": self.preprocessor.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the preprocessing fitted by an earlier run (not refitted in :meth:`setup`)."""
        if "preprocessor" not in state_dict:
            return
        if self.preprocessor is None:
            self.preprocessor = self._new_preprocessor()
        # In place, so that datasets built by an earlier setup() see the restored state.
        self.preprocessor.load_state_dict(state_dict["preprocessor"])


def _describe_table(table: str | os.PathLike | pd.DataFrame | None) -> str | None:
    """A join table as saved in the hyperparameters: its path, or a note for a DataFrame."""
    if table is None:
        return None
    if isinstance(table, pd.DataFrame):
        return "<DataFrame>"
    return os.fspath(table)
