"""The autoencoder LightningModule: it learns, embeds invariantly, and round-trips checkpoints."""

from __future__ import annotations

import functools

import pytest
import torch

from morpho.data.canonical import Canonicalize
from morpho.data.datamodule import GalaxyDataModule
from morpho.data.errors import DataError
from morpho.data.sources import HDF5Source
from morpho.data.stretches import ArcsinhStretch
from morpho.data.views import NuisanceViews
from morpho.models import AutoencoderModule, load_model
from morpho.nets import ConvDecoder, ConvEncoder, Projector
from tests.models.lightning_helpers import LossRecorder, cpu_trainer

TINY = {"image_size": 32, "channels": [8, 16], "embedding_dim": 8}


def _model(**kwargs) -> AutoencoderModule:
    options = {
        "projector": Projector(in_dim=8, hidden_dim=32, out_dim=32),
        "views": NuisanceViews(),
        "optimizer": functools.partial(torch.optim.Adam, lr=3e-3),
        **kwargs,
    }
    return AutoencoderModule(ConvEncoder(**TINY), ConvDecoder(**TINY), **options)


def _datamodule(path, **kwargs) -> GalaxyDataModule:
    return GalaxyDataModule(
        functools.partial(HDF5Source, path=path),
        image_size=32,
        batch_size=16,
        stretch=ArcsinhStretch(scale=6.0),
        **kwargs,
    )


def test_loss_falls_while_training(simulated_file, tmp_path):
    torch.manual_seed(0)
    losses = LossRecorder()
    model = _model(views=None, projector=None)
    trainer = cpu_trainer(tmp_path, max_epochs=5, callbacks=[losses], enable_checkpointing=False)
    trainer.fit(model, datamodule=_datamodule(simulated_file))
    first, last = sum(losses.values[:3]) / 3, sum(losses.values[-3:]) / 3
    assert last < 0.8 * first


def test_checkpoint_round_trip_gives_identical_embeddings(simulated_file, tmp_path):
    torch.manual_seed(0)
    model = _model()
    trainer = cpu_trainer(tmp_path, max_steps=3, limit_val_batches=1)
    dm = _datamodule(simulated_file)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_model(path, kind="autoencoder")
    images = torch.stack([dm.raw[i]["image"] for i in range(6)])
    model.eval()
    assert torch.allclose(loaded.embed(images), model.embed(images), atol=1e-6)
    assert torch.equal(loaded.preprocessor.mean, model.preprocessor.mean)


def test_dihedral_embedding_is_exactly_rotation_invariant(simulated_file):
    dm = _datamodule(simulated_file)
    dm.setup("fit")
    model = _model(preprocessor=dm.preprocessor, embedding_views="dihedral").eval()
    images = torch.stack([dm.raw[i]["image"] for i in range(4)])
    turned = torch.rot90(images, 1, dims=(-2, -1)).flip(-1)
    assert torch.allclose(model.embed(turned), model.embed(images), atol=1e-5)
    assert not torch.allclose(model(turned), model(images), atol=1e-3)


def test_checkpoints_of_other_kinds_or_other_files_are_refused(tmp_path):
    other = tmp_path / "pixelcnn.ckpt"
    torch.save({"state_dict": {}, "morpho": {"kind": "pixelcnn"}}, other)
    with pytest.raises(DataError, match="holds a morpho 'pixelcnn' model"):
        load_model(other, kind="autoencoder")
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(DataError, match="is not a morpho checkpoint"):
        load_model(plain)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match=r"junk\.ckpt is not a readable torch checkpoint"):
        load_model(junk)
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        load_model(tmp_path / "missing.ckpt")


