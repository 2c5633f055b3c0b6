"""How well morpho's taxonomy recovers the simulated morphology classes.

Trains the autoencoder (``experiment=taxonomy`` unless ``--experiment`` says
otherwise) on the training split of the six-class simulated mix, fits the
taxonomy (UMAP + HDBSCAN) on the training embeddings, assigns the held-out test
galaxies with ``predict`` (labels are used only for scoring) and compares with
pixel baselines. Finally times the taxonomy fit on 100 000 embeddings: in the full
run of 100 000 further simulated galaxies, distinct from the training set, embedded
by the trained autoencoder (about 15 minutes of simulation and embedding on 2
cores); in ``--quick``, for time, of synthetic Gaussian blobs, which took about as
long as those galaxies (``benchmarks/RESULTS.md``, taxonomy q13). The training
embeddings resampled with jitter, the input before, fitted twice as slowly: their
near-copies make a graph of many components.

Usage::

    python benchmarks/taxonomy.py --quick          # < 15 min on 2 cores
    python benchmarks/taxonomy.py                  # the full run
    python benchmarks/taxonomy.py --experiment taxonomy_plain   # a design lever
    python benchmarks/taxonomy.py --embeddings RUN/embeddings.npz  # re-cluster saved embeddings
    python benchmarks/taxonomy.py --only-100k --checkpoint RUN/train/checkpoints/last.ckpt

The last line printed is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

from morpho.cli.train import train
from morpho.config import config_dir
from morpho.data.augment import rotate_shift
from morpho.data.simulate import MORPHOLOGY_CLASSES
from morpho.models import load_model
from morpho.plotting import save_mosaic
from morpho.taxonomy import Taxonomy
from morpho.taxonomy.clusterer import CLUSTERING_PARAMS
from morpho.taxonomy.embed import embed_dataset

SNR_BINS = {"20-40": (20, 40), "40-80": (40, 80), "80+": (80, np.inf)}
#: Clustering levers refitted on the same training embeddings (taxonomy parameters).
CLUSTERING_LEVERS = {
    "leaf": {"cluster_selection_method": "leaf"},
    "leaf_mcs100_ms10": {
        "cluster_selection_method": "leaf",
        "min_cluster_size": 100,
        "min_samples": 10,
    },
    "eom_ms10": {"min_samples": 10},
    "eom_nn15": {"n_neighbors": 15},
    "eom_unlimited": {"max_cluster_fraction": None},
    "eom_mcs50": {"min_cluster_size": 50, "min_samples": None},  # the default until 2026-12-01
    # Only outliers stay noise (the default since 2026-12-04: 0.95); None: HDBSCAN's noise.
    "eom_hdbscan_noise": {"outlier_quantile": None},
    "eom_outliers100": {"outlier_quantile": 1.0},
    # Clusters up to half the sample (the default until 2026-12-08: 0.35 now; 0.5 let
    # three classes merge for half of the UMAP seeds of a full training).
    "eom_mcf050": {"max_cluster_fraction": 0.5},
    # HDBSCAN's borders (the default until 2026-12-08: now a linear classifier's).
    "eom_density": {"boundaries": "density"},
}
HERE = Path(__file__).resolve().parent


#: Seed of the 100 000 galaxies the taxonomy fit is timed on (the training set's: 0).
DISTINCT_SEED = 100


def _config(args, workdir: Path, *, n: int | None = None, seed: int | None = None):
    overrides = [
        f"experiment={args.experiment}",
        f"paths.data_dir={workdir}",
        f"paths.output_dir={workdir / 'train'}",
        f"data.prepare.n_galaxies={n or args.n}",
        *([] if seed is None else [f"data.prepare.seed={seed}"]),
        f"trainer.max_epochs={args.epochs}",
        "logger=csv",
        "callbacks.progress_bar=null",
        "data.num_workers=0",
        "test=false",
        *args.override,
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=overrides)


def _scores(labels_true, labels_pred) -> dict[str, float]:
    return {
        "ari": float(adjusted_rand_score(labels_true, labels_pred)),
        "nmi": float(normalized_mutual_info_score(labels_true, labels_pred)),
    }


def _purity(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Size-weighted purity of the clusters (noise excluded)."""
    clustered = labels_pred >= 0
    if not clustered.any():
        return 0.0
    table = pd.crosstab(labels_pred[clustered], labels_true[clustered])
    return float(table.max(axis=1).sum() / table.to_numpy().sum())


