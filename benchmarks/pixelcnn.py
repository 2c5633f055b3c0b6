"""PixelCNN density: bits/dim against the exact noise floor, fast sampling, anomalies.

On simulated single-Sérsic galaxies at 32×32 (sky 30 ADU, read noise 3 e-, gain 1),
where the entropy of the noise is an exact floor (morpho.data.entropy), and beside
it on the six-class mix:

- bits/dim of the trained PixelCNN on a test split, the floor, their difference
  (the excess) and the ratio on galaxy pixels (noiseless model above 1σ of the sky
  noise); bits/dim of the simple neighbour baseline (a discretised Gaussian around
  the mean of the left and upper neighbours, σ fitted on the training split); and
  the bits/dim of the dihedral mixture of the same network (the mean of its
  likelihoods of the 8 quarter turns and mirror images: also exact);
- seconds per image of the naive sampler (the whole network once per pixel; at 64×64
  timed over its first pixel steps and extrapolated, the cost per step being
  constant) and of the cached sampler, at 32×32 and 64×64, one image at a time;
  and whether both give exactly the same images for the same seed (float64);
- anomalies: streaks, bright stars with spikes, hot columns and mergers of two
  ellipticals (n > 2.5) injected into test galaxies (noiseless, then noise drawn
  again); reported: the fraction of them whose score is above the 95th percentile
  of the ordinary test galaxies' scores (that is, in their top 5%), for each score.

Usage::

    python benchmarks/pixelcnn.py --quick     # about 15 min on 2 cores: small set, short training
    python benchmarks/pixelcnn.py             # the full run (about 1.5 h on 2 cores)

Prints its figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from scipy import stats

from morpho.cli.train import train
from morpho.config import config_dir
from morpho.data.entropy import pixel_entropy_bits
from morpho.data.simulate import NoiseModel, PSFSpec, SimulationSpec, simulate_to_hdf5
from morpho.density.anomaly import bits_per_dim, local_scores, surprise_map
from morpho.density.baseline import NeighbourGaussian
from morpho.density.oddities import ODDITIES, inject
from morpho.density.sampling import cached_sample, draw_uniforms, naive_sample
from morpho.models import load_model
from morpho.nets.pixelcnn import PixelCNN

NOISE = NoiseModel()  # the simulation default: sky 30 ADU, read noise 3 e-, gain 1
QUICK = {"n_train": 6000, "n_test": 600, "epochs": 4, "n_sixclass": 3000, "sixclass_epochs": 2}
FULL = {"n_train": 30000, "n_test": 2000, "epochs": 7, "n_sixclass": 8000, "sixclass_epochs": 3}


def _simulate(path: Path, mode: str, n: int, seed: int) -> Path:
    if path.exists():
        return path
    if mode == "single_sersic":
        spec = SimulationSpec(
            mode=mode, image_size=32, r_e=(1.5, 5.0), snr=(20.0, 200.0), psf=PSFSpec(stamp_size=51)
        )
    else:
        spec = SimulationSpec(mode=mode, image_size=32, snr=(20.0, 200.0))
    return simulate_to_hdf5(path, n_galaxies=n, spec=spec, seed=seed, progress=False)


def _train(path: Path, workdir: Path, epochs: int, extra: list[str]) -> Path:
    overrides = [
        "experiment=density",
        f"data.source.path={path}",
        "data.prepare=null",
        f"paths.output_dir={workdir}",
        f"trainer.max_epochs={epochs}",
        "logger=csv",
        "callbacks.progress_bar=null",
        "test=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return Path(train(cfg)["last_checkpoint"])


def _read(path: Path, n: int | None = None) -> dict:
    with h5py.File(path, "r") as file:
        out = {key: torch.from_numpy(file[key][:n]) for key in ("images", "noiseless")}
        out["catalog"] = pd.DataFrame({k: file["catalog"][k][:n] for k in file["catalog"]})
    return out


def _pixel_bits(
    model, images: torch.Tensor, *, dihedral: bool = False, batch: int = 100
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bits of every pixel, (N, H, W) for one band, and with ``dihedral`` the bits/dim of
    each image under the dihedral mixture (8 orientations), (N,); the mixture reuses the
    pixels' own pass for the image as it is, so it costs 7 more passes."""
    pixels, mixture = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            levels = model.quantizer.quantize(images[i : i + batch], strict=True).levels
            log_p = model.pixel_log_prob(levels)
            pixels.append(-log_p / np.log(2))
            if dihedral:
                image = model.image_log_prob(
                    levels, symmetry="dihedral", as_is=log_p.sum(dim=(1, 2))
                )
                mixture.append(bits_per_dim(image, levels[0].numel()))
    return torch.cat(pixels), torch.cat(mixture) if dihedral else None


