"""The internal fit parameters map back to the physical ones, with the right derivatives."""

from __future__ import annotations

import numpy as np
import pytest

from morpho.sersic.params import FitBounds, SersicParametrisation

PARAMS = np.array([2500.0, 30.2, 33.7, 4.5, 2.3, 0.45, 140.0])


def test_round_trip_and_pa_wrapping():
    mapping = SersicParametrisation(FitBounds(), (64, 64))
    np.testing.assert_allclose(mapping.physical(mapping.internal(PARAMS)), PARAMS, rtol=1e-12)
    turned = PARAMS + np.array([0, 0, 0, 0, 0, 0, 180.0])  # the same ellipse
    np.testing.assert_allclose(mapping.internal(turned), mapping.internal(PARAMS), atol=1e-12)


def test_axis_ratio_stays_in_its_bounds():
    mapping = SersicParametrisation(FitBounds(q_min=0.1), (64, 64))
    for eta in (0.0, 1.0, 5.0, mapping.upper[5]):
        q = mapping.physical([0, 0, 0, 0, 0, eta, eta])[5]
        assert 0.1 < q <= 1.0
    assert mapping.physical(np.zeros(7))[5] == 1.0


def test_jacobian_matches_finite_differences():
    mapping = SersicParametrisation(FitBounds(), (64, 64))
    z = mapping.internal(PARAMS)
    numeric = np.empty((7, 7))
    for j in range(7):
        step = np.zeros(7)
        step[j] = 1e-6
        numeric[:, j] = (mapping.physical(z + step) - mapping.physical(z - step)) / 2e-6
    np.testing.assert_allclose(mapping.jacobian(z), numeric, rtol=1e-6, atol=1e-8)


def test_bounds_are_validated():
    with pytest.raises(ValueError, match=r"bounds\.n"):
        FitBounds(n=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"bounds\.q_min"):
        FitBounds(q_min=1.0)
    lower = SersicParametrisation(FitBounds(r_e=(0.5, None)), (40, 64)).lower
    assert np.exp(lower[3]) == pytest.approx(0.5)
