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
# # A real-data walk-through: the Hubble Deep Field picture
#
# From one real image to a taxonomy and anomaly scores:
#
# 1. find the sources of the Hubble (eXtreme) Deep Field picture that scikit-image ships,
#    with photutils (background, detection, deblending);
# 2. cut a stamp around each and write them in an HDF5 file that morpho's data layer reads
#    (the Galaxy10 layout: `images` of shape (N, H, W, C) and one 1-D dataset per column);
# 3. embed the stamps with a taxonomy autoencoder trained on simulated galaxies, and
#    cluster them with the `Taxonomy`;
# 4. score every stamp for anomalies with a PixelCNN trained on the stamps themselves.
#
# **What this image is, and is not.** `skimage.data.hubble_deep_field()` is a picture of the
# Hubble eXtreme Deep Field made for display (HubbleSite news release 2012-37): three 8-bit
# colour channels (0–255), each a non-linear stretch of a combination of Hubble filters,
# saved as JPEG. Its values are not proportional to flux, bright cores are compressed, and
# the JPEG blocks add artefacts of their own. Everything below is in these *display units*,
# and it is a demonstration of the workflow, not of measurements. With calibrated survey
# images (FITS cutouts in flux units) the same steps apply: `morpho-inspect data=fits
# data.source.path=...` and the command-line tools.
#
# **Tiny vs full.** With `MORPHO_NOTEBOOK_TINY=1` (as in CI) the autoencoder is trained for
# two epochs on 300 simulated galaxies, the 250 brightest sources are kept and the PixelCNN
# is small: about a minute on a laptop, and rough results. The full run keeps every
# source that fits a stamp, trains the autoencoder on 5000 galaxies for 15 epochs and the
# default PixelCNN for 20 epochs (not timed yet).

# %%
import os
import tempfile
from pathlib import Path

TINY = os.environ.get("MORPHO_NOTEBOOK_TINY") == "1"
STAMP = 32  # pixels; the picture's galaxies are small
if TINY:
    N_SIMULATED, AE_EPOCHS, DENSITY_EPOCHS, MAX_SOURCES = 300, 2, 2, 250
    AE_NETWORK = ["model.encoder.channels=[8,16,32]", "model.encoder.embedding_dim=16"]
    AE_NETWORK += ["model.projector.hidden_dim=64", "model.projector.out_dim=64"]
    DENSITY_NETWORK = ["model.net.channels=16", "model.net.n_blocks=2", "model.net.n_mix=3"]
    TAXONOMY = {"n_neighbors": 15, "min_cluster_size": 10, "n_epochs": 200}
    TRAINER = ["++trainer.log_every_n_steps=1"]  # an epoch has only a few batches
    OUT = Path(tempfile.mkdtemp(prefix="morpho_04_"))
else:
    N_SIMULATED, AE_EPOCHS, DENSITY_EPOCHS, MAX_SOURCES = 5000, 15, 20, None
    AE_NETWORK, DENSITY_NETWORK, TRAINER = [], [], []  # the configs as they are
    TAXONOMY = {"n_neighbors": 15, "min_cluster_size": 15}
    OUT = Path("outputs/04_real_data_hdf")
OUT.mkdir(parents=True, exist_ok=True)
print(f"tiny={TINY}: outputs in {OUT}")

# %%
import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from astropy.convolution import convolve
from hydra import compose, initialize_config_dir
from IPython.display import Image, display
from photutils.background import Background2D, MedianBackground
from photutils.segmentation import (
    SourceCatalog,
    deblend_sources,
    detect_sources,
    make_2dgaussian_kernel,
)
from scipy.stats import spearmanr
from skimage.data import hubble_deep_field

from morpho.cli.train import train
from morpho.config import config_dir
from morpho.data import GalaxyDataset
from morpho.data.simulate import SimulationSpec, simulate_to_hdf5
from morpho.data.sources import HDF5Source
from morpho.density.outputs import save_anomalies_picture
from morpho.density.score import fit_baseline, score_dataset
from morpho.models import load_model
from morpho.taxonomy import Taxonomy, plot_cluster_mosaic, plot_map, typical_members
from morpho.taxonomy.embed import embed_dataset

# %% [markdown]
# ## 1. The picture, as one band
#
# The three channels are summed into one band of integers from 0 to 765: no information of
# the 8-bit values is lost, and one display unit is the step of the data. A smooth
# background (median in 64×64 boxes) is subtracted; its rms is the noise level used below.

