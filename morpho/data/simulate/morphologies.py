"""Random galaxies of each morphology class, as lists of GalSim components.

Each sampler draws the parameters of one galaxy from ``rng`` and returns its
components (unit-flux profiles with flux fractions summing to 1) and extra truth
values. Sizes are in pixels; see :mod:`morpho.data.simulate.components` for the
conventions. The classes are built to be told apart by eye at S/N >= 40:

- **elliptical**: one Sérsic, n in [3, 6];
- **lenticular**: de Vaucouleurs bulge + exponential disk, no arms;
- **spiral**: bulge + disk + logarithmic arms studded with star-forming knots;
- **barred_spiral**: as spiral, with a bar whose ends launch the arms;
- **edge_on**: an inclined (84-90°) thick exponential disk + small bulge;
- **irregular**: a merger (two offset Sérsics and a tidal tail) or a clumpy disk.
"""

from __future__ import annotations

from collections.abc import Callable

import galsim
import numpy as np

from morpho.data.simulate.components import (
    GSPARAMS,
    Component,
    arm_pattern,
    blobs,
    project,
    projected_gaussian_shape,
    sersic,
)

__all__ = ["SAMPLERS", "on_grid", "sample_single_sersic"]

Sample = tuple[list[Component], dict[str, float]]


def on_grid(value: float, step: float) -> float:
    """Round ``value`` to a multiple of ``step`` (no rounding when step is 0)."""
    return float(np.round(value / step) * step) if step > 0 else float(value)


def _sersic_component(name, population, fraction, *, n, r_e, q, pa, scale) -> Component:
    truth = {"r_e_pix": r_e, "n": n, "q": q, "pa_deg": pa % 180.0}
    return Component(name, sersic(n, r_e, q, pa, pixel_scale=scale), fraction, population, truth)


def sample_single_sersic(rng, *, scale, n_range, r_e_range, q_range, n_grid) -> Sample:
    """One Sérsic profile with n, r_e, q uniform in their ranges and a uniform PA."""
    n = on_grid(rng.uniform(*n_range), n_grid)
    n = float(np.clip(n, *n_range))
    comp = _sersic_component(
        "sersic",
        "old",
        1.0,
        n=n,
        r_e=rng.uniform(*r_e_range),
        q=rng.uniform(*q_range),
        pa=rng.uniform(0, 180),
        scale=scale,
    )
    return [comp], {}


def _elliptical(rng, *, scale, n_grid) -> Sample:
    n = on_grid(rng.uniform(3.0, 6.0), n_grid)
    bulge = _sersic_component(
        "bulge",
        "old",
        1.0,
        n=n,
        r_e=rng.uniform(3.0, 9.0),
        q=rng.uniform(0.55, 1.0),
        pa=rng.uniform(0, 180),
        scale=scale,
    )
    return [bulge], {}


def _bulge_disk(rng, *, scale, bt, disk_r_e, disk_q, bulge_r_e, bulge_n) -> list[Component]:
    pa = rng.uniform(0, 180)
    bulge_q = float(np.clip(disk_q + rng.uniform(0.3, 0.6), 0.0, 1.0))
    return [
        _sersic_component(
            "bulge", "old", bt, n=bulge_n, r_e=bulge_r_e, q=bulge_q, pa=pa, scale=scale
        ),
        _sersic_component(
            "disk", "young", 1 - bt, n=1.0, r_e=disk_r_e, q=disk_q, pa=pa, scale=scale
        ),
    ]


def _lenticular(rng, *, scale, n_grid) -> Sample:
    comps = _bulge_disk(
        rng,
        scale=scale,
        bt=rng.uniform(0.2, 0.45),
        disk_r_e=rng.uniform(7.0, 12.0),
        disk_q=rng.uniform(0.3, 0.75),
        bulge_r_e=rng.uniform(1.2, 2.5),
        bulge_n=4.0,
    )
    return comps, {}