def _by_snr(labels_true, labels_pred, snr) -> dict[str, dict[str, float]]:
    out = {}
    for name, (low, high) in SNR_BINS.items():
        chosen = (snr >= low) & (snr < high)
        if chosen.sum() > 10:
            out[name] = _scores(labels_true[chosen], labels_pred[chosen])
    return out


def _assignment_scores(labels_true, labels_pred, bright) -> dict[str, float]:
    """ARI (all, S/N >= 40), noise fraction and purity of assigned test galaxies."""
    return {
        "ari": _scores(labels_true, labels_pred)["ari"],
        "ari_snr40": _scores(labels_true[bright], labels_pred[bright])["ari"],
        "noise_fraction": float(np.mean(labels_pred < 0)),
        "purity": _purity(labels_true, labels_pred),
    }


def _clustering_levers(taxonomy, z_train, z_test, y_test, bright) -> dict[str, dict]:
    """Each of :data:`CLUSTERING_LEVERS` applied to the fitted default ``taxonomy``
    (reclustered where only the clustering changes, else fitted afresh on the training
    embeddings); its test figures, and k-means with the true class count on the same
    embeddings for reference."""
    out = {}
    for name, change in CLUSTERING_LEVERS.items():
        if set(change) <= set(CLUSTERING_PARAMS):
            variant = taxonomy.recluster(**change)
        else:
            variant = Taxonomy(**{**taxonomy.get_params(), **change}).fit(z_train)
        pred = variant.predict(z_test)
        out[name] = {
            **_assignment_scores(y_test, pred, bright),
            "n_clusters": int(variant.n_clusters_),
        }
    scaler = StandardScaler().fit(z_train)
    kmeans = KMeans(n_clusters=len(MORPHOLOGY_CLASSES), n_init=10, random_state=0)
    pred = kmeans.fit(scaler.transform(z_train)).predict(scaler.transform(z_test))
    out["kmeans_true_k"] = {
        "ari": _scores(y_test, pred)["ari"],
        "ari_snr40": _scores(y_test[bright], pred[bright])["ari"],
    }
    return out


def clustering_figures(params, z_train, z_test, y_train, y_test, snr_test) -> dict:
    """The taxonomy fitted on the training embeddings and scored on the test galaxies it
    assigns; the clustering levers and a logistic probe on the same embeddings."""
    taxonomy = Taxonomy(**params).fit(z_train)
    pred = taxonomy.predict(z_test)
    bright = snr_test >= 40
    figures = {**_scores(y_test, pred), **_assignment_scores(y_test, pred, bright)}
    figures["noise_fraction_snr40"] = float(np.mean(pred[bright] < 0))
    figures["purity_snr40"] = _purity(y_test[bright], pred[bright])
    figures["n_clusters"] = int(taxonomy.n_clusters_)
    figures["by_snr"] = _by_snr(y_test, pred, snr_test)
    figures["clustering_levers"] = _clustering_levers(taxonomy, z_train, z_test, y_test, bright)

    scaler = StandardScaler().fit(z_train)
    probe = LogisticRegression(max_iter=3000).fit(scaler.transform(z_train), y_train)
    probe_pred = probe.predict(scaler.transform(z_test))
    figures["probe_accuracy"] = float(np.mean(probe_pred == y_test))
    figures["probe_accuracy_snr40"] = float(np.mean(probe_pred[bright] == y_test[bright]))
    return figures


def rescore(path: Path, params: dict) -> dict:
    """:func:`clustering_figures` of a run's saved ``embeddings.npz``, without training."""
    saved = np.load(path)
    names = ("z_train", "z_test", "y_train", "y_test", "snr_test")
    missing = [name for name in names if name not in saved]
    if missing:
        raise KeyError(f"{path}: no {', '.join(missing)} (not a taxonomy benchmark's embeddings)")
    return {**clustering_figures(params, *(saved[name] for name in names)), "embeddings": str(path)}


def _pixels(dataset, indices: np.ndarray) -> np.ndarray:
    """Arcsinh-stretched pixels (σ-scaled per image) of the given galaxies, flattened."""
    images = np.stack([dataset[int(i)]["image"].numpy() for i in indices])
    sigma = np.median(np.abs(images[..., :4, :]), axis=(1, 2, 3), keepdims=True) * 1.4826 + 1e-6
    return np.arcsinh(images / sigma).reshape(len(images), -1)


