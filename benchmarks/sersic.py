"""The Sérsic network against a careful classical fit, on the same simulated galaxies.

Trains ``experiment=sersic`` on simulated single-Sérsic galaxies (64×64, S/N
drawn log-uniformly in 5-200 so that one model serves both test sets), then on
held-out test sets at S/N 20-200 and 5-20 compares, on the same images:

- median absolute relative error of n, r_e and flux; median absolute error of
  q and of PA (degrees); the fraction of catastrophic n errors (|Δn/n| > 0.5);
- the 68% and 95% coverage of the network's calibrated intervals (all five
  parameters pooled, and per parameter);
- galaxies per second on the same number of threads: the network batched, the
  classical fit (:func:`morpho.sersic.classical.fit_sersic`) one galaxy per
  single-threaded process; and the ratio.

Usage::

    python benchmarks/sersic.py --quick      # < 15 min on 2 cores
    python benchmarks/sersic.py              # the full run

The last line printed is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from morpho.cli.train import train
from morpho.config import config_dir
from morpho.data.errors import DataError
from morpho.data.simulate import NoiseModel, PSFSpec, SimulationSpec, simulate_to_hdf5
from morpho.models import load_model
from morpho.sersic.classical import fit_sersic
from morpho.sersic.plots import save_predicted_vs_true
from morpho.sersic.refine import refine_shape
from morpho.utils import native_bf16

HERE = Path(__file__).resolve().parent
PARAMS = ("flux", "r_e_pix", "n", "q", "pa_deg")
TRUTH = {
    "flux": "total_flux",
    "r_e_pix": "sersic_r_e_pix",
    "n": "sersic_n",
    "q": "sersic_q",
    "pa_deg": "sersic_pa_deg",
}


def _simulate(path: Path, n: int, snr: tuple[float, float], seed: int) -> Path:
    if path.exists():
        return path
    # As conf/simulation/single_sersic.yaml: PSF stamps that hold the Moffat wings.
    spec = SimulationSpec(mode="single_sersic", snr=snr, psf=PSFSpec(stamp_size=51))
    return simulate_to_hdf5(path, n_galaxies=n, spec=spec, seed=seed, progress=False)


def _train(args, workdir: Path) -> Path:
    overrides = [
        f"experiment={args.experiment}",
        f"paths.data_dir={workdir}",
        f"paths.output_dir={workdir / 'train'}",
        f"data.prepare.n_galaxies={args.n_train}",
        "data.prepare.spec.snr=[5,200]",
        f"trainer.max_epochs={args.epochs}",
        "logger=csv",
        "callbacks.progress_bar=null",
        "test=false",
        *args.override,
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    result = train(cfg)
    # The last epoch: the learning rate has decayed to its floor (cosine schedule).
    return Path(result["last_checkpoint"])


def _read(path: Path, n: int):
    with h5py.File(path, "r") as file:
        images = torch.from_numpy(file["images"][:n])
        psfs = file["psf"][:n, 0].astype(np.float64)
        catalog = pd.DataFrame({k: file["catalog"][k][:n] for k in file["catalog"]})
    return images, psfs, catalog


def _network(model, images, catalog, threads: int, *, bf16: bool, compile: bool, refine=None):
    """Predictions of the whole set, galaxies/s (batched, after warm-up; the median of
    repeated passes) and compile seconds.

    Timed from flux images in memory to the calibrated table (noise estimate,
    orientation, encoder, head), as the classical fit is timed from the image.
    ``refine`` = ``(psfs, steps)``: each batch's q and PA then refined by
    :func:`morpho.sersic.refine.refine_shape` (its noise estimate included in the time).
    """
    torch.set_num_threads(threads)
    fwhm = model.psf_fwhm_pix(torch.as_tensor(catalog["psf_fwhm_arcsec"].to_numpy(np.float32)))
    wings = torch.as_tensor(catalog["psf_wing_fraction"].to_numpy(np.float32))
    gain = torch.as_tensor(catalog["gain"].to_numpy(np.float32))
    predict = model.predictor(bf16=bf16, compile=compile)

    def fit(rows: slice) -> dict:
        out = predict(images[rows], fwhm[rows], wings[rows])
        if refine is None:
            return out
        psfs, steps = refine
        sigma = model.inputs.noise_sigma(images[rows])
        shape = refine_shape(
            images[rows, 0],
            psfs[rows],
            out,
            background_sigma=sigma,
            gain=gain[rows],
            steps=steps,
            compile=compile,
        )
        return {
            **out,
            "q": shape.q,
            "q_err": shape.q_err,
            "pa_deg": shape.pa_deg,
            "pa_deg_err": shape.pa_deg_err,
        }

    batch = 1024
    starts = range(0, len(images), batch)
    warm = time.perf_counter()
    for i in [starts[0], starts[-1]] * 2:  # every batch shape, compiled (and cached) first
        fit(slice(i, i + batch))
    warm_seconds = time.perf_counter() - warm
    # One pass over a quick run's 1000 galaxies lasts a tenth of a second, and single
    # passes varied by ±20% between runs: time passes until 3 and 2 s are done, and
    # report the median rate.
    rates: list[float] = []
    while len(rates) < 3 or sum(len(images) / r for r in rates) < 2.0:
        start = time.perf_counter()
        parts = [fit(slice(i, i + batch)) for i in starts]
        rates.append(len(images) / (time.perf_counter() - start))
    table = pd.DataFrame({k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]})
    return table, float(np.median(rates)), warm_seconds


def _classical_one(task):
    image, psf, noise = task
    try:
        fit = fit_sersic(image, psf, noise=NoiseModel(**noise))
    except DataError:  # no source above its detection threshold: the fit refuses the stamp
        nan = float("nan")
        names = ("flux", "r_e_pix", "n", "q", "pa_deg", "seconds")
        return {**dict.fromkeys(names, nan), "at_n_bound": False, "refused": True}
    return {
        "flux": fit.flux,
        "r_e_pix": fit.r_e,
        "n": fit.n,
        "q": fit.q,
        "pa_deg": fit.pa_deg,
        "seconds": fit.seconds,
        "at_n_bound": "n" in fit.at_bound,
        "refused": False,
    }


def _single_thread() -> None:
    torch.set_num_threads(1)


def _classical(images: torch.Tensor, psfs: np.ndarray, catalog: pd.DataFrame, threads: int):
    """Classical fits, one single-threaded process per thread; rows and galaxies/s."""
    noise = {k: float(catalog[k].iloc[0]) for k in ("sky_level", "read_noise", "gain")}
    tasks = [(images[i, 0].numpy().astype(np.float64), psfs[i], noise) for i in range(len(images))]
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers
    context = multiprocessing.get_context("spawn")
    with context.Pool(threads, initializer=_single_thread) as pool:
        pool.map(_classical_one, tasks[:threads])  # warm up imports
        start = time.perf_counter()
        rows = pool.map(_classical_one, tasks, chunksize=1)
        seconds = time.perf_counter() - start
    return pd.DataFrame(rows), len(tasks) / seconds


def _errors(predicted: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    relative = {
        k: (predicted[k].to_numpy() / truth[k].to_numpy() - 1) for k in ("flux", "r_e_pix", "n")
    }
    pa = (predicted["pa_deg"].to_numpy() - truth["pa_deg"].to_numpy() + 90) % 180 - 90
    return {
        "n_mare": float(np.median(np.abs(relative["n"]))),
        "re_mare": float(np.median(np.abs(relative["r_e_pix"]))),
        "flux_mare": float(np.median(np.abs(relative["flux"]))),
        "q_mae": float(np.median(np.abs(predicted["q"].to_numpy() - truth["q"].to_numpy()))),
        "pa_mae_deg": float(np.median(np.abs(pa))),
        "catastrophic_n": float(np.mean(np.abs(relative["n"]) > 0.5)),
    }


def _coverage(predicted: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Fraction of true values inside the 68% and 95% intervals, per parameter and pooled.

    The 95% interval is 1.96 times the 68% one in the transformed variable the
    model is Gaussian in (ln flux, ln r_e, ln n, q, 2·PA).
    """
    inside = {68: [], 95: []}
    out = {}
    for name in PARAMS:
        p, t = predicted[name].to_numpy(), truth[name].to_numpy()
        if name in ("flux", "r_e_pix", "n"):
            half = np.log(predicted[f"{name}_hi"].to_numpy() / p)
            error = np.abs(np.log(t / p))
        elif name == "q":
            half, error = predicted["q_err"].to_numpy(), np.abs(t - p)
        else:
            half = predicted["pa_deg_err"].to_numpy()
            error = np.abs((p - t + 90) % 180 - 90)
        for level, factor in ((68, 1.0), (95, 1.959964)):
            hits = error <= factor * half
            inside[level].append(hits)
            out[f"coverage{level}_{name}"] = float(hits.mean())
    out["coverage68"] = float(np.mean(inside[68]))
    out["coverage95"] = float(np.mean(inside[95]))
    return out