def _add_arms(rng, comps, *, scale, r_start, phase) -> dict[str, float]:
    """Move part of the disk's light into arms and knots; returns the arm truth."""
    disk = comps[-1]
    r_e, q, pa = disk.truth["r_e_pix"], disk.truth["q"], disk.truth["pa_deg"]
    n_arms = int(rng.choice([2, 2, 2, 3, 4]))
    pitch = rng.uniform(12.0, 28.0)
    arm_share, knot_share = rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.2)
    arms = arm_pattern(
        r_e_pix=r_e,
        n_arms=n_arms,
        pitch_deg=pitch,
        phase=phase,
        r_start_pix=r_start,
        pixel_scale=scale,
    )
    n_knots = int(rng.integers(15, 36))
    radius = rng.uniform(r_start, 2.2 * r_e, n_knots)
    arm_index = rng.integers(0, n_arms, n_knots)
    theta = (phase + 2 * np.pi * arm_index) / n_arms + np.log(radius) / np.tan(np.radians(pitch))
    theta += rng.normal(0.0, 0.08, n_knots)
    face_on = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    knots = blobs(
        _project_points(face_on, q, pa),
        rng.uniform(0.5, 0.9, n_knots),
        rng.uniform(0.5, 1.5, n_knots),
        pixel_scale=scale,
    )
    total = disk.fraction
    disk.fraction = total * (1 - arm_share - knot_share)
    comps.append(Component("arms", project(arms, q, pa), total * arm_share, "young"))
    comps.append(Component("knots", knots, total * knot_share, "young"))
    return {
        "arm_count": n_arms,
        "arm_pitch_deg": pitch,
        "arms_fraction": total * arm_share,
        "knots_fraction": total * knot_share,
        "knot_count": n_knots,
    }


def _project_points(points: np.ndarray, q: float, pa_deg: float) -> np.ndarray:
    """Face-on (x, y) pixels to the sky through ``R(pa) diag(1, q)``."""
    a = np.radians(pa_deg)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points @ np.diag([1.0, q]) @ rotation.T


def _spiral(rng, *, scale, n_grid) -> Sample:
    bulge_r_e = rng.uniform(1.0, 2.5)
    comps = _bulge_disk(
        rng,
        scale=scale,
        bt=rng.uniform(0.05, 0.25),
        disk_r_e=rng.uniform(7.0, 12.0),
        disk_q=rng.uniform(0.5, 1.0),
        bulge_r_e=bulge_r_e,
        bulge_n=on_grid(rng.uniform(1.5, 4), 0.5),
    )
    r_start = max(2.0 * bulge_r_e, 0.3 * comps[1].truth["r_e_pix"])
    extra = _add_arms(rng, comps, scale=scale, r_start=r_start, phase=rng.uniform(0, 2 * np.pi))
    return comps, extra


def _barred_spiral(rng, *, scale, n_grid) -> Sample:
    bar_share = rng.uniform(0.25, 0.4)
    comps = _bulge_disk(
        rng,
        scale=scale,
        bt=rng.uniform(0.05, 0.2),
        disk_r_e=rng.uniform(7.0, 12.0),
        disk_q=rng.uniform(0.5, 1.0),
        bulge_r_e=rng.uniform(1.0, 2.0),
        bulge_n=2.0,
    )
    disk = comps[1]
    r_e, q, pa = disk.truth["r_e_pix"], disk.truth["q"], disk.truth["pa_deg"]
    bar_r_e, bar_q, bar_angle = (
        rng.uniform(0.5, 0.7) * r_e,
        rng.uniform(0.15, 0.3),
        rng.uniform(0, 180),
    )
    face_on_bar = sersic(0.5, bar_r_e, bar_q, bar_angle, pixel_scale=scale)
    bar_truth = dict(
        zip(
            ("r_e_pix", "q", "pa_deg"),
            projected_gaussian_shape(bar_r_e, bar_q, bar_angle, q, pa),
            strict=True,
        )
    )
    disk.fraction -= bar_share
    bar = Component("bar", project(face_on_bar, q, pa), bar_share, "old", {**bar_truth, "n": 0.5})
    comps.insert(1, bar)
    r_start = 1.7 * bar_r_e
    pitch_phase = np.radians(bar_angle) - np.log(r_start) / np.tan(np.radians(20.0))
    extra = _add_arms(rng, comps, scale=scale, r_start=r_start, phase=2 * pitch_phase)
    return comps, extra