def density_figures(model, test: dict, train_levels: torch.Tensor, *, dihedral=True) -> dict:
    """Bits/dim, floor, excess, galaxy-pixel ratio and the neighbour baseline.

    With ``dihedral`` also the bits/dim of the dihedral mixture (``symmetry="dihedral"``
    in :meth:`~morpho.models.PixelCNNModule.log_likelihood`), whole images only.
    """
    bits, mixture_bits = _pixel_bits(model, test["images"], dihedral=dihedral)
    floor = pixel_entropy_bits(
        test["noiseless"].numpy(),
        sky_level=NOISE.sky_level,
        read_noise=NOISE.read_noise,
        gain=NOISE.gain,
    )[:, 0]
    galaxy = test["noiseless"][:, 0].numpy() > np.sqrt(NOISE.background_variance)
    model_bits = bits.numpy()
    baseline = NeighbourGaussian(n_levels=model.quantizer.n_levels).fit(train_levels.numpy())
    test_levels = model.quantizer.quantize(test["images"], strict=True).levels
    symmetric = {}
    if dihedral:
        mixture = float(mixture_bits.mean())
        symmetric = {
            "dihedral_bits_per_dim": mixture,
            "dihedral_excess_bits_per_dim": mixture - float(floor.mean()),
        }
    return {
        **symmetric,
        "bits_per_dim": float(model_bits.mean()),
        "floor_bits_per_dim": float(floor.mean()),
        "excess_bits_per_dim": float(model_bits.mean() - floor.mean()),
        "galaxy_pixel_ratio": float(model_bits[galaxy].mean() / floor[galaxy].mean()),
        "galaxy_pixel_fraction": float(galaxy.mean()),
        "galaxy_pixel_share_of_excess": float(
            (model_bits[galaxy] - floor[galaxy]).sum() / (model_bits - floor).sum()
        ),
        "baseline_bits_per_dim": float(baseline.bits_per_dim(test_levels.numpy()).mean()),
    }


