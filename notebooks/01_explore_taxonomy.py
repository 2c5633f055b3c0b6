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
# # Explore a morphology taxonomy
#
# This notebook walks through morpho's unsupervised taxonomy end to end:
#
# 1. simulate galaxies of the six-class mix (elliptical, lenticular, spiral, barred spiral,
#    edge-on, irregular) with exact truth;
# 2. train the taxonomy autoencoder (`experiment=taxonomy`);
# 3. embed every galaxy and fit the taxonomy (UMAP, then HDBSCAN);
# 4. look at it: the 2-D map coloured by cluster, the typical members and the strongest
#    outliers, the hierarchy, and any cluster or galaxy pulled up by its number or id.
#
# The labels of the simulation are never shown to the model; they are used only at the
# end, to see which classes each cluster gathered.
#
# **Tiny vs full.** With `MORPHO_NOTEBOOK_TINY=1` (as in CI) the notebook runs in about a
# minute on a laptop: a few hundred 32×32 galaxies, two epochs, a small network. The
# clusters are then rough: this setting checks that everything runs, not the science. Without
# it, it simulates 5000 galaxies at 64×64 and trains for 15 epochs (not timed yet: far
# longer than the tiny run on a CPU).

# %%
import os
import tempfile
from pathlib import Path

TINY = os.environ.get("MORPHO_NOTEBOOK_TINY") == "1"
if TINY:
    N_GALAXIES, IMAGE_SIZE, EPOCHS = 300, 32, 2
    NETWORK = ["model.encoder.channels=[8,16,32]", "model.encoder.embedding_dim=16"]
    NETWORK += ["model.projector.hidden_dim=64", "model.projector.out_dim=64"]
    NETWORK += ["++trainer.log_every_n_steps=1"]  # an epoch has only a few batches
    TAXONOMY = {"n_neighbors": 15, "min_cluster_size": 15, "n_epochs": 200}
    OUT = Path(tempfile.mkdtemp(prefix="morpho_01_"))
else:
    N_GALAXIES, IMAGE_SIZE, EPOCHS = 5000, 64, 15
    NETWORK = []  # conf/model/autoencoder.yaml as it is
    TAXONOMY = {"n_neighbors": 30, "min_cluster_size": 50}
    OUT = Path("outputs/01_explore_taxonomy")
OUT.mkdir(parents=True, exist_ok=True)
print(f"tiny={TINY}: {N_GALAXIES} galaxies of {IMAGE_SIZE}x{IMAGE_SIZE}, outputs in {OUT}")

# %%
import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from IPython.display import Image, display

from morpho.cli.train import train
from morpho.config import config_dir
from morpho.data import GalaxyDataset
from morpho.data.simulate import MORPHOLOGY_CLASSES, SimulationSpec, simulate_to_hdf5
from morpho.data.sources import HDF5Source
from morpho.models import load_model
from morpho.plotting import save_mosaic
from morpho.taxonomy import (
    Taxonomy,
    plot_cluster_mosaic,
    plot_map,
    plot_outlier_mosaic,
    plot_tree,
    strongest_outliers,
    typical_members,
)
from morpho.taxonomy.embed import embed_dataset

# %% [markdown]
# ## 1. Simulated galaxies
#
# `simulate_to_hdf5` renders the galaxies with GalSim into one HDF5 file: noisy images in
# ADU, the noiseless images, each galaxy's PSF and a catalog of the truth. Below, eight
# galaxies of each class.

# %%
data_path = OUT / "galaxies.h5"
if not data_path.exists():
    simulate_to_hdf5(
        data_path,
        n_galaxies=N_GALAXIES,
        spec=SimulationSpec(image_size=IMAGE_SIZE),
        seed=0,
        workers=1 if TINY else None,
        progress=not TINY,
    )
dataset = GalaxyDataset(HDF5Source(data_path), image_size=IMAGE_SIZE)
catalog = dataset.catalog
by_class = [np.flatnonzero(catalog["label"] == k)[:8] for k in range(len(MORPHOLOGY_CLASSES))]
save_mosaic(
    [np.stack([dataset[int(i)]["image"].numpy() for i in rows]) for rows in by_class],
    OUT / "classes.png",
    row_labels=list(MORPHOLOGY_CLASSES),
    title="the simulated classes",
)
display(Image(filename=OUT / "classes.png"))

# %% [markdown]
# ## 2. Train the taxonomy autoencoder
#
# The same training as `morpho-train experiment=taxonomy`, composed with Hydra from the
# package's configs: galaxies are canonicalised (centred, aligned, rescaled,
# flux-normalised), and the network learns to reconstruct them while two nuisance views of
# each galaxy (rotation, noise, blur, flux) are pulled to the same embedding (VICReg).