def _edge_on(rng, *, scale, n_grid) -> Sample:
    pa, bt = rng.uniform(0, 180), rng.uniform(0.0, 0.25)
    inclination, h_over_r, r_e = (
        rng.uniform(84.0, 90.0),
        rng.uniform(0.08, 0.2),
        rng.uniform(7.0, 13.0),
    )
    profile = galsim.InclinedExponential(
        inclination * galsim.degrees,
        half_light_radius=r_e * scale,
        scale_h_over_r=h_over_r,
        gsparams=GSPARAMS,
    ).rotate(pa * galsim.degrees)
    i = np.radians(inclination)
    q = float(np.sqrt(np.cos(i) ** 2 + (h_over_r * np.sin(i)) ** 2))
    disk = Component(
        "disk", profile, 1 - bt, "young", {"r_e_pix": r_e, "n": 1.0, "q": q, "pa_deg": pa}
    )
    bulge = _sersic_component(
        "bulge",
        "old",
        bt,
        n=4.0,
        r_e=rng.uniform(1.0, 2.5),
        q=rng.uniform(0.6, 0.9),
        pa=pa,
        scale=scale,
    )
    return [bulge, disk], {"disk_inclination_deg": inclination, "disk_scale_h_over_r": h_over_r}


def _merger(rng, *, scale) -> Sample:
    f_companion = rng.uniform(0.3, 1.0) / 2.0
    tail_share = rng.uniform(0.1, 0.25)
    main_share = 1 - f_companion - tail_share
    sep, angle = rng.uniform(8.0, 16.0), rng.uniform(0, 2 * np.pi)
    dx, dy = sep * np.cos(angle), sep * np.sin(angle)
    main = _sersic_component(
        "bulge",
        "old",
        main_share,
        n=on_grid(rng.uniform(1.0, 4.0), 0.5),
        r_e=rng.uniform(3.0, 6.0),
        q=rng.uniform(0.5, 1.0),
        pa=rng.uniform(0, 180),
        scale=scale,
    )
    comp = _sersic_component(
        "companion",
        "old",
        f_companion,
        n=on_grid(rng.uniform(0.8, 3.0), 0.5),
        r_e=rng.uniform(2.0, 5.0),
        q=rng.uniform(0.5, 1.0),
        pa=rng.uniform(0, 180),
        scale=scale,
    )
    comp.profile = comp.profile.shift(dx * scale, dy * scale)
    comp.truth.update({"dx_pix": dx, "dy_pix": dy})
    n_blobs = int(rng.integers(15, 26))
    sweep = rng.choice([-1.0, 1.0]) * np.linspace(0.0, rng.uniform(1.0, 2.0), n_blobs)
    arc_radius = rng.uniform(0.8, 1.3) * sep
    points = np.stack(
        [
            dx + arc_radius * (np.cos(angle + sweep) - np.cos(angle)),
            dy + arc_radius * (np.sin(angle + sweep) - np.sin(angle)),
        ],
        axis=1,
    )
    tail = blobs(
        points, rng.uniform(0.8, 1.5, n_blobs), np.linspace(1.0, 0.3, n_blobs), pixel_scale=scale
    )
    comps = [main, comp, Component("tail", tail, tail_share, "young")]
    return comps, {"tail_fraction": tail_share, "irregular_kind": 0.0}


def _clumpy(rng, *, scale) -> Sample:
    clump_share, r_e, q = rng.uniform(0.45, 0.7), rng.uniform(5.0, 9.0), rng.uniform(0.4, 1.0)
    disk = _sersic_component(
        "disk",
        "young",
        1 - clump_share,
        n=on_grid(rng.uniform(0.5, 1.0), 0.25),
        r_e=r_e,
        q=q,
        pa=rng.uniform(0, 180),
        scale=scale,
    )
    n_clumps = int(rng.integers(3, 9))
    radius, theta = rng.uniform(0.3 * r_e, 1.8 * r_e, n_clumps), rng.uniform(0, 2 * np.pi, n_clumps)
    points = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    clumps = blobs(
        points, rng.uniform(0.8, 1.5, n_clumps), rng.uniform(0.3, 1.0, n_clumps), pixel_scale=scale
    )
    comps = [disk, Component("clumps", clumps, clump_share, "young")]
    return comps, {"clumps_fraction": clump_share, "clump_count": n_clumps, "irregular_kind": 1.0}


def _irregular(rng, *, scale, n_grid) -> Sample:
    return _merger(rng, scale=scale) if rng.random() < 0.5 else _clumpy(rng, scale=scale)


#: Sampler of each morphology class: ``sampler(rng, scale=..., n_grid=...)``.
SAMPLERS: dict[str, Callable[..., Sample]] = {
    "elliptical": _elliptical,
    "lenticular": _lenticular,
    "spiral": _spiral,
    "barred_spiral": _barred_spiral,
    "edge_on": _edge_on,
    "irregular": _irregular,
}