def _evaluate(model, path: Path, args, label: str, workdir: Path) -> dict:
    images, psfs, catalog = _read(path, args.n_test)
    truth = pd.DataFrame({k: catalog[v].to_numpy() for k, v in TRUTH.items()})
    table, net_rate, warm = _network(
        model, images, catalog, args.threads, bf16=args.bf16, compile=args.compile
    )
    _, fp32_rate, _ = _network(model, images, catalog, args.threads, bf16=False, compile=False)
    save_predicted_vs_true(workdir / f"predicted_vs_true_{label}.png", table, truth)
    k = min(args.n_classical, len(images))
    classical, classical_rate = _classical(images[:k], psfs[:k], catalog.iloc[:k], args.threads)
    # Side by side on the galaxies the classical fit accepted (it refuses stamps whose
    # smoothed peak is below 5σ); the refused fraction is reported.
    accepted = ~classical["refused"].to_numpy()
    same, same_truth = table.iloc[:k][accepted], truth.iloc[:k][accepted]
    out = {"n_test": len(images), "n_classical": k}
    out["classical_refused"] = float(1 - accepted.mean())
    out.update(_errors(table, truth))
    out.update(_coverage(table, truth))
    out.update({f"same_{key}": v for key, v in _errors(same, same_truth).items()})
    classical_errors = _errors(classical[accepted], same_truth)
    out.update({f"classical_{key}": v for key, v in classical_errors.items()})
    out["classical_at_n_bound"] = float(classical["at_n_bound"][accepted].mean())
    out["classical_median_seconds"] = float(classical["seconds"][accepted].median())
    out["net_galaxies_per_second"] = net_rate
    out["net_galaxies_per_second_fp32"] = fp32_rate
    out["net_precision"] = "bf16" if args.bf16 else "fp32"
    out["net_warm_up_seconds"] = warm
    out["classical_galaxies_per_second_from_median"] = (
        args.threads / out["classical_median_seconds"]
    )
    out["classical_galaxies_per_second"] = classical_rate
    out["speedup"] = net_rate / classical_rate
    out["out_of_range_fraction"] = float(table["out_of_range"].mean())
    if args.refine_steps:
        out.update(_refined(model, images, psfs, catalog, truth, args, accepted, classical_rate))
    return out