# %%
rgb = hubble_deep_field()  # (872, 1000, 3) uint8
band = rgb.astype(np.float64).sum(axis=-1)
background = Background2D(band, 64, filter_size=3, bkg_estimator=MedianBackground())
image = band - background.background
noise = float(np.median(background.background_rms))
print(f"{band.shape} pixels; background {np.median(background.background):.1f}, rms {noise:.1f}")

# %% [markdown]
# ## 2. Sources and stamps
#
# Sources are the groups of at least 10 connected pixels above 3 × rms in the image smoothed
# by a 3-pixel Gaussian, split where several peaks share one group (deblending). A stamp of
# 32×32 pixels is cut around each centroid; sources too close to the edge, and the smallest
# (under 20 pixels), are left out.

# %%
smoothed = convolve(image, make_2dgaussian_kernel(3.0, size=5))
segments = detect_sources(smoothed, 3 * background.background_rms, 10)
segments = deblend_sources(smoothed, segments, 10, progress_bar=False)
sources = SourceCatalog(image, segments, convolved_data=smoothed)
catalog = pd.DataFrame(
    {
        "label": sources.label,
        "x": sources.centroid[:, 0],
        "y": sources.centroid[:, 1],
        "area": sources.area.value,
        "segment_flux": sources.segment_flux,
    }
)
half = STAMP // 2
x0, y0 = np.round(catalog["x"]).astype(int) - half, np.round(catalog["y"]).astype(int) - half
fits_inside = (
    (x0 >= 0) & (y0 >= 0) & (x0 + STAMP <= image.shape[1]) & (y0 + STAMP <= image.shape[0])
)
chosen = catalog[fits_inside & (catalog["area"] >= 20)].sort_values("segment_flux", ascending=False)
chosen = chosen.head(MAX_SOURCES).reset_index(drop=True)
x0, y0 = np.round(chosen["x"]).astype(int) - half, np.round(chosen["y"]).astype(int) - half
stamps = np.stack([image[y : y + STAMP, x : x + STAMP] for x, y in zip(x0, y0, strict=True)])
print(f"{len(catalog)} sources detected, {len(chosen)} stamps kept")

# %% [markdown]
# The stamps go into one HDF5 file in the Galaxy10 layout, with the source catalog as
# columns; `id_str` names each stamp after its segment label. Any morpho command reads it
# with `data=hdf5 data.source.path=...`.

# %%
stamps_path = OUT / "hdf_stamps.h5"
with h5py.File(stamps_path, "w") as file:
    file["images"] = stamps[..., None].astype(np.float32)  # (N, H, W, 1), display units
    file["id_str"] = [f"hdf{label:05d}" for label in chosen["label"]]
    for column in ("x", "y", "area", "segment_flux"):
        file[column] = chosen[column].to_numpy()
stamp_set = GalaxyDataset(HDF5Source(stamps_path), image_size=STAMP)
print(len(stamp_set), "stamps;", stamp_set[0]["image"].shape, stamp_set.catalog.columns.tolist())

# %% [markdown]
# ## 3. Embed with an autoencoder trained on simulated galaxies, and cluster
#
# The taxonomy autoencoder is trained on simulated six-class galaxies of the same stamp
# size (as in notebook 01). It canonicalises every galaxy (centre, orientation, size, flux)
# before encoding, which takes away most of the difference in units; but the picture's
# noise, its neighbours in the stamps, its colour stretch and its JPEG artefacts were never
# seen in training, so the clusters follow size, brightness and crowding as much as
# morphology. For science, train the autoencoder on the survey's own cutouts
# (`morpho-train experiment=taxonomy data=hdf5 data.source.path=...`).

# %%
simulated_path = OUT / "simulated.h5"
if not simulated_path.exists():
    simulate_to_hdf5(
        simulated_path,
        n_galaxies=N_SIMULATED,
        spec=SimulationSpec(image_size=STAMP),
        seed=0,
        workers=1 if TINY else None,
        progress=False,
    )
common = ["logger=csv", "callbacks.progress_bar=null", "++trainer.enable_progress_bar=false"]
common += ["test=false", *TRAINER]
autoencoder_overrides = [
    "experiment=taxonomy",
    f"data.source.path={simulated_path}",
    "data.prepare=null",
    f"data.image_size={STAMP}",
    f"trainer.max_epochs={AE_EPOCHS}",
    f"paths.output_dir={OUT / 'autoencoder'}",
    *common,
    *AE_NETWORK,
]
with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
    cfg = compose("train", overrides=autoencoder_overrides)
autoencoder = load_model(train(cfg)["last_checkpoint"], kind="autoencoder")

