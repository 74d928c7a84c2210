"""Colour jitter (`augment="mae_color"`): per-image factors, the right strengths, grey left grey."""

import pytest
import torch

from maelib.data import BatchTransform, MAEDataModule
from maelib.data.color import JITTER, color_jitter, jitter_params


def test_identity_factors_change_nothing():
    x = torch.rand(3, 3, 8, 8)
    identity = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).expand(3, 4)
    assert torch.allclose(color_jitter(x, identity), x, atol=1e-5)


def test_each_factor_does_what_it_says():
    x = torch.rand(1, 3, 16, 16) * 0.5 + 0.25
    brighter = color_jitter(x, torch.tensor([[1.3, 1, 1, 0]]))
    assert torch.allclose(brighter, (x * 1.3).clamp(0, 1), atol=1e-6)
    flat = color_jitter(x, torch.tensor([[1, 0.0, 1, 0]]))  # no contrast: one grey level everywhere
    assert flat.std() < 1e-5
    grey = color_jitter(x, torch.tensor([[1, 1, 0.0, 0]]))  # no saturation: the channels agree
    assert (grey - grey.mean(1, keepdim=True)).abs().max() < 1e-5
    turned = color_jitter(x, torch.tensor([[1, 1, 1, 0.5]]))  # half a turn of hue keeps the luma
    luma = lambda t: (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert torch.allclose(luma(turned), luma(x), atol=2e-2) and not torch.allclose(turned, x, atol=0.05)


def test_params_follow_the_strengths_and_the_generator():
    p = jitter_params(4000, JITTER, generator=torch.Generator().manual_seed(0))
    assert p.shape == (4000, 4)
    for col, s in enumerate(JITTER[:3]):
        assert 1 - s <= p[:, col].min() < 1 - 0.9 * s and 1 + 0.9 * s < p[:, col].max() <= 1 + s
    assert -JITTER[3] <= p[:, 3].min() and p[:, 3].max() <= JITTER[3]
    again = jitter_params(4000, JITTER, generator=torch.Generator().manual_seed(0))
    assert torch.equal(p, again)
    with pytest.raises(ValueError, match="hue"):
        jitter_params(2, (0.4, 0.4, 0.4, 0.7))


def test_grey_images_get_brightness_and_contrast_only():
    x = torch.rand(2, 1, 8, 8)
    out = color_jitter(x, torch.tensor([[1.2, 0.8, 0.0, 0.3], [1, 1, 1, 0.0]]))
    assert out.shape == x.shape and torch.allclose(out[1], x[1], atol=1e-6)


def test_mae_color_batches_are_jittered_and_reproducible():
    imgs = (torch.rand(8, 3, 32, 32) * 255).to(torch.uint8)
    stats = dict(img_size=16, in_chans=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    plain = BatchTransform(**stats, augment="mae")
    jittered = BatchTransform(**stats, augment="mae_color", jitter=(0.4, 0.4, 0.4, 0.5))
    torch.manual_seed(0)
    a = plain(imgs)
    torch.manual_seed(0)
    b = jittered(imgs)
    assert a.shape == b.shape == (8, 3, 16, 16) and not torch.allclose(a, b)
    torch.manual_seed(0)
    assert torch.equal(jittered(imgs), b)


def test_the_datamodule_passes_the_strengths_on():
    dm = MAEDataModule(dataset="photos", img_size=32, in_chans=3, batch_size=8, augment="mae_color",
                       jitter=(0.0, 0.0, 0.0, 0.0))
    dm.setup()
    assert dm.train_set.transform.jitter == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="augment"):
        MAEDataModule(augment="colour")
