"""The CCD noise model of simulated galaxies.

Every pixel of a simulated image is, in ADU and sky-subtracted,

.. math::

    x = \\frac{N_e + R}{g} - b, \\qquad N_e \\sim \\mathrm{Poisson}\\big(g\\,(m + b)\\big),
    \\qquad R \\sim \\mathcal{N}(0, r^2),

with ``m`` the noiseless galaxy model (ADU), ``b`` the sky level (ADU per pixel),
``g`` the gain (e-/ADU) and ``r`` the read noise (e-). The distribution of every
pixel is therefore known exactly; :mod:`morpho.data.entropy` turns it into the
entropy floor of the quantised image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NoiseModel", "ccd_variance"]


def ccd_variance(noiseless, sky_level, read_noise, gain):
    """Per-pixel variance (ADU²) ``(max(m, 0) + b) / g + (r / g)²`` of the noisy image of ``m``.

    NumPy arrays or torch tensors alike, the noise parameters broadcasting against
    ``noiseless`` (one per galaxy, say); negative model values count as no signal.
    """
    return (noiseless.clip(0.0, None) + sky_level) / gain + (read_noise / gain) ** 2


@dataclass(frozen=True)
class NoiseModel:
    """Sky, read noise and gain of a CCD exposure.

    Parameters
    ----------
    sky_level : float
        Sky background in ADU per pixel (subtracted from the stored images).
    read_noise : float
        Read noise in electrons (rms per pixel).
    gain : float
        Gain in electrons per ADU.
    """

    sky_level: float = 30.0
    read_noise: float = 3.0
    gain: float = 1.0

    def __post_init__(self) -> None:
        if not self.sky_level >= 0:
            raise ValueError(f"noise.sky_level must be >= 0 ADU, got {self.sky_level}")
        if not self.read_noise >= 0:
            raise ValueError(f"noise.read_noise must be >= 0 e-, got {self.read_noise}")
        if not self.gain > 0:
            raise ValueError(f"noise.gain must be > 0 e-/ADU, got {self.gain}")

    @property
    def background_variance(self) -> float:
        """Variance (ADU²) of a pixel holding only sky: ``b/g + r²/g²``."""
        return self.sky_level / self.gain + (self.read_noise / self.gain) ** 2

    def variance(self, noiseless: np.ndarray) -> np.ndarray:
        """Per-pixel variance (ADU²) of the noisy image of ``noiseless`` (ADU)."""
        return ccd_variance(np.asarray(noiseless), self.sky_level, self.read_noise, self.gain)

    def electron_rate(self, noiseless: np.ndarray) -> np.ndarray:
        """Mean electron count ``g (m + b)`` of each pixel (negative model values clipped to 0)."""
        return self.gain * (np.clip(noiseless, 0.0, None) + self.sky_level)

    def sample(self, noiseless: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw a noisy, sky-subtracted image (ADU, float32) from ``noiseless`` (ADU)."""
        electrons = rng.poisson(self.electron_rate(noiseless)).astype(np.float64)
        if self.read_noise > 0:
            electrons += rng.normal(0.0, self.read_noise, size=electrons.shape)
        return (electrons / self.gain - self.sky_level).astype(np.float32)

    def quantize(self, image: np.ndarray) -> np.ndarray:
        """Digitise a sky-subtracted image into integer ADU counts ``floor(x + b + 1/2)``.

        This is the ADC's output for the pixel; :func:`morpho.data.entropy.noise_entropy_bits`
        gives the entropy of exactly this integer.
        """
        return np.floor(np.asarray(image, dtype=np.float64) + self.sky_level + 0.5).astype(np.int64)