def _refined(model, images, psfs, catalog, truth, args, accepted, classical_rate) -> dict:
    """q and PA after ``--refine-steps`` likelihood steps: errors, coverage, speed."""
    refine = (torch.as_tensor(psfs, dtype=torch.float32), args.refine_steps)
    table, rate, _ = _network(
        model, images, catalog, args.threads, bf16=args.bf16, compile=args.compile, refine=refine
    )
    k = len(accepted)
    errors = _errors(table, truth)
    same = _errors(table.iloc[:k][accepted], truth.iloc[:k][accepted])
    coverage = _coverage(table, truth)
    out = {f"refined_{key}": errors[key] for key in ("q_mae", "pa_mae_deg")}
    out.update({f"refined_same_{key}": same[key] for key in ("q_mae", "pa_mae_deg")})
    for level in (68, 95):
        for name in ("q", "pa_deg"):
            out[f"refined_coverage{level}_{name}"] = coverage[f"coverage{level}_{name}"]
    out["refined_galaxies_per_second"] = rate
    out["refined_speedup"] = rate / classical_rate
    return out


def run(args) -> dict:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    test_sets = {
        "snr20_200": _simulate(workdir / "test_snr20_200.h5", args.n_test, (20.0, 200.0), 101),
        "snr5_20": _simulate(workdir / "test_snr5_20.h5", args.n_test, (5.0, 20.0), 102),
    }
    checkpoint = Path(args.checkpoint) if args.checkpoint else _train(args, workdir)
    trained = time.perf_counter()
    model = load_model(checkpoint, kind="sersic")
    results = {
        name: _evaluate(model, path, args, name, workdir) for name, path in test_sets.items()
    }
    return {
        "checkpoint": str(checkpoint),
        "train_seconds": trained - start,
        "total_seconds": time.perf_counter() - start,
        "temperature": model.temperature.tolist(),
        **results,
    }


def _summary(result: dict) -> dict:
    main = result["snr20_200"]
    keys = ("n_mare", "re_mare", "flux_mare", "q_mae", "pa_mae_deg", "catastrophic_n")
    summary = {key: main[f"same_{key}"] for key in keys}
    summary.update({"coverage68": main["coverage68"], "coverage95": main["coverage95"]})
    for key in ("n_mare", "re_mare", "flux_mare", "catastrophic_n"):
        summary[f"classical_{key}"] = main[f"classical_{key}"]
    for key in ("net_galaxies_per_second", "classical_galaxies_per_second", "speedup"):
        summary[key] = main[key]
    refined = ("refined_same_q_mae", "refined_same_pa_mae_deg", "refined_speedup")
    summary.update({key: main[key] for key in refined if key in main})
    faint = result["snr5_20"]
    summary.update({f"snr5_20_{key}": faint[f"same_{key}"] for key in keys})
    summary.update({f"snr5_20_classical_{key}": faint[f"classical_{key}"] for key in keys})
    summary["snr5_20_coverage68"] = faint["coverage68"]
    summary["snr5_20_coverage95"] = faint["coverage95"]
    return summary


