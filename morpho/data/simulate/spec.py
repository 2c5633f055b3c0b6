"""What to simulate: the configuration of the GalSim renderer.

All sizes are in pixels unless a name ends in ``_arcsec``; fluxes are in ADU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from morpho.data.simulate.noise import NoiseModel

__all__ = ["MORPHOLOGY_CLASSES", "PSFSpec", "SimulationSpec"]

#: The morphology classes of the six-class mix, in label order.
MORPHOLOGY_CLASSES: tuple[str, ...] = (
    "elliptical",
    "lenticular",
    "spiral",
    "barred_spiral",
    "edge_on",
    "irregular",
)
MODES = ("six_class", "single_sersic")


def _pair(name: str, value: Sequence[float], *, low: float = 0.0) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not low <= pair[0] <= pair[1]:
        raise ValueError(f"{name} must be a range [min, max] with {low} <= min <= max, got {value}")
    return pair  # type: ignore[return-value]


@dataclass
class PSFSpec:
    """Random point-spread functions, one drawn per galaxy (shared by its bands).

    Parameters
    ----------
    kinds : sequence of {"moffat", "gaussian"}
        Profiles to draw from, with equal probability.
    fwhm_arcsec : (min, max)
        FWHM range in arcsec, drawn uniformly.
    moffat_beta : sequence of float
        Moffat β values to draw from (a short list keeps GalSim's profile cache warm).
    stamp_size : int
        Side in pixels of the stored PSF image (odd, so that the PSF is centred on a pixel).
    """

    kinds: Sequence[str] = ("moffat", "gaussian")
    fwhm_arcsec: Sequence[float] = (0.6, 1.0)
    moffat_beta: Sequence[float] = (2.5, 3.0, 3.5, 4.5)
    stamp_size: int = 25

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        unknown = set(self.kinds) - {"moffat", "gaussian"}
        if not self.kinds or unknown:
            raise ValueError(f"psf.kinds must be a non-empty subset of moffat, gaussian: {unknown}")
        self.fwhm_arcsec = _pair("psf.fwhm_arcsec", self.fwhm_arcsec, low=1e-6)
        self.moffat_beta = tuple(float(b) for b in self.moffat_beta)
        if not self.moffat_beta or min(self.moffat_beta) <= 1.1:
            raise ValueError(f"psf.moffat_beta must hold values > 1.1, got {self.moffat_beta}")
        if self.stamp_size < 3 or self.stamp_size % 2 == 0:
            raise ValueError(f"psf.stamp_size must be odd and >= 3, got {self.stamp_size}")


@dataclass
class SimulationSpec:
    """The population of simulated galaxies.

    Parameters
    ----------
    mode : {"six_class", "single_sersic"}
        ``six_class``: the morphology mix of :data:`MORPHOLOGY_CLASSES`.
        ``single_sersic``: one Sérsic profile per galaxy, whose truth is exact.
    image_size : int
        Stamp side in pixels.
    pixel_scale : float
        Arcsec per pixel.
    bands : sequence of str
        Band names, ordered from blue to red (one band by default).
    colours : mapping or None
        Flux multiplier per band for the ``"old"`` (bulges, bars, ellipticals) and
        ``"young"`` (disks, arms, knots, tails) stellar populations, relative to the
        first band. None: flat for one band; for several, old light rises and young
        light falls linearly by 30% from the first to the last band.
    class_fractions : mapping
        Relative frequency of each morphology class (six_class mode); normalised.
    snr : (min, max)
        Matched-filter S/N range, drawn log-uniformly (see :mod:`.render`).
    sersic_n : (min, max)
        Sérsic index range of single_sersic mode, drawn uniformly on a grid.
    n_grid : float
        Grid step of Sérsic indices (GalSim caches profiles by n; 0 = continuous).
    r_e : (min, max)
        Half-light radius range along the major axis in pixels (single_sersic mode).
    axis_ratio : (min, max)
        Axis ratio q = b/a range (single_sersic mode).
    max_center_offset : float
        Largest offset in pixels of the galaxy centre from the stamp centre, per axis.
    noise : NoiseModel
    psf : PSFSpec
    """

    mode: str = "six_class"
    image_size: int = 64
    pixel_scale: float = 0.2
    bands: Sequence[str] = ("r",)
    colours: Mapping[str, Sequence[float]] | None = None
    class_fractions: Mapping[str, float] = field(
        default_factory=lambda: dict.fromkeys(MORPHOLOGY_CLASSES, 1.0)
    )
    snr: Sequence[float] = (20.0, 200.0)
    sersic_n: Sequence[float] = (0.5, 6.0)
    n_grid: float = 0.05
    r_e: Sequence[float] = (2.0, 10.0)
    axis_ratio: Sequence[float] = (0.2, 1.0)
    max_center_offset: float = 0.5
    noise: NoiseModel = field(default_factory=NoiseModel)
    psf: PSFSpec = field(default_factory=PSFSpec)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"simulation.mode must be one of {MODES}, got {self.mode!r}")
        if self.image_size < 8:
            raise ValueError(f"simulation.image_size must be >= 8 pixels, got {self.image_size}")
        if not self.pixel_scale > 0:
            raise ValueError(f"simulation.pixel_scale must be > 0 arcsec, got {self.pixel_scale}")
        self.bands = tuple(str(b) for b in self.bands)
        if not self.bands:
            raise ValueError("simulation.bands must name at least one band")
        self.colours = self._check_colours(self.colours)
        self.class_fractions = self._check_fractions(self.class_fractions)
        self.snr = _pair("simulation.snr", self.snr, low=1e-3)
        self.sersic_n = _pair("simulation.sersic_n", self.sersic_n, low=0.3)
        self.r_e = _pair("simulation.r_e", self.r_e, low=0.1)
        self.axis_ratio = _pair("simulation.axis_ratio", self.axis_ratio, low=0.05)
        if self.axis_ratio[1] > 1:
            raise ValueError(f"simulation.axis_ratio must lie in (0, 1], got {self.axis_ratio}")
        if self.n_grid < 0:
            raise ValueError(f"simulation.n_grid must be >= 0, got {self.n_grid}")
        if isinstance(self.noise, Mapping):
            self.noise = NoiseModel(**self.noise)
        if isinstance(self.psf, Mapping):
            self.psf = PSFSpec(**self.psf)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Label names in label order."""
        return MORPHOLOGY_CLASSES if self.mode == "six_class" else ("sersic",)

    def _check_colours(
        self, colours: Mapping[str, Sequence[float]] | None
    ) -> dict[str, tuple[float, ...]]:
        n = len(self.bands)
        if colours is None:
            ramp = [i / (n - 1) if n > 1 else 0.0 for i in range(n)]
            return {
                "old": tuple(1.0 + 0.3 * t for t in ramp),
                "young": tuple(1.0 - 0.3 * t for t in ramp),
            }
        checked = {}
        for population in ("old", "young"):
            values = tuple(float(v) for v in colours.get(population, (1.0,) * n))
            if len(values) != n or min(values) <= 0:
                raise ValueError(
                    f"simulation.colours.{population} needs {n} positive values "
                    f"(one per band of {self.bands}), got {values}"
                )
            checked[population] = values
        return checked

    def _check_fractions(self, fractions: Mapping[str, float]) -> dict[str, float]:
        unknown = set(fractions) - set(MORPHOLOGY_CLASSES)
        if unknown:
            raise ValueError(
                f"simulation.class_fractions has unknown classes {sorted(unknown)}; "
                f"known: {MORPHOLOGY_CLASSES}"
            )
        values = {name: float(fractions.get(name, 0.0)) for name in MORPHOLOGY_CLASSES}
        if min(values.values()) < 0 or sum(values.values()) <= 0:
            raise ValueError(
                f"simulation.class_fractions must be >= 0 with a positive sum: {values}"
            )
        total = sum(values.values())
        return {name: value / total for name, value in values.items()}
