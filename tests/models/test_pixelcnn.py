"""The PixelCNN LightningModule: it reaches the entropy of known noise, samples each class it
was conditioned on, refuses bad input clearly and round-trips checkpoints."""

from __future__ import annotations

import functools
import math

import lightning as L
import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader

from morpho.data.preprocess import Preprocessor
from morpho.data.stretches import make_stretch
from morpho.density.quantize import Quantizer
from morpho.models import PixelCNNModule, load_model
from morpho.nets import PixelCNN
from tests.models.lightning_helpers import cpu_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMA = 6.0  # background noise of every image, ADU
SIZE = 12


def _module(net: PixelCNN, quantizer: Quantizer, **kwargs) -> PixelCNNModule:
    # Trained outside a GalaxyDataModule, the module is handed the (unused) preprocessor.
    return PixelCNNModule(
        net,
        quantizer,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-2),
        preprocessor=Preprocessor(make_stretch("none"), normalize=False),
        **kwargs,
    )


def _loader(images: torch.Tensor, labels: torch.Tensor | None = None) -> DataLoader:
    if labels is None:
        items = [{"image": image} for image in images]
    else:
        items = [
            {"image": image, "label": label} for image, label in zip(images, labels, strict=True)
        ]
    return DataLoader(items, batch_size=32)


def _noise(n: int, size: int, seed: int) -> torch.Tensor:
    """Sky-subtracted Gaussian noise of σ = SIGMA ADU, (n, 1, size, size) float32."""
    return SIGMA * torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _discretised_gaussian(n_levels: int, sky: float) -> np.ndarray:
    """P(k) of k = ⌊x + sky + ½⌋ for x ~ N(0, SIGMA²), the end levels taking the tails."""
    k = np.arange(n_levels)
    upper = stats.norm.cdf((k + 0.5 - sky) / SIGMA)
    lower = stats.norm.cdf((k - 0.5 - sky) / SIGMA)
    upper[-1], lower[0] = 1.0, 0.0
    return upper - lower


def test_bits_per_dim_reach_the_entropy_of_discretised_gaussian_noise(tmp_path):
    quantizer = Quantizer(offset=-30.0, step=1.0, n_levels=64, background_sigma=SIGMA)
    p = _discretised_gaussian(64, 30.0)
    entropy = float(-(p * np.log2(p)).sum())
    # The differential entropy, plus the binning's Sheppard term 1 / (24 σ² ln 2).
    differential = 0.5 * math.log2(2 * math.pi * math.e * SIGMA**2)
    assert entropy == pytest.approx(differential + 1 / (24 * SIGMA**2 * math.log(2)), abs=1e-5)
    L.seed_everything(0, verbose=False)
    model = _module(PixelCNN(in_channels=1, channels=8, n_blocks=1, n_mix=3), quantizer)
    trainer = cpu_trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    trainer.fit(model, _loader(_noise(200 * 32, 16, seed=0)), _loader(_noise(64, 16, seed=1)))
    assert abs(float(trainer.callback_metrics["val/bits_per_dim"]) - entropy) < 0.03
    held_out = _noise(256, 16, seed=2)
    bits = model.eval().log_likelihood(held_out)["bits_per_dim"]
    assert bits.shape == (256,)
    assert abs(float(bits.mean()) - entropy) < 0.025
    # Against the true law on the same pixels (a low-variance estimate of the KL divergence).
    levels = quantizer.quantize(held_out).levels.numpy()
    true_bits = float(-np.log2(p[levels]).mean())
    assert -0.003 < float(bits.mean()) - true_bits < 0.01


def test_one_gaussian_component_learns_gaussian_noise_exactly(tmp_path):
    # The law of the data is one discretised Gaussian: a single Gaussian component can be it
    # exactly, where a single logistic is about 0.014 bits per pixel above it at best.
    quantizer = Quantizer(offset=-30.0, step=1.0, n_levels=64, background_sigma=SIGMA)
    p = _discretised_gaussian(64, 30.0)
    held_out = _noise(256, 16, seed=2)
    true_bits = float(-np.log2(p[quantizer.quantize(held_out).levels.numpy()]).mean())
    excess = {}
    for component in ("gaussian", "logistic"):
        L.seed_everything(0, verbose=False)
        net = PixelCNN(in_channels=1, channels=8, n_blocks=1, n_mix=1, component=component)
        model = _module(net, quantizer)
        trainer = cpu_trainer(tmp_path / component, max_epochs=1, enable_checkpointing=False)
        trainer.fit(model, _loader(_noise(100 * 32, 16, seed=0)), _loader(_noise(64, 16, seed=1)))
        bits = model.eval().log_likelihood(held_out)["bits_per_dim"]
        excess[component] = float(bits.mean()) - true_bits
    assert -0.002 < excess["gaussian"] < 0.003, excess
    assert excess["logistic"] > excess["gaussian"] + 0.008, excess