def _seconds_per_image(function, repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def sampling_figures(model, naive_pixels: int, batches=(1, 16)) -> dict:
    """Naive and cached sampling time per image at 32×32 and 64×64, for batches of 1 and 16.

    The naive sampler runs on all threads (torch's default), the cached one on one
    thread (its default: its steps are too small to share). The headline figures
    (without a ``_batch`` suffix) are those of batches of 16 images.
    """
    net, quantizer = model.net, model.quantizer
    out = {}
    for size in (32, 64):
        for batch in batches:
            u = draw_uniforms(batch, net.in_channels, size, size, seed=0, dtype=torch.float32)
            cached = _seconds_per_image(lambda u=u: cached_sample(net, quantizer, u)) / batch
            steps = min(naive_pixels // batch if batch > 1 else naive_pixels, size * size)
            partial = _seconds_per_image(
                lambda u=u, s=steps: naive_sample(net, quantizer, u, pixels=s)
            )
            naive = partial * size * size / steps / batch
            suffix = f"{size}_batch{batch}"
            out[f"naive_seconds_per_image_{suffix}"] = naive
            out[f"naive_timed_pixels_{suffix}"] = steps
            out[f"cached_seconds_per_image_{suffix}"] = cached
            out[f"sampling_speedup_{suffix}"] = naive / cached
        for key in ("naive_seconds_per_image", "cached_seconds_per_image", "sampling_speedup"):
            out[f"{key}_{size}"] = out[f"{key}_{size}_batch{batches[-1]}"]
    return out


def exactness(model) -> dict:
    """Cached == naive for the same seed, bit for bit, in float64: the trained network at
    12×12 and a small random one (with dilations and two bands) at 16×16."""
    trained = PixelCNN(**model.net.init_config["kwargs"]).double().eval()
    trained.load_state_dict(model.net.state_dict())
    small = (
        PixelCNN(in_channels=2, channels=8, n_blocks=3, n_mix=3, dilations=[1, 2]).double().eval()
    )
    checks = {}
    for name, net, size in (("trained_12", trained, 12), ("small_random_16", small, 16)):
        u = draw_uniforms(2, net.in_channels, size, size, seed=7)
        a = naive_sample(net, model.quantizer, u)
        b = cached_sample(net, model.quantizer, u)
        checks[name] = bool(torch.equal(a, b))
    return {"cached_equals_naive": all(checks.values()), "exactness_checks": checks}


def _oddity_images(test: dict, n_per_kind: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    rng = np.random.default_rng(seed)
    noiseless = test["noiseless"].numpy()
    ellipticals = np.flatnonzero(test["catalog"]["sersic_n"].to_numpy() > 2.5)
    images, kinds = [], []
    for kind in ODDITIES:
        for _ in range(n_per_kind):
            if kind == "merger":
                first, second = rng.choice(ellipticals, size=2, replace=False)
                image = inject(kind, noiseless[first], rng, companion=noiseless[second])
            else:
                image = inject(kind, noiseless[rng.integers(len(noiseless))], rng)
            images.append(NOISE.sample(image, rng))
            kinds.append(kind)
    return torch.from_numpy(np.stack(images)), kinds


def _scores(model, images: torch.Tensor, batch: int = 100) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {}
    with torch.no_grad():
        for i in range(0, len(images), batch):
            levels = model.quantizer.quantize(images[i : i + batch]).levels
            log_prob, surprise, variance = surprise_map(model, levels, seed=i)
            scores = local_scores(surprise, variance)
            scores["bits_per_dim"] = bits_per_dim(log_prob.sum(dim=(1, 2)), levels[0].numel())
            for key, value in scores.items():
                parts.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


def anomaly_figures(model, test: dict, n_per_kind: int) -> dict:
    """Fraction of injected oddities above the ordinary galaxies' 95th percentile, per score."""
    ordinary = _scores(model, test["images"])
    odd_images, kinds = _oddity_images(test, n_per_kind, seed=11)
    odd = _scores(model, odd_images)
    kinds = np.array(kinds)
    out = {}
    for score in ordinary:
        threshold = np.quantile(ordinary[score], 0.95)
        flagged = odd[score] > threshold
        out[f"anomaly_top5_{score}"] = float(flagged.mean())
        for kind in ODDITIES:
            out[f"anomaly_top5_{score}_{kind}"] = float(flagged[kinds == kind].mean())
    out["anomaly_top5_fraction"] = out["anomaly_top5_local"]
    # Does a score merely rank bright (or faint) galaxies? Its rank correlation with the
    # S/N and the Sérsic index of the ordinary galaxies says.
    for score in ordinary:
        for column in ("snr", "sersic_n"):
            rho = stats.spearmanr(ordinary[score], test["catalog"][column]).statistic
            out[f"spearman_{score}_{column}"] = float(rho)
    out["anomaly_n_ordinary"] = len(ordinary["local"])
    out["anomaly_n_injected"] = len(kinds)
    return out


def run(args) -> dict:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    size = QUICK if args.quick else FULL
    size = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in size.items()}
    start = time.perf_counter()
    torch.set_num_threads(args.train_threads or args.threads)
    train_path = _simulate(
        workdir / f"sersic_train_{size['n_train']}.h5", "single_sersic", size["n_train"], 1
    )
    test_path = _simulate(
        workdir / f"sersic_test_{size['n_test']}.h5", "single_sersic", size["n_test"], 2
    )
    ckpt = (
        Path(args.checkpoint)
        if args.checkpoint
        else _train(train_path, workdir / "train_sersic", size["epochs"], args.override)
    )
    trained = time.perf_counter()
    torch.set_num_threads(args.threads)
    model = load_model(ckpt, kind="pixelcnn")
    test = _read(test_path)
    train_levels = model.quantizer.quantize(_read(train_path, 2000)["images"]).levels
    result = {
        "checkpoint": str(ckpt),
        "train_seconds": trained - start,
        "train_overrides": list(args.override),
        **size,
    }
    result.update(density_figures(model, test, train_levels))
    if not args.skip_sampling:
        result.update(sampling_figures(model, args.naive_pixels))
        result.update(exactness(model))
    if not args.skip_anomalies:
        result.update(anomaly_figures(model, test, args.oddities_per_kind))
    if not args.skip_sixclass:
        six_train = _simulate(
            workdir / f"six_train_{size['n_sixclass']}.h5", "six_class", size["n_sixclass"], 3
        )
        six_test = _simulate(
            workdir / f"six_test_{size['n_test']}.h5", "six_class", size["n_test"], 4
        )
        six_ckpt = _train(six_train, workdir / "train_six", size["sixclass_epochs"], args.override)
        six_model = load_model(six_ckpt, kind="pixelcnn")
        six_levels = six_model.quantizer.quantize(_read(six_train, 2000)["images"]).levels
        six = density_figures(six_model, _read(six_test), six_levels)
        result.update({f"sixclass_{k}": v for k, v in six.items()})
    result["total_seconds"] = time.perf_counter() - start
    return result


SUMMARY_KEYS = (
    "bits_per_dim",
    "floor_bits_per_dim",
    "excess_bits_per_dim",
    "dihedral_excess_bits_per_dim",
    "galaxy_pixel_ratio",
    "baseline_bits_per_dim",
    "sixclass_excess_bits_per_dim",
    "naive_seconds_per_image_64",
    "cached_seconds_per_image_64",
    "sampling_speedup_64",
    "cached_equals_naive",
    "anomaly_top5_fraction",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small set, short training (~15 min)")
    for key in QUICK:
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=None)
    parser.add_argument(
        "--checkpoint", default=None, help="skip training: use this PixelCNN checkpoint"
    )
    parser.add_argument(
        "--naive-pixels", type=int, default=480, help="image-pixel steps timed (naive sampler)"
    )
    parser.add_argument("--oddities-per-kind", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the figures")
    parser.add_argument(
        "--train-threads", type=int, default=None, help="torch threads for training (--threads)"
    )
    parser.add_argument("--skip-sixclass", action="store_true")
    parser.add_argument("--skip-sampling", action="store_true", help="no sampling figures")
    parser.add_argument("--skip-anomalies", action="store_true", help="no anomaly figures")
    parser.add_argument("--workdir", default="benchmarks/_work/pixelcnn")
    parser.add_argument(
        "--override", nargs="*", default=[], help="extra Hydra overrides for training"
    )
    args = parser.parse_args()
    if args.quick:
        print("--quick: a small training set and a short training; figures are not the full run's")
    result = run(args)
    for key, value in result.items():
        print(f"{key}: {value}")
    summary = {key: result.get(key) for key in SUMMARY_KEYS}
    summary["quick"] = bool(args.quick)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
