"""One fitted taxonomy per test session (UMAP's numba compilation costs seconds per process).

Every session-scoped fixture here is read-only: copy before changing.
"""

from __future__ import annotations

import numpy as np
import pytest

from morpho.taxonomy import Taxonomy

BLOB_SIZES = (400, 250, 200, 150)
N_FEATURES = 16


def blob_centres() -> np.ndarray:
    """(4, 16) centres of four unit-variance Gaussian blobs, 24 to 36 σ apart."""
    return 5.0 * np.random.default_rng(1234).normal(size=(len(BLOB_SIZES), N_FEATURES))


def draw_blobs(sizes: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``sizes[i]`` unit-variance galaxies around centre i, shuffled: (X (N, 16), truth (N,))."""
    rng = np.random.default_rng(seed)
    truth = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    X = blob_centres()[truth] + rng.normal(size=(len(truth), N_FEATURES))
    return X, truth


def read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for array in arrays:
        array.flags.writeable = False
    return arrays


@pytest.fixture(scope="session")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Training embeddings: four blobs of 400, 250, 200, 150 in 16-d, (X, truth) (read-only)."""
    return read_only(*draw_blobs(BLOB_SIZES, seed=0))


@pytest.fixture(scope="session")
def large_blobs() -> tuple[np.ndarray, np.ndarray]:
    """4200 galaxies from the same four blobs, above umap-learn's exact-graph limit (read-only)."""
    return read_only(*draw_blobs((1100, 1100, 1000, 1000), seed=3))


@pytest.fixture(scope="session")
def new_blobs() -> tuple[np.ndarray, np.ndarray]:
    """120 new galaxies from the same four blobs, (X, truth) (read-only)."""
    return read_only(*draw_blobs((40, 30, 30, 20), seed=1))


@pytest.fixture(scope="session")
def fitted(blobs) -> Taxonomy:
    """The taxonomy of ``blobs`` (read-only: never refit or set_params it)."""
    X, _ = blobs
    return Taxonomy(min_cluster_size=40, n_epochs=200, random_state=0).fit(X)