def _blob() -> torch.Tensor:
    """A round Gaussian of 40 ADU peak and σ = 1.5 pixels at the centre, (SIZE, SIZE)."""
    y, x = torch.meshgrid(*[torch.arange(SIZE) - (SIZE - 1) / 2] * 2, indexing="ij")
    return 40.0 * torch.exp(-(x**2 + y**2) / (2 * 1.5**2))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A model conditioned on 3 labels, trained on two (0: sky noise, 1: noise and a central
    blob; 2 never seen), in eval mode, and its checkpoint (read-only)."""
    quantizer = Quantizer(offset=-30.0, step=1.0, n_levels=128, background_sigma=SIGMA)
    L.seed_everything(0, verbose=False)
    net = PixelCNN(in_channels=1, channels=8, n_blocks=2, n_mix=2, dilations=[1, 2], n_classes=3)
    model = _module(net, quantizer, condition="label")
    labels = torch.arange(200 * 32) % 2
    images = _noise(len(labels), SIZE, seed=3) + labels[:, None, None, None] * _blob()
    tmp_path = tmp_path_factory.mktemp("pixelcnn")
    trainer = cpu_trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    trainer.fit(model, _loader(images, labels), _loader(images[:32], labels[:32]))
    path = tmp_path / "pixelcnn.ckpt"
    trainer.save_checkpoint(path)
    return model.eval(), path


def test_samples_of_each_class_look_like_that_class(labelled):
    model, _ = labelled
    assert model.label_counts.tolist() == [3200, 3200, 0]
    assert model.image_shape.tolist() == [1, SIZE, SIZE]
    central, outer = {}, {}
    for label in (0, 1):
        levels = model.sample(16, seed=label, labels=[label] * 16)
        assert levels.shape == (16, 1, SIZE, SIZE)
        flux = model.quantizer.dequantize(levels)[:, 0]
        central[label] = flux[:, 4:8, 4:8].mean(dim=(1, 2))
        outer[label] = flux[:, :3].mean(dim=(1, 2))
    # The blob puts 24 ADU on the central 4×4 pixels on average; noise there is 1.5 ADU.
    assert central[1].min() > central[0].max()
    assert float(central[1].mean()) > 15.0
    assert abs(float(central[0].mean())) < 2.0
    for label in (0, 1):
        assert abs(float(outer[label].mean())) < 2.0, label
    # The likelihood prefers the right label for each kind of image.
    images = torch.cat([_noise(4, SIZE, seed=4), _noise(4, SIZE, seed=5) + _blob()])
    truth = torch.tensor([0] * 4 + [1] * 4)
    right = model.log_likelihood(images, labels=truth)["log_likelihood"]
    wrong = model.log_likelihood(images, labels=1 - truth)["log_likelihood"]
    assert (right > wrong + 10).all()


def test_bad_input_is_refused_clearly(labelled):
    model, _ = labelled
    images = _noise(2, SIZE, seed=6)
    bright = images.clone()
    bright[0, 0, 3, 3] = 500.0
    with pytest.raises(ValueError, match=r"above the quantisation range \[-30, 97\]"):
        model.log_likelihood(bright, labels=[0, 0])
    assert torch.isfinite(
        model.log_likelihood(bright, labels=[0, 0], strict=False)["bits_per_dim"]
    ).all()
    with pytest.raises(
        ValueError, match=r"images have 2 band\(s\) but this model was trained on 1"
    ):
        model.log_likelihood(images.expand(-1, 2, -1, -1), labels=[0, 0])
    with pytest.raises(ValueError, match=r"images have 3 band\(s\)"):
        model.complete(
            images.expand(-1, 3, -1, -1), torch.ones(SIZE, SIZE, dtype=torch.bool), labels=[0, 0]
        )
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\)"):
        model.log_likelihood(images[0], labels=[0])
    for n in (0, -2, 1.5):
        with pytest.raises(ValueError, match="number of samples must be a positive integer"):
            model.sample(n, labels=[0])
    with pytest.raises(
        ValueError,
        match=r"label\(s\) \[2\] were never seen in training; this model knows labels \[0, 1\]",
    ):
        model.sample(2, labels=[0, 2])
    with pytest.raises(ValueError, match=r"label\(s\) \[2\] were never seen"):
        model.log_likelihood(images, labels=[2, 2])
    for outside in (3, -1):
        with pytest.raises(ValueError, match=rf"label\(s\) \[{outside}\]"):
            model.sample(1, labels=[outside])
    with pytest.raises(ValueError, match=r"conditioned on labels: pass labels \(N,\)"):
        model.sample(2)
    with pytest.raises(ValueError, match="got 1 labels for 2 images"):
        model.log_likelihood(images, labels=[0])


def test_unconditional_model_before_training_and_mismatched_net():
    quantizer = Quantizer(n_levels=256)
    model = _module(PixelCNN(in_channels=1, channels=4, n_blocks=1, n_mix=1), quantizer)
    with pytest.raises(ValueError, match=r"has not been trained: pass image_size=\(H, W\)"):
        model.sample(1)
    assert model.sample(1, image_size=(3, 4)).shape == (1, 1, 3, 4)
    with pytest.raises(ValueError, match="condition='label' needs a net built for it"):
        _module(
            PixelCNN(in_channels=1, channels=4, n_blocks=1, n_mix=1), quantizer, condition="label"
        )
    with pytest.raises(ValueError, match="condition must be one of"):
        _module(
            PixelCNN(in_channels=1, channels=4, n_blocks=1, n_mix=1), quantizer, condition="class"
        )


def test_checkpoint_round_trip_gives_the_same_likelihoods_and_samples(labelled):
    model, path = labelled
    loaded = load_model(path, kind="pixelcnn")
    assert isinstance(loaded, PixelCNNModule)
    assert loaded.quantizer == model.quantizer
    assert torch.equal(loaded.label_counts, model.label_counts)
    assert torch.equal(loaded.image_shape, model.image_shape)
    images = torch.cat([_noise(2, SIZE, seed=7), _noise(2, SIZE, seed=8) + _blob()])
    labels = torch.tensor([0, 0, 1, 1])
    expected = model.log_likelihood(images, labels=labels)
    got = loaded.log_likelihood(images, labels=labels)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert torch.equal(
        loaded.sample(2, seed=9, labels=[1, 0]), model.sample(2, seed=9, labels=[1, 0])
    )
    with pytest.raises(ValueError, match=r"label\(s\) \[2\] were never seen"):
        loaded.sample(1, labels=[2])


def test_dihedral_mixture_is_a_normalised_likelihood_invariant_to_turns_and_mirrors():
    # Every 3×3 image of 3 levels (3⁹ of them): the probabilities of each likelihood sum to 1.
    torch.manual_seed(0)
    quantizer = Quantizer(offset=-1.0, step=1.0, n_levels=3, background_sigma=1.0)
    model = _module(PixelCNN(in_channels=1, channels=8, n_blocks=2, n_mix=2), quantizer)
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.normal_(0, 0.5)  # far from uniform, and unlike in every orientation
    codes = torch.arange(3**9)
    levels = torch.stack([(codes // 3**i) % 3 for i in range(9)], dim=1).view(-1, 1, 3, 3)
    images = quantizer.dequantize(levels)
    plain = model.log_likelihood(images)["log_likelihood"].double()
    mixture = model.log_likelihood(images, symmetry="dihedral")["log_likelihood"].double()
    assert plain.exp().sum().item() == pytest.approx(1.0, abs=1e-4)
    assert mixture.exp().sum().item() == pytest.approx(1.0, abs=1e-4)
    assert (mixture - plain).abs().max() > 0.1
    assert (mixture >= plain - math.log(8) - 1e-4).all()
    turned = torch.rot90(images[:50].flip(-1), 1, dims=(-2, -1))
    torch.testing.assert_close(
        model.log_likelihood(turned, symmetry="dihedral")["log_likelihood"].double(),
        mixture[:50],
    )
    with pytest.raises(
        ValueError, match=r"symmetry must be None \(null in a config\) or 'dihedral'"
    ):
        model.log_likelihood(images[:1], symmetry="rot90")
    with pytest.raises(ValueError, match="square"):
        model.log_likelihood(torch.zeros(1, 1, 3, 4), symmetry="dihedral")
    # Given the image's own ln p, the mixture needs only the 7 other orientations.
    passes = []
    pixel_log_prob = model.pixel_log_prob
    model.pixel_log_prob = lambda *a, **k: passes.append(1) or pixel_log_prob(*a, **k)
    as_is = plain[:50].float()
    reused = model.image_log_prob(levels[:50], symmetry="dihedral", as_is=as_is).double()
    assert len(passes) == 7
    torch.testing.assert_close(reused, mixture[:50])
