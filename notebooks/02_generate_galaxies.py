# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Generate synthetic galaxies with a PixelCNN
#
# morpho's PixelCNN (`experiment=density`) is an exact density model of quantised galaxy
# images: it gives every image a likelihood, and it can draw new images pixel by pixel.
# This notebook
#
# 1. trains a PixelCNN conditioned on the morphology class of simulated six-class galaxies
#    (32×32, `model.condition=label`);
# 2. draws samples of each class, and *unconditional* samples;
# 3. compares the samples with held-out simulated galaxies ("real" ones, never seen in
#    training) by the distributions of simple morphology statistics measured with
#    [statmorph](https://statmorph.readthedocs.io): concentration C, asymmetry A, Gini and
#    M20, plus the flux and the half-light radius;
# 4. completes a galaxy whose right half was cut away.
#
# **Unconditional samples from a conditional model.** Drawing the class first, with the
# frequency it had in the training set, and then an image of that class is an exact draw
# from the model's unconditional distribution p(x) = Σ_c p(c) p(x | c); no second model is
# needed. To condition on the clusters of a taxonomy instead of the simulated classes, join
# its table (see `conf/model/pixelcnn.yaml`: `data.join_table=taxonomy/taxonomy.parquet
# data.label_key=cluster data.drop_unlabelled=true`).
#
# **Tiny vs full.** With `MORPHO_NOTEBOOK_TINY=1` (as in CI): 300 training galaxies, two
# epochs and a small network; the samples are then blurry noise with a blob, and the
# statistics show how far from the real galaxies such a model still is. The full run trains
# the default network on 8000 galaxies for 10 epochs (not timed yet; the default PixelCNN
# trains at about 40 images/s on 2 CPU cores, benchmarks/RESULTS.md).

# %%
import os
import tempfile
from pathlib import Path

TINY = os.environ.get("MORPHO_NOTEBOOK_TINY") == "1"
if TINY:
    N_TRAIN, N_REAL, EPOCHS, PER_CLASS, N_UNCONDITIONAL = 300, 24, 2, 4, 24
    NETWORK = ["model.net.channels=16", "model.net.n_blocks=2", "model.net.n_mix=3"]
    NETWORK += ["++trainer.log_every_n_steps=1"]  # an epoch has only a few batches
    OUT = Path(tempfile.mkdtemp(prefix="morpho_02_"))
else:
    N_TRAIN, N_REAL, EPOCHS, PER_CLASS, N_UNCONDITIONAL = 8000, 300, 10, 16, 300
    NETWORK = []  # conf/model/pixelcnn.yaml as it is
    OUT = Path("outputs/02_generate_galaxies")
OUT.mkdir(parents=True, exist_ok=True)
print(f"tiny={TINY}: {N_TRAIN} training galaxies, outputs in {OUT}")

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import statmorph
import torch
from astropy.convolution import convolve
from hydra import compose, initialize_config_dir
from IPython.display import Image, display
from photutils.segmentation import detect_sources, make_2dgaussian_kernel
from scipy.stats import ks_2samp

from morpho.cli.train import train
from morpho.config import config_dir
from morpho.data import GalaxyDataset
from morpho.data.simulate import MORPHOLOGY_CLASSES, NoiseModel, SimulationSpec, simulate_to_hdf5
from morpho.data.sources import HDF5Source
from morpho.density.generate import draw_samples
from morpho.density.outputs import save_completions_picture
from morpho.models import load_model
from morpho.plotting import save_mosaic

# %% [markdown]
# ## 1. Training galaxies and held-out "real" galaxies
#
# Both sets come from the same simulator (32×32 pixels, S/N 20–200, sky 30 ADU, gain
# 1 e⁻/ADU) with different seeds.

# %%
spec = SimulationSpec(image_size=32, snr=(20.0, 200.0))
paths = {"train": OUT / "train.h5", "real": OUT / "real.h5"}
for path, n, seed in zip(paths.values(), (N_TRAIN, N_REAL), (0, 1), strict=True):
    if not path.exists():
        workers = 1 if TINY else None
        simulate_to_hdf5(path, n_galaxies=n, spec=spec, seed=seed, workers=workers, progress=False)
