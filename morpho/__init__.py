"""morpho: unsupervised galaxy morphology.

Simulated and survey galaxy cutouts, autoencoder taxonomies (UMAP + HDBSCAN),
PixelCNN densities and Sérsic surface-brightness fitting.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
