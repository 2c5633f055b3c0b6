"""Refine a fit's shape with Gauss–Newton steps on the image likelihood.

The network's axis ratio and position angle come from a small convolutional
network; a careful classical fit finds them from the likelihood of every pixel.
:func:`refine_shape` starts from the network's parameters and takes Gauss–Newton
steps on that likelihood, batched in torch: the PSF-convolved Sérsic model and its
derivatives are rendered for every galaxy at once (at pixel centres, the PSF
applied by FFT on the stamp), and the weighted normal equations solved galaxy by
galaxy. One step from the network's start lands next to the maximum-likelihood
answer (measured in ``benchmarks/sersic.py``), at a cost of a few FFTs per galaxy.

Free parameters, in :data:`FREE_PARAMETERS` order: the log surface brightness at
``r_e`` (its start from the network's flux), the centre ``x0, y0`` (pixels, x the
column; its start the light-weighted centroid), ``ln r_e`` and the ellipticity
``(e1, e2) = (1 - q)/(1 + q) (cos 2θ, sin 2θ)``, which is smooth through round
shapes where the angle is not. The Sérsic index stays the network's. The profile

.. math::

    I(x, y) = I_e \\exp\\{-b_n [(r / r_e)^{1/n} - 1]\\}, \\qquad
    r^2 = x_{\\rm maj}^2 + (x_{\\rm min} / q)^2

(as :mod:`morpho.sersic.profile`), with ``b_n`` from the asymptotic series of
Ciotti & Bertin (1999, A&A 352, 447): 0.2% above the exact value at n = 0.5,
7e-5 at n = 1, below 1e-5 from n = 1.5.

The pixel weights are the inverse variance ``σ_bg² + max(model, 0) / gain``: the
background's, plus the source's Poisson noise when the gain (electrons per image
unit) is known. The uncertainties of q and PA come from the inverse of the last
step's normal matrix (the Fisher information at the fit).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from morpho.data.errors import DataError
from morpho.sersic.likelihood import axis_ratio, circular_sigma, ellipticity
from morpho.sersic.pose import weighted_moments
from morpho.sersic.psf import check_psfs

__all__ = ["FREE_PARAMETERS", "RefinedShape", "psf_transfer", "refine_shape", "sersic_b"]

#: The parameters a step moves, in the order of the normal equations.
FREE_PARAMETERS: tuple[str, ...] = ("ln_amplitude", "x0", "y0", "ln_r_e", "e1", "e2")

#: What refine_shape reads of its start.
_START_KEYS = ("flux", "r_e_pix", "n", "q", "pa_deg", "q_err", "pa_deg_err")

#: Largest ellipticity |e| a step may reach (q = 0.05).
_MAX_ELLIPTICITY = 0.95 / 1.05


def sersic_b(n: Tensor) -> Tensor:
    """``b_n`` of the Sérsic profile: half the light inside ``r_e``.

    The asymptotic series of Ciotti & Bertin (1999, A&A 352, 447, eq. 18) to the
    ``n⁻³`` term; against the exact root of ``γ(2n, b) = Γ(2n) / 2`` it is 0.2% off
    at n = 0.5, 7e-5 at n = 1 and below 1e-5 from n = 1.5.
    """
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2) + 131 / (1148175 * n**3)


def _ln_amplitude(flux: Tensor, r_e: Tensor, n: Tensor, q: Tensor) -> Tensor:
    """ln I_e of a profile of total ``flux`` (Graham & Driver 2005, eq. 4, times q)."""
    b = sersic_b(n)
    per_amplitude = (
        math.log(2 * math.pi)
        + q.log()
        + 2 * r_e.log()
        + n.log()
        + b
        - 2 * n * b.log()
        + torch.lgamma(2 * n)
    )
    return flux.log() - per_amplitude


def _to_ellipticity(q: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    e = ellipticity(q)
    return e * torch.cos(2 * theta), e * torch.sin(2 * theta)


def _from_ellipticity(e1: Tensor, e2: Tensor) -> tuple[Tensor, Tensor]:
    e = torch.hypot(e1, e2).clamp(max=_MAX_ELLIPTICITY)
    return axis_ratio(e), 0.5 * torch.atan2(e2, e1)


def _render(params: Tensor, n: Tensor, size: int) -> Tensor:
    """The profile at pixel centres and its derivatives by the free parameters.

    ``params`` (N, 6) hold ``ln I_e, x0, y0, ln r_e, q, θ`` (θ in radians from +x
    towards +y); returns (N, 6, size, size): the model, then its derivatives by
    ``x0, y0, ln r_e, e1, e2`` (the derivative by ``ln I_e`` is the model itself and
    is left to the caller).
    """
    ln_amp, x0, y0, ln_r_e, q, theta = (t[:, None, None] for t in params.unbind(dim=1))
    n = n[:, None, None]
    b = sersic_b(n)
    ticks = torch.arange(size, dtype=params.dtype, device=params.device)
    dx, dy = ticks[None, None, :] - x0, ticks[None, :, None] - y0
    cos, sin = torch.cos(theta), torch.sin(theta)
    major, minor = dx * cos + dy * sin, dy * cos - dx * sin
    r2 = major**2 + (minor / q) ** 2 + 1e-12  # the centre: finite, its derivatives vanish
    u = torch.exp((0.5 * torch.log(r2) - ln_r_e) / n)  # (r / r_e)^(1/n)
    model = torch.exp(ln_amp - b * (u - 1))
    slope = -model * b * u / n  # dI / d ln r
    d_x0 = slope * (-(major * cos - minor * sin / q**2) / r2)
    d_y0 = slope * (-(major * sin + minor * cos / q**2) / r2)
    d_ln_r_e = -slope
    d_q = slope * (-(minor**2) / q**3 / r2)
    # dI/dθ / (2|e|): finite through round shapes, where dI/dθ itself vanishes.
    d_theta = slope * (major * minor / r2) * (-((1 + q) ** 2) / (2 * q**2))
    dq_de = -2 / (1 + ellipticity(q)) ** 2
    cos2, sin2 = torch.cos(2 * theta), torch.sin(2 * theta)
    d_e1 = d_q * dq_de * cos2 - d_theta * sin2
    d_e2 = d_q * dq_de * sin2 + d_theta * cos2
    return torch.stack([model, d_x0, d_y0, d_ln_r_e, d_e1, d_e2], dim=1)


def psf_transfer(psfs: Tensor, size: int) -> Tensor:
    """Real FFT of ``(N, P, P)`` (or ``(P, P)``) PSFs wrapped onto a ``size`` stamp.

    The PSF's central pixel goes to the origin; a PSF wider than the stamp keeps
    its central ``size - 1`` pixels (circular convolution on the stamp).

    Returns
    -------
    (N, size, size // 2 + 1) complex tensor (N = 1 for one PSF).
    """
    psfs = psfs if psfs.ndim == 3 else psfs[None]
    side = psfs.shape[-1]
    half = min(side // 2, size // 2 - 1)
    centre = side // 2
    kept = psfs[:, centre - half : centre + half + 1, centre - half : centre + half + 1]
    rolled = torch.zeros(len(psfs), size, size, dtype=psfs.dtype, device=psfs.device)
    index = (torch.arange(-half, half + 1, device=psfs.device)) % size
    rolled[:, index[:, None], index[None, :]] = kept
    return torch.fft.rfft2(rolled)


@dataclass(frozen=True)
class RefinedShape:
    """Axis ratio and position angle after the refinement, with their 1σ errors.

    Attributes
    ----------
    q, q_err : (N,) tensors
    pa_deg, pa_deg_err : (N,) tensors
        Degrees from +x towards +y, in [0, 180).
    x0, y0 : (N,) tensors
        The fitted centre (pixels, x the column index).
    snr : (N,) tensor
        S/N of the start's model, ``sqrt(Σ model²) / σ_bg`` (the simulator's definition).
    refined : (N,) bool tensor
        True where q and PA are the likelihood's; False where the start's S/N is
        below ``min_snr`` or a step failed (a singular normal matrix or a non-finite
        value): those galaxies keep the start's q, PA and errors.
    """

    q: Tensor
    q_err: Tensor
    pa_deg: Tensor
    pa_deg_err: Tensor
    x0: Tensor
    y0: Tensor
    snr: Tensor
    refined: Tensor


def _check(images: Tensor, psfs: Tensor, background_sigma: Tensor) -> None:
    if images.ndim != 3 or images.shape[-1] != images.shape[-2]:
        raise DataError(
            f"refine_shape needs (N, S, S) images of one band, got {tuple(images.shape)}"
        )
    if psfs.ndim not in (2, 3):
        raise DataError(f"refine_shape needs (P, P) or (N, P, P) PSFs, got {tuple(psfs.shape)}")
    if psfs.ndim == 3 and len(psfs) not in (1, len(images)):
        raise DataError(f"{len(psfs)} PSFs for {len(images)} images: give one, or one per image")
    stack = psfs if psfs.ndim == 3 else psfs[None]
    check_psfs(stack.detach().cpu().numpy(), origin="refine_shape")
    if not (background_sigma > 0).all():
        raise DataError("refine_shape needs a positive background σ for every image")


def refine_shape(
    images: Tensor,
    psfs: Tensor,
    start: dict[str, Tensor],
    *,
    background_sigma: Tensor,
    gain: Tensor | float | None = None,
    steps: int = 1,
    min_snr: float = 20.0,
    compile: bool = False,
) -> RefinedShape:
    """Axis ratio and position angle of Sérsic galaxies, refined on the likelihood.

    Parameters
    ----------
    images : (N, S, S) tensor
        Background-subtracted flux images of one band.
    psfs : (P, P) or (N, P, P) tensor
        Effective PSFs (P odd, each summing to 1), one for all or one per image.
    start : dict of (N,) tensors
        ``flux``, ``r_e_pix``, ``n``, ``q``, ``pa_deg`` and ``q_err``, ``pa_deg_err``
        (e.g. from :meth:`morpho.models.SersicModule.predict`).
    background_sigma : (N,) tensor
        Noise σ of the background, image units.
    gain : float or (N,) tensor, optional
        Electrons per image unit; adds the source's Poisson variance to the weights.
    steps : int
        Gauss–Newton steps (one lands next to the likelihood's maximum from a
        network's start).
    min_snr : float
        Galaxies whose start model has a lower S/N keep the start: below S/N 20 one
        step from the network's start made q worse and its Fisher errors too small
        (``benchmarks/RESULTS.md``); 0 refines all.
    compile : bool
        Run the rendering and the normal equations through :func:`torch.compile`
        (static shapes: a one-off cost of seconds per batch shape, then 1.7× faster
        on 2 CPU cores; the FFTs stay eager).

    Returns
    -------
    RefinedShape

    Raises
    ------
    DataError
        If the images, PSFs or σ are not as described.
    """
    _check(images, psfs, background_sigma)
    if steps < 1:
        raise ValueError(f"refine_shape needs steps >= 1, got {steps}")
    # float32 throughout: float64 gave the same errors to 1e-6 at half the speed.
    data = images.to(torch.float32)
    size = data.shape[-1]
    transfer = psf_transfer(psfs.to(data), size)
    variance = (background_sigma.to(data) ** 2)[:, None, None]
    inverse_gain = torch.as_tensor(0.0 if gain is None else gain, dtype=data.dtype)
    inverse_gain = torch.where(inverse_gain > 0, 1 / inverse_gain, 0.0).reshape(-1, 1, 1)
    start = {key: start[key].to(data) for key in _START_KEYS}
    params = _start_parameters(data, start)
    render, normal_equations = _compiled() if compile else (_render, _normal_equations)
    ok = torch.ones(len(data), dtype=torch.bool, device=data.device)
    snr = None
    for _ in range(steps):
        spectra = torch.fft.rfft2(render(params, start["n"], size)) * transfer[:, None]
        rendered = torch.fft.irfft2(spectra, s=(size, size))
        if snr is None:
            snr = rendered[:, 0].square().sum(dim=(1, 2)).sqrt() / variance[:, 0, 0].sqrt()
            ok &= snr >= min_snr
        normal, gradient = normal_equations(rendered, data, variance, inverse_gain)
        step, info = torch.linalg.solve_ex(normal, gradient)
        ok &= (info == 0) & torch.isfinite(step).all(dim=1)
        params = _moved(params, torch.where(ok[:, None], step, torch.zeros_like(step)))
    # Galaxies left unrefined get an identity in place of their normal matrix, which
    # may be singular (their errors are the start's, below).
    unrefined = torch.where(ok, 0.0, 1.0).to(data)[:, None].expand(-1, len(FREE_PARAMETERS))
    covariance = torch.linalg.inv(normal + torch.diag_embed(unrefined))
    q_err, pa_err = _shape_errors(params[:, 4], params[:, 5], covariance[:, 4:, 4:])
    chosen = {
        "q": params[:, 4],
        "q_err": q_err,
        "pa_deg": params[:, 5].rad2deg() % 180,
        "pa_deg_err": pa_err,
    }
    out = {
        key: torch.where(ok, value, start[key]).to(images.dtype) for key, value in chosen.items()
    }
    centre = {"x0": params[:, 1].to(images.dtype), "y0": params[:, 2].to(images.dtype)}
    return RefinedShape(**out, **centre, snr=snr.to(images.dtype), refined=ok)


@functools.cache
def _compiled():
    """The rendering and the normal equations compiled once per process."""
    return torch.compile(_render, dynamic=False), torch.compile(_normal_equations, dynamic=False)


def _start_parameters(data: Tensor, start: dict[str, Tensor]) -> Tensor:
    """(N, 6) ``ln I_e, x0, y0, ln r_e, q, θ`` from the start and the images' centroid."""
    flux, r_e, n, pa = (start[k] for k in ("flux", "r_e_pix", "n", "pa_deg"))
    q = start["q"].clamp(0.05, 1.0)
    # The light-weighted centre under pose's round window (σ = 8 px) on the stamp centre.
    x1, y1, _, _, _, total = weighted_moments(data.clamp_min(0), weight_sigma=8.0)
    middle = (data.shape[-1] - 1) / 2
    total = total.clamp_min(1e-30)
    x0, y0 = x1 / total + middle, y1 / total + middle
    return torch.stack([_ln_amplitude(flux, r_e, n, q), x0, y0, r_e.log(), q, pa.deg2rad()], 1)


def _normal_equations(
    rendered: Tensor, data: Tensor, variance: Tensor, inverse_gain: Tensor
) -> tuple[Tensor, Tensor]:
    """Weighted normal matrix (N, 6, 6) and gradient (N, 6) at the rendered model.

    ``rendered`` (N, 6, S, S) is the PSF-convolved model and its derivatives; the
    model is also its own derivative by ``ln I_e``, so it serves as both.
    """
    model = rendered[:, 0]
    weight = 1 / (variance + model.clamp_min(0) * inverse_gain)
    flat = rendered.flatten(2)
    weighted = flat * weight.flatten(1)[:, None]
    normal = weighted @ flat.transpose(1, 2)
    gradient = (weighted @ (data - model).flatten(1)[:, :, None])[..., 0]
    return normal, gradient


def _moved(params: Tensor, step: Tensor) -> Tensor:
    """``params`` (ln I_e, x0, y0, ln r_e, q, θ) after a step in the free parameters."""
    e1, e2 = _to_ellipticity(params[:, 4], params[:, 5])
    q, theta = _from_ellipticity(e1 + step[:, 4], e2 + step[:, 5])
    return torch.cat([params[:, :4] + step[:, :4], q[:, None], theta[:, None]], dim=1)


def _shape_errors(q: Tensor, theta: Tensor, covariance: Tensor) -> tuple[Tensor, Tensor]:
    """1σ of q and of the position angle (degrees) from the (N, 2, 2) covariance of e.

    The angle's is the circular σ of ``2θ`` under a von Mises of concentration
    ``κ = (|e|² - σ_t²) / σ_t²`` (σ_t: e's σ across its direction), halved: noise
    makes a fitted |e| longer than the true one by about σ_t²/(2|e|), and near round
    shapes the linear ``σ_t / (2|e|)`` is then far too small (68% coverage 0.35
    at q > 0.95 against 0.68 with this; ``benchmarks/RESULTS.md``, Sérsic Q22).
    """
    e = ellipticity(q)
    radial = torch.stack([torch.cos(2 * theta), torch.sin(2 * theta)], dim=1)
    tangent = torch.stack([-torch.sin(2 * theta), torch.cos(2 * theta)], dim=1)
    var_e = torch.einsum("ni,nij,nj->n", radial, covariance, radial).clamp_min(0)
    var_t = torch.einsum("ni,nij,nj->n", tangent, covariance, tangent).clamp_min(1e-30)
    q_err = 2 / (1 + e) ** 2 * var_e.sqrt()
    # float64: in float32 I1/I0 rounds to 1 (σ to 0) for the κ of bright, thin galaxies.
    kappa = ((e.double() ** 2 - var_t) / var_t).clamp(1e-3, 1e12)
    pa_err = torch.rad2deg(circular_sigma(kappa)).to(q.dtype) / 2
    return q_err, pa_err.clamp(max=90.0)
