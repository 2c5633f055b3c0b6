"""Save a fitted taxonomy to one file and load it back.

File layout:

1. the magic line ``MORPHO-TAXONOMY\\n``;
2. one line of JSON: ``format`` (``morpho-taxonomy/1``), the versions of morpho,
   umap-learn, hdbscan, scikit-learn, numpy and Python that wrote it, the
   estimator's ``params``, ``n_galaxies``, ``n_features_in``, ``n_clusters``,
   and the length and SHA-256 of the payload;
3. the payload: the fitted :class:`~morpho.taxonomy.Taxonomy`, pickled.

The fitted UMAP and HDBSCAN models can only be stored as pickles, and
**unpickling can execute arbitrary code**: load only files you trust.
:func:`load_taxonomy` checks the magic line, the header and the payload's
checksum before it unpickles anything, so that a file which is not a morpho
taxonomy, or a truncated one, is refused without being unpickled; this guards
against mistakes, not against a crafted file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pickle
import platform
from pathlib import Path
from typing import Any

from sklearn.utils.validation import check_is_fitted

from morpho import __version__
from morpho.data.errors import DataError
from morpho.taxonomy.clusterer import Taxonomy
from morpho.utils import atomic_output

__all__ = ["MAGIC", "TAXONOMY_FORMAT", "load_taxonomy", "read_taxonomy_header", "save_taxonomy"]

MAGIC = b"MORPHO-TAXONOMY\n"
TAXONOMY_FORMAT = "morpho-taxonomy/1"
_MAX_HEADER_BYTES = 1 << 16
_LIBRARIES = ("umap-learn", "hdbscan", "scikit-learn", "numpy", "pynndescent", "numba")


def _versions() -> dict[str, str]:
    versions = {"morpho": __version__, "python": platform.python_version()}
    versions.update({name: importlib.metadata.version(name) for name in _LIBRARIES})
    return versions


def save_taxonomy(taxonomy: Taxonomy, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a fitted taxonomy to ``path`` (atomically).

    Parameters
    ----------
    taxonomy : Taxonomy
        A fitted taxonomy.
    path : str or path-like
        The file to write (``.taxonomy`` is a good suffix).
    overwrite : bool
        Replace ``path`` if it exists.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        If ``taxonomy`` is not a :class:`Taxonomy`.
    sklearn.exceptions.NotFittedError
        If it is not fitted.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"save_taxonomy saves a Taxonomy, got {type(taxonomy).__name__}")
    check_is_fitted(taxonomy)
    payload = pickle.dumps(taxonomy, protocol=pickle.HIGHEST_PROTOCOL)
    header = {
        "format": TAXONOMY_FORMAT,
        "versions": _versions(),
        "params": taxonomy.get_params(),
        "n_galaxies": len(taxonomy.labels_),
        "n_features_in": taxonomy.n_features_in_,
        "n_clusters": taxonomy.n_clusters_,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(json.dumps(header, default=repr).encode() + b"\n")
        f.write(payload)
    return path


def _read_header(f, path: Path) -> dict[str, Any]:
    if f.read(len(MAGIC)) != MAGIC:
        raise DataError(
            f"{path} is not a morpho taxonomy file (it does not start with {MAGIC!r}); "
            "taxonomy files are written by morpho.taxonomy.save_taxonomy"
        )
    line = f.readline(_MAX_HEADER_BYTES)
    try:
        header = json.loads(line) if line.endswith(b"\n") else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or "format" not in header:
        raise DataError(f"{path} has a corrupt or truncated header; write it again")
    if header["format"] != TAXONOMY_FORMAT:
        raise DataError(
            f"{path} is in format {header['format']!r}, which this morpho "
            f"({__version__}) cannot read (it reads {TAXONOMY_FORMAT!r}); "
            "load it with the morpho version that wrote it, or refit"
        )
    return header


def read_taxonomy_header(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a taxonomy file (versions, parameters, sizes); unpickles nothing.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    morpho.data.DataError
        If ``path`` is not a morpho taxonomy file or its header is damaged.
    """
    path = Path(path)
    with open(path, "rb") as f:
        return _read_header(f, path)


def load_taxonomy(path: str | os.PathLike) -> Taxonomy:
    """Load a taxonomy written by :func:`save_taxonomy`.

    .. warning::
       This unpickles Python objects, and unpickling can execute arbitrary
       code. Load only files you trust (ones you wrote, or from a source you
       trust). The checks below refuse damaged or foreign files before
       unpickling; they do not make a malicious file safe.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_taxonomy`.

    Returns
    -------
    Taxonomy
        The fitted taxonomy; it predicts exactly as the one saved.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    morpho.data.DataError
        If ``path`` is not a morpho taxonomy file, is truncated or corrupt, or
        cannot be unpickled with the installed libraries.
    """
    path = Path(path)
    with open(path, "rb") as f:
        header = _read_header(f, path)
        payload = f.read()
    if len(payload) != header.get("payload_bytes") or hashlib.sha256(
        payload
    ).hexdigest() != header.get("payload_sha256"):
        raise DataError(
            f"{path} is truncated or corrupt (its content does not match the length and "
            "checksum in its header); it was not unpickled. Save the taxonomy again"
        )
    try:
        taxonomy = pickle.loads(payload)
    except (AttributeError, ImportError, pickle.UnpicklingError, TypeError) as error:
        raise DataError(
            f"{path} was written with {header.get('versions')} and cannot be unpickled "
            f"with {_versions()}: {error}; install the versions that wrote it, or refit"
        ) from error
    if not isinstance(taxonomy, Taxonomy):
        raise DataError(f"{path} holds a {type(taxonomy).__name__}, not a Taxonomy")
    return taxonomy