def _rotation_similarity(model, dataset, indices: np.ndarray) -> float:
    images = torch.stack([dataset[int(i)]["image"] for i in indices])
    base = model.embed(images)
    sims = []
    for angle in (30.0, 60.0, 90.0, 135.0, 200.0):
        turned = rotate_shift(
            images, torch.full((len(images),), angle), torch.zeros(len(images), 2)
        )
        sims.append(torch.nn.functional.cosine_similarity(model.embed(turned), base).mean())
    return float(torch.stack(sims).mean())


def _distinct_100k(args, workdir: Path, model) -> np.ndarray:
    """Embeddings of 100 000 simulated galaxies of the benchmark's mix, none of them a
    training galaxy (seed :data:`DISTINCT_SEED`; simulated once into ``workdir``)."""
    dm = instantiate(_config(args, workdir, n=100_000, seed=DISTINCT_SEED).data)
    dm.prepare_data()
    dm.setup("fit")
    return embed_dataset(model, dm.dataset("all"))[2]


def _cluster_100k(embeddings: np.ndarray, taxonomy_params: dict, workdir: Path, kind: str) -> dict:
    """Time, peak memory and clusters of fitting the taxonomy on ``embeddings`` (described
    by ``kind``), in a fresh process: the benchmark's ``cluster_100k_*`` figures."""
    path = workdir / "embeddings_100k.npy"
    np.save(path, embeddings)
    (workdir / "taxonomy_params.json").write_text(json.dumps(taxonomy_params))
    script = (
        "import json, time, numpy as np; from morpho.taxonomy import Taxonomy;"
        f"X = np.load({str(path)!r});"
        f"params = json.load(open({str(workdir / 'taxonomy_params.json')!r}));"
        "t = time.perf_counter(); fitted = Taxonomy(**params).fit(X);"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'clusters': fitted.n_clusters_}))"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return {
        "cluster_100k_seconds": result["seconds"],
        "cluster_100k_peak_gib": max(peak_kib, before) / 2**20,
        "cluster_100k_clusters": result["clusters"],
        "cluster_100k_embeddings": kind,
    }


