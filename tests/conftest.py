"""Shared, deterministic fixtures. Session-scoped fixtures are read-only: copy before changing."""

from __future__ import annotations

import pytest
import torch

from morpho.data.simulate import SimulationSpec, simulate_to_hdf5


@pytest.fixture(scope="session")
def tiny_spec() -> SimulationSpec:
    """Six-class mix at 32×32 pixels, S/N 30-200 (read-only)."""
    return SimulationSpec(image_size=32, snr=(30.0, 200.0))


@pytest.fixture(scope="session")
def simulated_file(tmp_path_factory, tiny_spec):
    """A read-only HDF5 file of 60 simulated galaxies (six-class, 32×32, seed 0)."""
    path = tmp_path_factory.mktemp("sim") / "galaxies.h5"
    return simulate_to_hdf5(
        path, n_galaxies=60, spec=tiny_spec, seed=0, workers=1, chunk_size=25, progress=False
    )


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tiny networks and the pixel-by-pixel samplers run
    thousands of small operations, which several threads only slow down (badly so on a
    busy machine). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
