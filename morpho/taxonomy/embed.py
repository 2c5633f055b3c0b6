"""Embed galaxies with a trained autoencoder, streaming the table to parquet.

The table has one row per galaxy: ``id`` (str), ``index`` (the galaxy's row in
its source) and ``e0 … e{d-1}`` (float32), written one batch at a time so that
memory stays bounded whatever the number of galaxies.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from morpho.data.errors import DataError
from morpho.models.autoencoder import AutoencoderModule
from morpho.utils import atomic_output

__all__ = [
    "EMBEDDING_PREFIX",
    "embed_dataset",
    "embedding_columns",
    "iter_embeddings",
    "read_embeddings",
    "write_embeddings",
]

EMBEDDING_PREFIX = "e"


def embedding_columns(table: pd.DataFrame | pa.Schema) -> list[str]:
    """Names of the embedding columns ``e0, e1, …`` of a table, in order."""
    names = table.names if isinstance(table, pa.Schema) else list(table.columns)
    columns = [c for c in names if c.startswith(EMBEDDING_PREFIX) and c[1:].isdigit()]
    return sorted(columns, key=lambda c: int(c[1:]))


def _check_bands(model: AutoencoderModule, images: torch.Tensor, origin: str) -> None:
    expected = model.preprocessor.mean.numel()
    if images.shape[1] != expected:
        raise DataError(
            f"{origin} has {images.shape[1]} band(s) but the checkpoint was trained on "
            f"{expected}; embed data with the training bands"
        )


def iter_embeddings(
    model: AutoencoderModule,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
):
    """Yield ``(ids, indices, embeddings)`` per batch: str list, (B,) int64, (B, d) float32."""
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    for number, batch in enumerate(loader):
        images = batch["image"].to(device)
        if number == 0:
            _check_bands(model, images, "the data")
        embedding = model.embed(images).cpu().numpy().astype(np.float32)
        yield [str(i) for i in batch["id"]], batch["index"].numpy().astype(np.int64), embedding


def embed_dataset(
    model: AutoencoderModule, dataset: Dataset, **kwargs
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Embed a whole data set in memory: ``(ids, indices (N,), embeddings (N, d))``.

    Keyword arguments go to :func:`iter_embeddings`.
    """
    ids, indices, embeddings = [], [], []
    for batch_ids, batch_indices, batch_embeddings in iter_embeddings(model, dataset, **kwargs):
        ids += batch_ids
        indices.append(batch_indices)
        embeddings.append(batch_embeddings)
    if not ids:
        raise DataError("the data set is empty: nothing to embed")
    return ids, np.concatenate(indices), np.concatenate(embeddings)


def write_embeddings(
    model: AutoencoderModule,
    dataset: Dataset,
    path: str | os.PathLike,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
) -> Path:
    """Embed every galaxy of ``dataset`` and write the table to ``path`` (parquet).

    Parameters
    ----------
    model : AutoencoderModule
        Trained model (see :func:`morpho.models.load_model`).
    dataset : Dataset
        Items with ``image`` (C, S, S) flux, ``id`` and ``index`` (a
        :class:`morpho.data.GalaxyDataset` or a split of one).
    path : path-like
        Output parquet file, written under a temporary name and renamed.
    batch_size, num_workers : int
        DataLoader settings.

    Returns
    -------
    Path
        The written table.
    """
    writer = None
    batches = iter_embeddings(
        model, dataset, batch_size=batch_size, num_workers=num_workers, device=device
    )
    with atomic_output(path, overwrite=overwrite) as tmp:
        try:
            for ids, indices, embedding in batches:
                columns = {"id": pa.array(ids), "index": pa.array(indices)}
                columns.update(
                    {
                        f"{EMBEDDING_PREFIX}{j}": pa.array(embedding[:, j])
                        for j in range(embedding.shape[1])
                    }
                )
                table = pa.table(columns)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise DataError("the data set is empty: nothing to embed")
    return Path(path)


def read_embeddings(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """Read an embeddings table: ``(table of id and index, (N, d) float32 embeddings)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataError
        If the table has no ``id`` column or no embedding columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings table {path} does not exist")
    table = pd.read_parquet(path)
    if "id" not in table.columns:
        raise DataError(f"{path} has no 'id' column; columns are {list(table.columns)[:10]}")
    columns = embedding_columns(table)
    if not columns:
        raise DataError(
            f"{path} has no embedding columns (named {EMBEDDING_PREFIX}0, {EMBEDDING_PREFIX}1, …)"
        )
    meta = table.drop(columns=columns)
    return meta, table[columns].to_numpy(dtype=np.float32)