def synthetic_embeddings(n: int = 100_000, d: int = 32, k: int = 12, seed: int = 0) -> np.ndarray:
    """(n, d) float32: ``k`` unit-variance Gaussian blobs with centres drawn from N(0, 3²)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


def _class_mosaic(dataset, catalog: pd.DataFrame, path: Path) -> None:
    rows, labels = [], []
    for label, name in enumerate(MORPHOLOGY_CLASSES):
        chosen = catalog.index[(catalog["label"] == label) & (catalog["snr"] >= 40)][:8]
        rows.append(np.stack([dataset[int(i)]["image"].numpy() for i in chosen]))
        labels.append(name)
    save_mosaic(rows, path, row_labels=labels, title="simulated classes at S/N >= 40")


def run(args) -> dict:
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cfg = _config(args, workdir)
    instantiate(cfg.data).prepare_data()
    t0 = time.perf_counter()
    result = train(cfg)
    train_seconds = time.perf_counter() - t0
    model = load_model(result["best_checkpoint"] or result["last_checkpoint"], kind="autoencoder")
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    catalog = dm.source.catalog
    data = dm.dataset("all")
    train_idx, test_idx = dm.indices["train"], dm.indices["test"]
    _, _, z_train = embed_dataset(model, torch.utils.data.Subset(data, train_idx.tolist()))
    _, _, z_test = embed_dataset(model, torch.utils.data.Subset(data, test_idx.tolist()))
    y_train, y_test = catalog["label"].to_numpy()[train_idx], catalog["label"].to_numpy()[test_idx]
    snr_test = catalog["snr"].to_numpy()[test_idx]

    np.savez(
        workdir / "embeddings.npz",
        z_train=z_train,
        z_test=z_test,
        y_train=y_train,
        y_test=y_test,
        snr_test=snr_test,
    )
    params = cfg_taxonomy(args)
    figures = clustering_figures(params, z_train, z_test, y_train, y_test, snr_test)
    bright = snr_test >= 40
    for name, column in (("snr", "snr"), ("size", "half_light_radius_pix")):
        target = np.log(catalog[column].to_numpy())
        fit = LinearRegression().fit(z_train, target[train_idx])
        figures[f"nuisance_r2_{name}"] = float(fit.score(z_test, target[test_idx]))

    pixels_train, pixels_test = _pixels(data, train_idx), _pixels(data, test_idx)
    pca = PCA(n_components=50, random_state=0).fit(pixels_train)
    kmeans = KMeans(n_clusters=len(MORPHOLOGY_CLASSES), n_init=10, random_state=0)
    kmeans.fit(pca.transform(pixels_train))
    base_pred = kmeans.predict(pca.transform(pixels_test))
    figures["baseline_pca_kmeans_ari"] = _scores(y_test, base_pred)["ari"]
    figures["baseline_pca_kmeans_ari_snr40"] = _scores(y_test[bright], base_pred[bright])["ari"]
    pixel_tax = Taxonomy(**params).fit(pca.transform(pixels_train))
    pixel_pred = pixel_tax.predict(pca.transform(pixels_test))
    figures["baseline_pixel_umap_hdbscan_ari"] = _scores(y_test, pixel_pred)["ari"]
    figures["baseline_pixel_umap_hdbscan_ari_snr40"] = _scores(y_test[bright], pixel_pred[bright])[
        "ari"
    ]

    figures["rotation_similarity"] = _rotation_similarity(model, data, test_idx[:256])
    _class_mosaic(data, catalog, HERE / "figures" / "taxonomy_classes.png")
    if not args.skip_100k:
        if args.quick:
            big, kind = synthetic_embeddings(), "synthetic: 100000 x 32, 12 blobs"
        else:
            big, kind = _distinct_100k(args, workdir, model), "distinct simulated galaxies"
        figures.update(_cluster_100k(big, params, workdir, kind))
    figures.update(
        {
            "train_seconds": train_seconds,
            "total_seconds": time.perf_counter() - started,
            "n_galaxies": args.n,
            "epochs": args.epochs,
            "experiment": args.experiment,
            "quick": args.quick,
        }
    )
    return figures


def cfg_taxonomy(args) -> dict:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("cluster", overrides=["embeddings=none", *args.taxonomy_override])
    params = OmegaConf.to_container(cfg.taxonomy, resolve=True)
    params.pop("_target_")
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller set, shorter training (< 15 min)"
    )
    parser.add_argument("--n", type=int, default=None, help="simulated galaxies")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--experiment", default="taxonomy")
    parser.add_argument("--workdir", default="outputs/benchmarks/taxonomy")
    parser.add_argument(
        "--skip-100k", action="store_true", help="skip the 100 000-embedding timing"
    )
    parser.add_argument(
        "--only-100k",
        action="store_true",
        help="only time the taxonomy fit on 100 000 embeddings: of distinct simulated "
        "galaxies with --checkpoint, else synthetic 32-d ones (12 blobs)",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="with --only-100k: the autoencoder"
    )
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="re-cluster the embeddings.npz a run saved (no training): clustering figures only",
    )
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides of train")
    parser.add_argument("--taxonomy-override", nargs="*", default=[], help="overrides of cluster")
    args = parser.parse_args()
    if args.checkpoint is not None and not args.only_100k:
        parser.error("--checkpoint goes with --only-100k (the full run trains its own)")
    if args.embeddings is not None:
        figures = rescore(args.embeddings, cfg_taxonomy(args))
        for key, value in figures.items():
            print(f"{key:40s} {value}")
        print(json.dumps(figures))
        return
    args.n = args.n or (6000 if args.quick else 20000)
    if args.only_100k:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        if args.checkpoint is None:
            X, kind = synthetic_embeddings(), "synthetic: 100000 x 32, 12 blobs"
        else:
            model = load_model(args.checkpoint, kind="autoencoder")
            X, kind = _distinct_100k(args, workdir, model), "distinct simulated galaxies"
        print(json.dumps(_cluster_100k(X, cfg_taxonomy(args), workdir, kind)))
        return
    args.epochs = args.epochs or (12 if args.quick else 40)
    torch.manual_seed(0)
    if args.quick:
        print("QUICK RUN: smaller data set and shorter training than the full benchmark")
    figures = run(args)
    for key, value in figures.items():
        print(f"{key:40s} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
