"""The DataModule: seeded splits, train-only statistics, augmentation only in training."""

from __future__ import annotations

import functools
import shutil

import h5py
import numpy as np
import pytest
import torch

from morpho.data.augment import Augment
from morpho.data.canonical import Canonicalize
from morpho.data.datamodule import GalaxyDataModule, split_indices
from morpho.data.errors import DataError
from morpho.data.simulate import EnsureSimulated, SimulationSpec
from morpho.data.sources import HDF5Source
from morpho.data.stretches import ArcsinhStretch, make_stretch


def _module(path, **kwargs) -> GalaxyDataModule:
    options = {"image_size": 32, "batch_size": 8, "stretch": ArcsinhStretch(scale=5.0), **kwargs}
    return GalaxyDataModule(functools.partial(HDF5Source, path=path), **options)


def test_split_is_seeded_disjoint_and_complete():
    a = split_indices(103, (0.8, 0.1, 0.1), seed=4)
    b = split_indices(103, (0.8, 0.1, 0.1), seed=4)
    c = split_indices(103, (0.8, 0.1, 0.1), seed=5)
    assert {k: len(v) for k, v in a.items()} == {"train": 83, "val": 10, "test": 10}
    assert np.array_equal(np.sort(np.concatenate(list(a.values()))), np.arange(103))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    with pytest.raises(ValueError, match="three fractions"):
        split_indices(10, (0.5, 0.6, 0.1), seed=0)


def test_init_reads_nothing(tmp_path):
    dm = _module(tmp_path / "missing.h5")
    assert dm.source is None  # the missing file is only noticed in setup()
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        dm.setup("fit")


def _copy_with_changed_images(src, dst, indices, factor):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        for i in indices:
            h5["images"][int(i)] = h5["images"][int(i)] * factor + 50.0


def test_normalisation_comes_from_the_training_split_only(simulated_file, tmp_path):
    split = split_indices(60, (0.8, 0.1, 0.1), seed=0)
    changed_test = tmp_path / "changed_test.h5"
    changed_train = tmp_path / "changed_train.h5"
    _copy_with_changed_images(simulated_file, changed_test, split["test"], 100.0)
    _copy_with_changed_images(simulated_file, changed_train, split["train"][:5], 100.0)
    states = []
    for path in (simulated_file, changed_test, changed_train):
        dm = _module(path)
        dm.setup("fit")
        states.append(dm.state_dict()["preprocessor"])
    assert torch.equal(states[0]["mean"], states[1]["mean"])
    assert torch.equal(states[0]["std"], states[1]["std"])
    assert not torch.equal(states[0]["mean"], states[2]["mean"])


def test_power_stretch_is_fitted_on_training_pixels_only(simulated_file, tmp_path):
    split = split_indices(60, (0.8, 0.1, 0.1), seed=0)
    changed_test = tmp_path / "changed_test.h5"
    _copy_with_changed_images(simulated_file, changed_test, split["test"], 30.0)
    lambdas = []
    for path in (simulated_file, changed_test):
        dm = _module(path, stretch=make_stretch("yeo-johnson"))
        dm.setup("fit")
        lambdas.append(dm.preprocessor.stretch.state_dict())
    for key, value in lambdas[0].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, lambdas[1][key])


def test_batches_are_flux_images_augmented_only_in_training(simulated_file):
    dm = _module(simulated_file, augment=Augment(max_shift=1.0))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 1, 32, 32)
    assert set(batch) >= {"image", "mask", "index", "id"}
    val = [next(iter(dm.val_dataloader())) for _ in range(2)]
    assert torch.equal(val[0]["image"], val[1]["image"])
    index = int(val[0]["index"][0])
    assert torch.equal(val[0]["image"][0], dm.raw[index]["image"])  # flux, untouched
    train_ds = dm.datasets["train"]
    assert not torch.equal(train_ds[0]["image"], train_ds[0]["image"])
    flux = train_ds[0]["image"].sum()
    assert float(flux) == pytest.approx(
        float(dm.raw[int(dm.indices["train"][0])]["image"].sum()), rel=0.1
    )


def test_preprocessor_standardises_training_images(simulated_file):
    dm = _module(simulated_file)
    dm.setup("fit")
    pixels = torch.cat([dm.preprocessor(b["image"]).flatten() for b in dm.train_dataloader()])
    assert float(pixels.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(pixels.std()) == pytest.approx(1.0, abs=0.05)


def test_canonicalisation_is_fitted_into_the_preprocessor(simulated_file):
    dm = _module(simulated_file, canonicalize=Canonicalize(target_sigma=3.0))
    dm.setup("fit")
    image = dm.raw[0]["image"][None]
    expected = (
        dm.preprocessor.stretch(Canonicalize(target_sigma=3.0)(image))
        - dm.preprocessor.mean.view(1, -1, 1, 1)
    ) / dm.preprocessor.std.view(1, -1, 1, 1)
    assert torch.allclose(dm.preprocessor(image), expected, atol=1e-5)
    pixels = torch.cat([dm.preprocessor(b["image"]).flatten() for b in dm.train_dataloader()])
    assert float(pixels.std()) == pytest.approx(1.0, abs=0.05)


def test_labels_come_from_the_catalog(simulated_file):
    dm = _module(simulated_file, label_key="label")
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    with h5py.File(simulated_file) as h5:
        expected = h5["catalog/label"][:][batch["index"].numpy()]
    assert np.array_equal(batch["label"].numpy(), expected)


def test_state_dict_restores_the_fitted_preprocessing(simulated_file, tmp_path):
    dm = _module(simulated_file)
    dm.setup("fit")
    state = dm.state_dict()
    other = tmp_path / "other.h5"
    _copy_with_changed_images(simulated_file, other, range(60), 3.0)
    restored = _module(other)
    restored.setup("fit")
    restored.load_state_dict(state)
    assert torch.equal(restored.preprocessor.mean, dm.preprocessor.mean)
    image = restored.raw[0]["image"]
    assert torch.equal(restored.preprocessor(image), dm.preprocessor(image))


def test_ensure_simulated_renders_once_and_refuses_other_settings(tmp_path):
    spec = SimulationSpec(image_size=16)
    path = tmp_path / "sim.h5"
    ensure = EnsureSimulated(path, n_galaxies=4, spec=spec, workers=1)
    ensure()
    stamp = path.stat().st_mtime_ns
    ensure()
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="different n_galaxies"):
        EnsureSimulated(path, n_galaxies=5, spec=spec, workers=1)()
    with pytest.raises(DataError, match="different spec"):
        EnsureSimulated(path, n_galaxies=4, spec=SimulationSpec(image_size=20), workers=1)()


def test_too_small_a_source_is_refused(tmp_path):
    with h5py.File(tmp_path / "two.h5", "w") as h5:
        h5["images"] = np.zeros((2, 32, 32, 1), dtype=np.float32)
    with pytest.raises(DataError, match="holds 2 galaxies"):
        _module(tmp_path / "two.h5").setup("fit")