# %%
ids, rows, embeddings = embed_dataset(autoencoder, stamp_set)
taxonomy = Taxonomy(random_state=0, **TAXONOMY).fit(embeddings)
table = taxonomy.table(ids).merge(stamp_set.catalog, left_on="id", right_on="id_str")
table["row"] = rows  # the stamp's row in the file
print(f"{taxonomy.n_clusters_} clusters; {np.mean(taxonomy.labels_ < 0):.0%} of stamps are noise")
plot_map(taxonomy, OUT / "map.png")
display(Image(filename=OUT / "map.png"))

# %%
members = typical_members(taxonomy, 8)
if members:
    plot_cluster_mosaic({k: stamps[v][:, None] for k, v in members.items()}, OUT / "typical.png")
    display(Image(filename=OUT / "typical.png"))

# %% [markdown]
# ## 4. Anomaly scores from a PixelCNN trained on the stamps
#
# A PixelCNN models the integer pixel values of its images, so its quantiser must match the
# data's units. A model trained on the simulations (ADU, sky noise 6.2 ADU) would find every
# stamp of this picture unlikely, and rank them by how unlike the simulations they are. So
# the PixelCNN is trained here on the stamps themselves, with a quantiser in display units:
# one level per display unit (the data's own step), level 0 just below the lowest stamp
# pixel, and the background rms measured above as the noise scale. It is scored on the same
# stamps it was trained on: the scores say which stamps are unlike the rest *of this
# picture* (crowded stamps, stars with spikes, JPEG blocks, odd galaxies).
#
# The scores (see `morpho.density.anomaly`): `local`, the most surprising 5×5 box compared
# with what the model expects of its own images; `typicality`, the same over the whole
# stamp; and `likelihood_ratio`, the bits per pixel the PixelCNN saves over a simple
# neighbour-mean baseline (low: structure the PixelCNN did not learn).

# %%
offset = float(np.floor(stamps.min())) - 1.0
n_levels = int(np.ceil(stamps.max() - offset)) + 2
density_overrides = [
    "experiment=density",
    "data=hdf5",
    f"data.source.path={stamps_path}",
    f"data.image_size={STAMP}",
    "++data.augment.rotate=false",  # flips and quarter turns only: exact, noise untouched
    "++data.augment.max_shift=0",
    f"model.quantizer.offset={offset}",
    "model.quantizer.step=1.0",
    f"model.quantizer.n_levels={n_levels}",
    f"model.quantizer.background_sigma={noise}",
    f"trainer.max_epochs={DENSITY_EPOCHS}",
    f"paths.output_dir={OUT / 'pixelcnn'}",
    *common,
    *DENSITY_NETWORK,
]
with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
    cfg = compose("train", overrides=density_overrides)
pixelcnn = load_model(train(cfg)["last_checkpoint"], kind="pixelcnn")
scores = score_dataset(pixelcnn, stamp_set, baseline=fit_baseline(pixelcnn.quantizer, stamp_set))
table = table.merge(scores.drop(columns="index"), on="id")
table.sort_values("local", ascending=False).head(10)[
    ["id", "x", "y", "area", "cluster", "outlier_score", "local", "typicality", "likelihood_ratio"]
]

# %%
top = table.sort_values("local", ascending=False).head(16)
save_anomalies_picture(
    OUT / "anomalies.png",
    stamps[top["row"].to_numpy()][:, None],
    top["id"].tolist(),
    top["local"].tolist(),
)
display(Image(filename=OUT / "anomalies.png"))

# %% [markdown]
# Do the two views agree? The taxonomy's outlier score (how poorly a stamp fits any cluster
# of embeddings) against the PixelCNN's `local` score (how surprising its pixels are). They
# measure different things; a weak correlation is expected.

# %%
rho = spearmanr(table["outlier_score"], table["local"]).statistic
print(f"Spearman rank correlation: {rho:.2f}")

# %% [markdown]
# ## 5. Back on the sky
#
# Every kept source at its place in the picture, coloured by cluster (grey: noise), and the
# ten highest `local` scores circled in red.

# %%
fig, ax = plt.subplots(figsize=(10, 8.7))
ax.imshow(rgb, origin="upper")
noise_rows = table["cluster"] < 0
ax.scatter(table["x"][noise_rows], table["y"][noise_rows], s=12, color="0.6")
clustered = table[~noise_rows]
ax.scatter(clustered["x"], clustered["y"], c=clustered["cluster"] % 10, cmap="tab10", s=12)
top10 = top.head(10)
ax.scatter(top10["x"], top10["y"], s=300, facecolors="none", edgecolors="red", linewidths=1.5)
ax.set_axis_off()
plt.show()
