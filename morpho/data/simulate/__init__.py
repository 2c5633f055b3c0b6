"""The embedded default data: galaxies rendered with GalSim, with exact truth.

See :func:`simulate_to_hdf5` for the file it writes and
:class:`SimulationSpec` for what can be configured.
"""

from morpho.data.simulate.ensure import EnsureSimulated
from morpho.data.simulate.noise import NoiseModel
from morpho.data.simulate.render import RenderedGalaxy, render_galaxy
from morpho.data.simulate.spec import MORPHOLOGY_CLASSES, PSFSpec, SimulationSpec
from morpho.data.simulate.writer import SIMULATION_FORMAT, simulate_to_hdf5

__all__ = [
    "MORPHOLOGY_CLASSES",
    "SIMULATION_FORMAT",
    "EnsureSimulated",
    "NoiseModel",
    "PSFSpec",
    "RenderedGalaxy",
    "SimulationSpec",
    "render_galaxy",
    "simulate_to_hdf5",
]