# %%
overrides = [
    "experiment=taxonomy",
    f"data.source.path={data_path}",
    "data.prepare=null",
    f"data.image_size={IMAGE_SIZE}",
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
checkpoint = result["last_checkpoint"]
print("checkpoint:", checkpoint)
print({k: round(v, 4) for k, v in result["metrics"].items() if k.startswith("val/")})

# %% [markdown]
# ## 3. Embed the galaxies and fit the taxonomy
#
# `embed_dataset` runs every galaxy through the trained encoder (one vector per galaxy);
# `Taxonomy` reduces the vectors with UMAP and clusters them with HDBSCAN. Galaxies that
# belong to no cluster are *noise* (cluster −1); every galaxy has a membership probability
# and a GLOSH outlier score.

# %%
model = load_model(checkpoint, kind="autoencoder")
ids, rows, embeddings = embed_dataset(model, dataset)
taxonomy = Taxonomy(random_state=0, **TAXONOMY).fit(embeddings)
table = taxonomy.table(ids)
table["class"] = catalog["class_name"].to_numpy()[rows]
print(f"{taxonomy.n_clusters_} clusters; {np.mean(taxonomy.labels_ < 0):.0%} of galaxies are noise")
table.head()

# %% [markdown]
# ## 4. The map
#
# Every galaxy at its place in the 2-D UMAP map, coloured by cluster (grey: noise). The
# cluster number sits at the middle of its members.

# %%
plot_map(taxonomy, OUT / "map.png")
display(Image(filename=OUT / "map.png"))

# %% [markdown]
# Which simulated classes each cluster gathered (the labels were not used to find them):

# %%
pd.crosstab(table["cluster"], table["class"])

# %% [markdown]
# ## 5. Typical members and outliers
#
# The most typical members of each cluster (highest membership probability), one row per
# cluster, and the galaxies with the highest outlier scores, which fit no cluster well.


# %%
def stamps(indices):
    """Images of the galaxies at these rows of the taxonomy (display glue)."""
    return np.stack([dataset[int(rows[i])]["image"].numpy() for i in indices])


members = typical_members(taxonomy, 8)
if members:
    plot_cluster_mosaic({label: stamps(idx) for label, idx in members.items()}, OUT / "typical.png")
    display(Image(filename=OUT / "typical.png"))
outliers = strongest_outliers(taxonomy, 16)
plot_outlier_mosaic(stamps(outliers), taxonomy.outlier_scores_[outliers], OUT / "outliers.png")
display(Image(filename=OUT / "outliers.png"))

# %% [markdown]
# ## 6. The hierarchy
#
# HDBSCAN's condensed tree, kept down to the selected clusters: clusters that split from the
# same parent are close relatives. The vertical axis is λ = 1 / distance at which a branch
# is born.

# %%
plot_tree(taxonomy, OUT / "tree.png")
display(Image(filename=OUT / "tree.png"))

# %% [markdown]
# ## 7. Pull up a cluster or a galaxy
#
# Change `CLUSTER` or `GALAXY_ID` and re-run the cell: `show_cluster` prints the cluster's
# size, its parent in the tree and its classes, and shows its most typical members;
# `show_galaxy` prints a galaxy's row of the taxonomy table and shows it beside the typical
# members of its cluster. Galaxy ids are those of the `id` column of `table`.


# %%
def show_cluster(label, k=8):
    """Summary and typical members of cluster ``label`` (display glue)."""
    chosen = table[table["cluster"] == label]
    print(f"cluster {label}: {len(chosen)} galaxies, parent node {taxonomy.parent_node(label)}")
    print(chosen["class"].value_counts().to_string())
    path = OUT / f"cluster_{label}.png"
    save_mosaic([stamps(members[label][:k])], path, row_labels=[f"cluster {label}"])
    display(Image(filename=path))


def show_galaxy(galaxy_id):
    """A galaxy's taxonomy row, and the galaxy beside its cluster's typical members."""
    matches = np.flatnonzero(table["id"] == str(galaxy_id))
    if not len(matches):
        raise KeyError(f"no galaxy {galaxy_id!r}: ids are those of table['id'], e.g. {ids[0]!r}")
    position = int(matches[0])
    row = table.iloc[position]
    display(row.to_frame().T)
    neighbours = members.get(int(row["cluster"]), [])[:7]
    shown = [stamps([position])] + ([stamps(neighbours)] if len(neighbours) else [])
    path = OUT / f"galaxy_{galaxy_id}.png"
    save_mosaic(shown, path, row_labels=["galaxy", f"cluster {row['cluster']}"][: len(shown)])
    display(Image(filename=path))


# %%
CLUSTER = 0
GALAXY_ID = table["id"].iloc[int(strongest_outliers(taxonomy, 1)[0])]
if taxonomy.n_clusters_ > CLUSTER:
    show_cluster(CLUSTER)
show_galaxy(GALAXY_ID)

# %% [markdown]
# The fitted taxonomy can be saved with `morpho.taxonomy.save_taxonomy` and new galaxies
# placed in it with `Taxonomy.assign`; the command-line tools `morpho-embed`,
# `morpho-cluster` and `morpho-assign` do the same steps on any data set.
