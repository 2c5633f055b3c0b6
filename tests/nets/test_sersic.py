"""The Sérsic networks: scalars condition the encoder and the head, which learn to use them."""

from __future__ import annotations

import pytest
import torch

from morpho.nets import FastEncoder, SersicHead


def _head(**kwargs) -> SersicHead:
    torch.manual_seed(0)
    return SersicHead(in_dim=16, n_features=3, hidden_dim=32, out_dim=2, **kwargs)


def test_training_starts_from_the_image_features_alone():
    head = _head().eval()
    features = torch.randn(5, 16)
    scalars = torch.randn(5, 3)
    assert torch.equal(head(features, scalars), head(features, 10 * scalars - 3))


def test_a_galaxy_alone_in_a_training_batch_uses_the_running_statistics():
    head = _head()
    head.train()
    head(torch.randn(64, 16), 5 + 0.1 * torch.randn(64, 3))  # running stats move
    features, scalars = torch.randn(1, 16), torch.randn(1, 3)
    alone = head(features, scalars)
    head.eval()
    torch.testing.assert_close(alone, head(features, scalars))


def test_in_evaluation_a_prediction_does_not_depend_on_the_rest_of_the_batch():
    head = _head()
    head.train()
    head(torch.randn(64, 16), torch.randn(64, 3))
    head.eval()
    features, scalars = torch.randn(8, 16), torch.randn(8, 3)
    together = head(features, scalars)
    single = torch.cat([head(features[i : i + 1], scalars[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(together, single)


def test_a_small_scalar_that_multiplies_an_image_feature_is_learned():
    # As a PSF's wing fraction (0.06 Gaussian, 0.22 Moffat) changes how an image reads:
    # the target is an image feature times a factor set by a small-valued scalar.
    generator = torch.Generator().manual_seed(1)
    n = 2048
    features = torch.randn(n, 16, generator=generator)
    wings = torch.where(torch.rand(n, generator=generator) < 0.5, 0.06, 0.22)
    scalars = torch.stack([wings, torch.randn(n, generator=generator), torch.zeros(n)], 1)
    factor = torch.where(wings > 0.1, 0.8, 1.2)
    target = torch.stack([features[:, 0] * factor, features[:, 1]], 1)
    head = _head()
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(400):
        batch = torch.randint(0, n, (128,), generator=generator)
        loss = (head(features[batch], scalars[batch]) - target[batch]).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    head.eval()
    with torch.no_grad():
        error = (head(features, scalars) - target)[:, 0]
    # Ignoring the scalar would leave |Δ| about 0.2 |f|: a mean squared error near 0.04.
    assert error.square().mean() < 0.004


def _encoder(**kwargs) -> FastEncoder:
    torch.manual_seed(0)
    encoder = FastEncoder(image_size=32, channels=[8, 16, 32], condition_dim=3, **kwargs)
    encoder(torch.randn(16, 1, 32, 32), torch.randn(16, 3))  # BatchNorm statistics move
    return encoder.eval()


def test_an_untrained_encoder_conditioning_changes_nothing():
    encoder = _encoder()
    images = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder(images, torch.zeros(4, 3)), encoder(images, torch.ones(4, 3)))


@pytest.mark.parametrize(
    "layout",
    [{}, {"core_size": 8}, {"full_resolution": (4, 6), "stem_kernel": 3}],
    ids=["plain", "core", "full-resolution"],
)
def test_conditioned_encoder_folds_to_the_same_function(layout):
    encoder = _encoder(**layout)
    with torch.no_grad():
        encoder.conditioning.net[-1].weight.normal_(std=0.3)  # as after training
        images, scalars = torch.randn(4, 1, 32, 32), torch.randn(4, 3)
        plain = encoder(images, scalars)
        folded = encoder.fused()(images, scalars)
        other = encoder(images, scalars + 1)
    torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-5)
    assert (other - plain).abs().max() > 1e-2  # the scalars now change the features


def test_conditioned_encoder_without_its_scalars_is_a_clear_error():
    encoder = _encoder()
    images = torch.randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match=r"needs \(N, 3\) scalars, got None"):
        encoder(images)
    with pytest.raises(ValueError, match=r"needs \(N, 3\) scalars, got \(2, 5\)"):
        encoder(images, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="condition_dim must be >= 0"):
        FastEncoder(condition_dim=-1)
    with pytest.raises(ValueError, match="stem_kernel must be odd"):
        FastEncoder(stem_kernel=4)


def test_full_resolution_layers_read_every_pixel_before_the_first_halving():
    torch.manual_seed(0)
    encoder = FastEncoder(image_size=32, channels=[8, 16, 32], full_resolution=(4,))
    assert encoder.full_resolution[0][0].stride == (1, 1)
    assert encoder.body[0][0].in_channels == 4  # the stem reads the full-resolution maps
    assert encoder(torch.randn(2, 1, 32, 32)).shape == (2, encoder.out_dim)
