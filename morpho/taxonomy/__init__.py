"""Morphology taxonomy: UMAP + HDBSCAN of galaxy embeddings, its tree, files and pictures.

Names are imported lazily, so that ``import morpho.taxonomy`` does not pay for
umap-learn, numba and matplotlib until they are used.
"""

from __future__ import annotations

from morpho.utils import lazy_exports

__all__ = [
    "Taxonomy",
    "cluster_stability",
    "load_taxonomy",
    "plot_cluster_mosaic",
    "plot_map",
    "plot_outlier_mosaic",
    "plot_tree",
    "read_taxonomy_header",
    "save_taxonomy",
    "strongest_outliers",
    "taxonomy_tree",
    "typical_members",
]

_WHERE = {
    "Taxonomy": "morpho.taxonomy.clusterer",
    "cluster_stability": "morpho.taxonomy.tree",
    "load_taxonomy": "morpho.taxonomy.io",
    "plot_cluster_mosaic": "morpho.taxonomy.plots",
    "plot_map": "morpho.taxonomy.plots",
    "plot_outlier_mosaic": "morpho.taxonomy.plots",
    "plot_tree": "morpho.taxonomy.plots",
    "read_taxonomy_header": "morpho.taxonomy.io",
    "save_taxonomy": "morpho.taxonomy.io",
    "strongest_outliers": "morpho.taxonomy.plots",
    "taxonomy_tree": "morpho.taxonomy.tree",
    "typical_members": "morpho.taxonomy.plots",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