real = GalaxyDataset(HDF5Source(paths["real"]), image_size=32, label_key="label")
real_images = np.stack([real[i]["image"].numpy() for i in range(len(real))])  # (N, 1, 32, 32) ADU
real_labels = real.catalog["label"].to_numpy(dtype=np.int64, copy=True)

# %% [markdown]
# ## 2. Train a class-conditioned PixelCNN
#
# `experiment=density` with the six-class data instead of its single-Sérsic default:
# augmentation is kept to flips and quarter turns (exact: they leave every pixel's noise
# as it was), and the network is told the class of each galaxy (`model.condition=label`
# with six classes). The quantiser maps the simulated ADU to integer levels exactly (offset
# −30 ADU for the subtracted sky, one ADU per level).

# %%
overrides = [
    "experiment=density",
    "data=simulated",
    f"data.source.path={paths['train']}",
    "data.prepare=null",
    "data.image_size=32",
    "data.label_key=label",
    "data.augment.rotate=false",
    "data.augment.max_shift=0",
    "model.condition=label",
    f"model.net.n_classes={len(MORPHOLOGY_CLASSES)}",
    f"trainer.max_epochs={EPOCHS}",
    f"paths.output_dir={OUT / 'train'}",
    "logger=csv",
    "callbacks.progress_bar=null",
    "++trainer.enable_progress_bar=false",
    "test=false",
    *NETWORK,
]
with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
    cfg = compose("train", overrides=overrides)
result = train(cfg)
model = load_model(result["last_checkpoint"], kind="pixelcnn")
print("validation bits per pixel:", round(result["metrics"]["val/bits_per_dim"], 3))

# %% [markdown]
# ## 3. Samples of each class, and unconditional samples
#
# `draw_samples` draws images with the cached sampler (the same images as the pixel-by-pixel
# naive one, far faster); they come out as integer levels, which `Quantizer.dequantize`
# turns back into ADU. Left column block: real galaxies of each class; right: samples.

# %%
samples = {}
for label, name in enumerate(MORPHOLOGY_CLASSES):
    levels = draw_samples(model, PER_CLASS, seed=label, label=label)
    samples[name] = model.quantizer.dequantize(levels).numpy()
SHOWN = min(PER_CLASS, 6)
rows = [
    np.concatenate([real_images[real_labels == label][:SHOWN], samples[name][:SHOWN]])
    for label, name in enumerate(MORPHOLOGY_CLASSES)
]
save_mosaic(
    rows,
    OUT / "per_class.png",
    row_labels=list(MORPHOLOGY_CLASSES),
    title=f"{SHOWN} real galaxies, then {SHOWN} samples, of each class",
)
display(Image(filename=OUT / "per_class.png"))

# %%
frequencies = model.label_counts.numpy() / model.label_counts.sum().item()
drawn = np.random.default_rng(0).choice(len(frequencies), size=N_UNCONDITIONAL, p=frequencies)
levels = model.sample(N_UNCONDITIONAL, seed=100, labels=torch.as_tensor(drawn))
unconditional = model.quantizer.dequantize(levels).numpy()
save_mosaic(
    [unconditional[i : i + 12] for i in range(0, 36, 12) if i < N_UNCONDITIONAL],
    OUT / "unconditional.png",
    title="unconditional samples",
)
display(Image(filename=OUT / "unconditional.png"))

# %% [markdown]
# The model's own view of the two sets: bits per pixel of the real galaxies and of the
# samples under the model (lower: more likely). Samples of a well-trained model are about
# as likely as real galaxies; much lower bits than the real galaxies means the samples are
# too smooth, much higher that they are noisier than the data.

# %%
bits_real = model.log_likelihood(torch.from_numpy(real_images), labels=real_labels)
bits_samples = model.log_likelihood(torch.from_numpy(unconditional), labels=drawn)
pd.DataFrame(
    {
        "real": bits_real["bits_per_dim"].numpy(),
        "unconditional samples": bits_samples["bits_per_dim"].numpy(),
    }
).describe().loc[["mean", "25%", "50%", "75%"]]

# %% [markdown]
# ## 4. Morphology statistics: real galaxies vs samples
#
# For every image: smooth it slightly, find the sources above 1.5σ of the sky noise with
# photutils, keep the one at the centre (or the largest), and measure it with statmorph
# (`gain` = 1 e⁻/ADU, as simulated). Images where nothing is detected, or where statmorph
# flags the measurement as bad (flag ≥ 2), are counted and left out of the histograms.
# Sérsic fits inside statmorph are not used.