def test_training_under_bf16_mixed_keeps_the_pixel_stages_in_float32(simulated_file, tmp_path):
    """Mixed precision (trainer.precision=bf16-mixed) runs the networks in bfloat16; the
    views, canonicalisation (moments, a determinant, resampling) and stretch stay float32:
    they used to fail there (no bfloat16 determinant) or lose precision."""
    dm = _datamodule(simulated_file, canonicalize=Canonicalize())
    dm.setup("fit")
    model = _model(preprocessor=dm.preprocessor)
    images = torch.stack([dm.raw[i]["image"] for i in range(8)])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        clean, noisy = model.views(images)
        preprocessed = model.preprocessor(noisy)
    assert clean.dtype == noisy.dtype == preprocessed.dtype == torch.float32
    with torch.no_grad():
        exact = model.preprocessor(noisy)
    torch.testing.assert_close(preprocessed, exact)

    torch.manual_seed(0)
    losses = LossRecorder()
    trainer = cpu_trainer(
        tmp_path,
        max_steps=3,
        precision="bf16-mixed",
        callbacks=[losses],
        limit_val_batches=1,
        enable_checkpointing=False,
    )
    trainer.fit(_model(), datamodule=_datamodule(simulated_file, canonicalize=Canonicalize()))
    assert len(losses.values) == 3
    assert all(torch.isfinite(torch.tensor(losses.values)))


def test_nuisance_correlation_is_one_for_a_copy_and_zero_for_an_orthogonal_code():
    from morpho.models.losses import nuisance_correlation

    u = torch.tensor([1.0, -1.0, 1.0, -1.0])
    v = torch.tensor([1.0, 1.0, -1.0, -1.0])
    assert nuisance_correlation(torch.stack([2 * u + 3, v], 1), u[:, None]).item() == (
        pytest.approx(1.0, abs=1e-5)
    )
    assert nuisance_correlation(v[:, None], u[:, None]).item() == pytest.approx(0.0, abs=1e-7)
    # Averaged over the nuisances: z holds u only, so (1 + 0) / 2.
    assert nuisance_correlation(u[:, None], torch.stack([u, v], 1)).item() == pytest.approx(
        0.5, abs=1e-5
    )
    with pytest.raises(ValueError, match="N >= 2"):
        nuisance_correlation(u[:1, None], u[:1, None])


def test_measured_nuisances_give_a_gaussians_size_and_its_snr_ratio():
    from morpho.models.autoencoder import measured_nuisances

    y, x = torch.meshgrid(torch.arange(48.0) - 23.5, torch.arange(48.0) - 23.5, indexing="ij")
    galaxy = 100 * torch.exp(-(x**2 + y**2) / (2 * 3.0**2))
    noise = torch.randn(48, 48, generator=torch.Generator().manual_seed(0))
    images = torch.stack([galaxy + noise, 2 * galaxy + noise])[:, None]
    log_snr, log_size = measured_nuisances(images).T
    # The adaptive moments of a Gaussian of σ are σ²/2 (weight covariance 2M at the fixed point).
    assert log_size.exp().tolist() == pytest.approx([3.0 / 2**0.5] * 2, rel=0.03)
    assert (log_snr[1] - log_snr[0]).item() == pytest.approx(0.6931, abs=0.03)  # ln 2


def test_the_decorrelation_term_is_trained_and_logged(simulated_file, tmp_path):
    torch.manual_seed(0)
    logged = {}
    for nuisances in (["snr"], ["snr", "size"]):
        torch.manual_seed(0)
        model = _model(nuisance_weight=10.0, nuisances=nuisances)
        trainer = cpu_trainer(
            tmp_path, max_steps=2, limit_val_batches=0, enable_checkpointing=False
        )
        trainer.fit(model, datamodule=_datamodule(simulated_file))
        logged[len(nuisances)] = trainer.callback_metrics["train/nuisance"].item()
        assert 0.0 <= logged[len(nuisances)] <= 8.0
    assert logged[1] != logged[2]  # the choice of nuisances reaches the loss
    with pytest.raises(ValueError, match="nuisance_weight"):
        _model(nuisance_weight=-1.0)
    for bad in (["flux"], [], ["snr", "snr"]):
        with pytest.raises(ValueError, match="nuisances"):
            _model(nuisance_weight=1.0, nuisances=bad)
