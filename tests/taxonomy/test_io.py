"""Saving and loading taxonomies; foreign, plain-pickle and damaged files are refused unread."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from morpho.data.errors import DataError
from morpho.taxonomy import Taxonomy, load_taxonomy, read_taxonomy_header, save_taxonomy
from morpho.taxonomy.io import MAGIC, TAXONOMY_FORMAT


def _trip(marker: str) -> str:
    """Create ``marker``: what unpickling a :class:`Tripwire` does."""
    Path(marker).touch()
    return marker


class Tripwire:
    """An object whose unpickling creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_trip, (str(self.marker),))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, fitted) -> Path:
    """The session taxonomy, saved (read-only)."""
    return save_taxonomy(fitted, tmp_path_factory.mktemp("io") / "blobs.taxonomy")


def test_round_trip_predicts_identically(saved, fitted, new_blobs) -> None:
    loaded = load_taxonomy(saved)
    assert loaded is not fitted
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.labels_, fitted.labels_)
    X = new_blobs[0]
    assigned = loaded.assign(X)
    assert assigned.equals(fitted.assign(X))
    assert assigned["cluster"].nunique() == 4


def test_header_is_readable_without_unpickling(saved, fitted) -> None:
    header = read_taxonomy_header(saved)
    assert header["format"] == TAXONOMY_FORMAT
    assert header["params"] == fitted.get_params()
    assert header["n_galaxies"] == 1000
    assert header["n_clusters"] == 4
    assert header["versions"]["morpho"]
    assert saved.read_bytes().startswith(MAGIC)


def test_existing_file_is_kept(saved, fitted) -> None:
    before = saved.read_bytes()
    with pytest.raises(FileExistsError, match=r"blobs\.taxonomy exists"):
        save_taxonomy(fitted, saved)
    assert saved.read_bytes() == before


def test_only_fitted_taxonomies_are_saved(tmp_path) -> None:
    with pytest.raises(NotFittedError):
        save_taxonomy(Taxonomy(), tmp_path / "t.taxonomy")
    with pytest.raises(TypeError, match="saves a Taxonomy, got dict"):
        save_taxonomy({}, tmp_path / "t.taxonomy")
    assert not list(tmp_path.iterdir())


def test_tripwire_works(tmp_path) -> None:
    """The check below is meaningful: unpickling a Tripwire does create its marker."""
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(Tripwire(marker)))
    assert marker.exists()


def test_plain_pickle_is_refused_unread(tmp_path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(Tripwire(marker)))
    with pytest.raises(DataError, match=r"plain\.pkl is not a morpho taxonomy file"):
        load_taxonomy(path)
    assert not marker.exists()


def test_random_bytes_are_refused(tmp_path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match=r"noise\.bin is not a morpho taxonomy file"):
        load_taxonomy(path)


def _with_header(payload: bytes, **changes) -> bytes:
    header = {
        "format": TAXONOMY_FORMAT,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    header.update(changes)
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


def test_truncated_payload_is_refused_unread(tmp_path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "cut.taxonomy"
    path.write_bytes(_with_header(pickle.dumps(Tripwire(marker)))[:-1])
    with pytest.raises(DataError, match=r"cut\.taxonomy is truncated or corrupt.*not unpickled"):
        load_taxonomy(path)
    assert not marker.exists()


def test_truncated_saved_file_is_refused(tmp_path, saved) -> None:
    path = tmp_path / "half.taxonomy"
    path.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(DataError, match=r"half\.taxonomy is truncated or corrupt"):
        load_taxonomy(path)


@pytest.mark.parametrize("cut", [len(MAGIC), len(MAGIC) + 20], ids=["no-header", "half-header"])
def test_truncated_header_is_refused(tmp_path, saved, cut) -> None:
    path = tmp_path / "head.taxonomy"
    path.write_bytes(saved.read_bytes()[:cut])
    with pytest.raises(DataError, match=r"head\.taxonomy has a corrupt or truncated header"):
        load_taxonomy(path)


def test_other_format_version_is_refused(tmp_path) -> None:
    path = tmp_path / "future.taxonomy"
    path.write_bytes(_with_header(pickle.dumps(1), format="morpho-taxonomy/99"))
    with pytest.raises(DataError, match="format 'morpho-taxonomy/99', which this morpho"):
        load_taxonomy(path)


def test_other_object_with_a_valid_header_is_refused(tmp_path) -> None:
    path = tmp_path / "dict.taxonomy"
    path.write_bytes(_with_header(pickle.dumps({"labels_": [0, 1]})))
    with pytest.raises(DataError, match=r"dict\.taxonomy holds a dict, not a Taxonomy"):
        load_taxonomy(path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.taxonomy"):
        load_taxonomy(tmp_path / "absent.taxonomy")