# %%
SIGMA = float(np.sqrt(NoiseModel().background_variance))  # sky noise of the simulation, ADU
KERNEL = make_2dgaussian_kernel(1.5, size=5)
STATISTICS = ["concentration", "asymmetry", "gini", "m20", "log10_flux", "r_half_pix"]


def morphology(image):
    """statmorph's C, A, Gini, M20, flux and half-light radius of one (H, W) stamp, or NaNs."""
    with warnings.catch_warnings():  # photutils and statmorph warn about every difficult stamp
        warnings.simplefilter("ignore")
        segments = detect_sources(convolve(image, KERNEL), 1.5 * SIGMA, 5)
        if segments is None:
            return dict.fromkeys(STATISTICS, np.nan)
        centre = segments.data[image.shape[0] // 2, image.shape[1] // 2]
        segments.keep_labels([centre or segments.labels[np.argmax(segments.areas)]])
        m = statmorph.source_morphology(image, segments, gain=1.0)[0]
    if m.flag >= 2:
        return dict.fromkeys(STATISTICS, np.nan)
    flux = image[segments.data > 0].sum()
    values = [m.concentration, m.asymmetry, m.gini, m.m20, np.log10(max(flux, 1.0)), m.rhalf_circ]
    return dict(zip(STATISTICS, values, strict=True))


sets = {
    "real": real_images[:, 0],
    "unconditional": unconditional[:, 0],
    "per class": np.concatenate(list(samples.values()))[:, 0],
}
measured = {name: pd.DataFrame([morphology(im) for im in images]) for name, images in sets.items()}
pd.DataFrame(
    {
        name: {"images": len(t), "measured": int(t.notna().all(axis=1).sum())}
        for name, t in measured.items()
    }
)

# %% [markdown]
# Histograms side by side (each normalised to unit area), and the two-sample
# Kolmogorov–Smirnov distance between real galaxies and unconditional samples (0: the same
# distribution; 1: no overlap).

# %%
fig, axes = plt.subplots(1, len(STATISTICS), figsize=(3.2 * len(STATISTICS), 3))
for ax, statistic in zip(axes, STATISTICS, strict=True):
    values = {name: t[statistic].dropna().to_numpy() for name, t in measured.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(values.values())), bins=15)
    for name, v in values.items():
        ax.hist(v, bins=edges, density=True, histtype="step", lw=1.5, label=name)
    ax.set_xlabel(statistic)
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
ks = {}
for statistic in STATISTICS:
    a, b = (measured[k][statistic].dropna() for k in ("real", "unconditional"))
    ks[statistic] = ks_2samp(a, b).statistic if min(len(a), len(b)) >= 5 else np.nan
pd.Series(ks, name="KS distance, real vs unconditional").round(3).to_frame()

# %% [markdown]
# The Gini–M20 plane, where early types (high Gini, low M20) and disks and irregulars
# separate (Lotz et al. 2004):

# %%
fig, ax = plt.subplots(figsize=(4.5, 4))
for name in ("real", "unconditional"):
    ax.scatter(measured[name]["m20"], measured[name]["gini"], s=8, alpha=0.6, label=name)
ax.invert_xaxis()
ax.set_xlabel("M20")
ax.set_ylabel("Gini")
ax.legend()
plt.show()

# %% [markdown]
# ## 5. Completion
#
# `PixelCNNModule.complete` redraws masked pixels, each given every pixel before it in
# raster order (row by row), known or already drawn: here the right half of a real
# elliptical is cut away and redrawn four times. Each completion is one plausible galaxy,
# not the average one; the known pixels *after* a redrawn pixel are not seen when it is
# drawn.

# %%
galaxy = int(np.flatnonzero(real_labels == 0)[0])
mask = torch.zeros(32, 32, dtype=torch.bool)
mask[:, 16:] = True
original = torch.from_numpy(real_images[galaxy : galaxy + 1]).repeat(4, 1, 1, 1)
completed = model.complete(original, mask, seed=0, labels=torch.zeros(4, dtype=torch.int64))
save_completions_picture(
    OUT / "completion.png",
    real_images[galaxy],
    mask.numpy(),
    model.quantizer.dequantize(completed).numpy(),
)
display(Image(filename=OUT / "completion.png"))