def _print(result: dict) -> None:
    for name in ("snr20_200", "snr5_20"):
        r = result[name]
        print(
            f"\n== test set S/N {name[3:].replace('_', '-')}: {r['n_test']} galaxies, "
            f"classical fit on the first {r['n_classical']} =="
        )
        print(f"{'':24s}{'network':>12s}{'network(same)':>15s}{'classical':>12s}")
        for key in ("n_mare", "re_mare", "flux_mare", "q_mae", "pa_mae_deg", "catastrophic_n"):
            print(f"{key:24s}{r[key]:12.4f}{r[f'same_{key}']:15.4f}{r[f'classical_{key}']:12.4f}")
        print(
            f"coverage 68% / 95%: {r['coverage68']:.3f} / {r['coverage95']:.3f}  (per parameter: "
            + ", ".join(
                f"{p} {r[f'coverage68_{p}']:.2f}/{r[f'coverage95_{p}']:.2f}" for p in PARAMS
            )
            + ")"
        )
        print(
            f"galaxies/s: network {r['net_galaxies_per_second']:.0f} "
            f"({r['net_galaxies_per_second_fp32']:.0f} in float32, not compiled; "
            f"warm-up {r['net_warm_up_seconds']:.0f} s), classical "
            f"{r['classical_galaxies_per_second']:.2f} "
            f"(median {r['classical_median_seconds']:.3f} s per fit), "
            f"speed-up {r['speedup']:.0f}x; classical fits at an n bound "
            f"{r['classical_at_n_bound']:.3f}, refused (no source above 5σ) "
            f"{r['classical_refused']:.3f}"
        )
        if "refined_q_mae" in r:
            print(
                f"refined ({r['refined_galaxies_per_second']:.0f} galaxies/s with the network, "
                f"speed-up {r['refined_speedup']:.0f}x): q {r['refined_q_mae']:.4f} "
                f"(same {r['refined_same_q_mae']:.4f}), PA {r['refined_pa_mae_deg']:.3f} "
                f"(same {r['refined_same_pa_mae_deg']:.3f}); coverage q "
                f"{r['refined_coverage68_q']:.2f}/{r['refined_coverage95_q']:.2f}, PA "
                f"{r['refined_coverage68_pa_deg']:.2f}/{r['refined_coverage95_pa_deg']:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sets, short training (< 15 min)"
    )
    parser.add_argument("--n-train", type=int, default=None, help="training galaxies (S/N 5-200)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None, help="test galaxies per S/N range")
    parser.add_argument("--n-classical", type=int, default=None, help="of which fitted classically")
    parser.add_argument("--threads", type=int, default=2, help="threads for both methods")
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="do not torch.compile the network's prediction (default: compiled; the one-off "
        "compile time is printed and not counted in galaxies/s)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="the encoder's precision in the timed prediction (auto, the default: bfloat16 "
        "autocast where the CPU computes it natively, else float32; float32's speed is "
        "printed too)",
    )
    parser.add_argument(
        "--refine-steps",
        type=int,
        default=1,
        help="also report q and PA after this many likelihood steps on each galaxy "
        "(morpho.sersic.refine; 0: skip)",
    )
    parser.add_argument("--workdir", default="benchmarks/_work/sersic")
    parser.add_argument(
        "--checkpoint", default=None, help="evaluate this model instead of training"
    )
    parser.add_argument(
        "--experiment",
        default="sersic",
        help="training experiment config (sersic_noiseless: noise drawn on noiseless images)",
    )
    parser.add_argument(
        "--override", nargs="*", default=[], help="extra Hydra overrides for training"
    )
    args = parser.parse_args()
    defaults = (20000, 15, 1000, 200) if args.quick else (60000, 40, 5000, 500)
    for name, value in zip(("n_train", "epochs", "n_test", "n_classical"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16("cpu"))
    precision = "bfloat16" if args.bf16 else "float32"
    print(f"timed prediction in {precision} (--precision {args.precision})")
    if args.quick:
        print("--quick: a small training set and a short training; figures are indicative only")
    result = run(args)
    _print(result)
    (Path(args.workdir) / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(_summary(result)))


if __name__ == "__main__":
    main()
