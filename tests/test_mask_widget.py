"""The click-to-mask widget's kernel side (the browser side is in tests/test_browser.py) and `chosen_noise`."""

import math

import pytest
import torch

import maelib
from maelib.analysis.mask_widget import PRESETS, MaskPainter
from maelib.data import STATS
from maelib.masking import chosen_noise, random_masking


@pytest.fixture(scope="module")
def pixel_model():
    return maelib.load_pretrained("mae_vit_mini_patch4_28.fmnist_pixel")


@pytest.fixture(scope="module")
def image():
    from maelib.evaluation.cards import fmnist_test_images

    return fmnist_test_images(1)[0]  # (1, 28, 28), normalised


def painter_for(model, image, **kwargs):
    mean, std = STATS["fashion_mnist"]
    return MaskPainter(model, image, mean=mean, std=std, **kwargs)


@pytest.mark.parametrize("num_patches", [1, 2, 49, 196])
def test_chosen_noise_hides_exactly_the_chosen_patches(num_patches):
    g = torch.Generator().manual_seed(num_patches)
    for count in range(num_patches):  # every count, a random choice each
        hidden = torch.zeros(num_patches, dtype=torch.bool)
        hidden[torch.randperm(num_patches, generator=g)[:count]] = True
        ratio, noise = chosen_noise(hidden)
        _, mask, _ = random_masking(torch.zeros(1, num_patches, 1), ratio, noise)
        assert torch.equal(mask[0].bool(), hidden), (num_patches, count)


def test_chosen_noise_refuses_what_cannot_be_masked():
    with pytest.raises(ValueError, match="leave at least one visible"):
        chosen_noise(torch.ones(49, dtype=torch.bool))
    with pytest.raises(ValueError, match="the same number per row"):
        chosen_noise(torch.tensor([[True, False], [False, False]]))


def test_the_readout_is_the_models_own_loss_on_the_hidden_patches(pixel_model, image):
    painter = painter_for(pixel_model, image)
    painter.hidden = [3, 10, 17, 24, 31]
    ratio, noise = chosen_noise(torch.tensor(painter.mask, dtype=torch.bool))
    loss, _, mask = pixel_model.eval()(image[None], ratio, noise)
    assert mask[0].nonzero().flatten().tolist() == [3, 10, 17, 24, 31]
    assert painter.loss == pytest.approx(loss.item(), rel=1e-5)
    target = pixel_model.loss_target(image[None])[0, mask[0].bool()]
    assert painter.predict_zero == pytest.approx(target.pow(2).mean().item(), rel=1e-5)
    assert painter.readout.startswith("5 of 49 patches hidden") and f"{painter.loss:.4f}" in painter.readout
    assert "borrowed" not in painter.readout  # a pixel-target model draws only what it predicted


def test_every_change_of_the_mask_redraws(pixel_model, image):
    painter = painter_for(pixel_model, image, hidden=[])
    assert math.isnan(painter.loss) and painter.readout.startswith("0 of 49")
    assert painter.reconstruction.startswith("data:image/png;base64,")
    seen = {painter.reconstruction}
    for hidden in ([24], [24, 25], list(range(14, 35))):
        painter.hidden = hidden
        assert painter.reconstruction not in seen and painter.loss < painter.predict_zero
        seen.add(painter.reconstruction)
    painter.mask = [1] * 49  # as the browser would send it
    assert "leave at least one visible" in painter.readout and math.isnan(painter.loss)


def test_presets_hide_three_quarters_and_clear_shows_all(pixel_model, image):
    painter = painter_for(pixel_model, image, seed=3)
    assert len(painter.hidden) == 49 - 12  # a seeded random 75% to start with
    first = painter.hidden
    for name in PRESETS:
        painter._on_message(painter, {"preset": name}, [])  # what a button click sends
        assert len(painter.hidden) == (0 if name == "clear" else 37), name
    grid = painter_for(pixel_model, image, hidden=[])
    grid.preset("grid")
    visible = set(range(49)) - set(grid.hidden)  # 12 of the 16 patches on the 2 x 2 grid (16 would be 67%)
    assert len(visible) == 12 and visible <= {7 * r + c for r in (0, 2, 4, 6) for c in (0, 2, 4, 6)}
    again = painter_for(pixel_model, image, seed=3)
    assert again.hidden == first  # seeded: the same start on every run
    with pytest.raises(ValueError, match="unknown preset 'stripes'"):
        painter.preset("stripes")


def test_bad_patches_and_models_are_named(pixel_model, image):
    painter = painter_for(pixel_model, image)
    with pytest.raises(ValueError, match=r"0\.\.48 \(a 7 x 7 grid"):
        painter.hidden = [49]
    with pytest.raises(ValueError, match="make a new MaskPainter"):
        painter.show(model=maelib.create_model("mae_vit_tiny_patch8_64"))
    with pytest.raises(ValueError, match="channels"):
        painter.show(image=torch.zeros(3, 28, 28))


def test_a_norm_pix_model_says_its_picture_is_borrowed(image):
    painter = painter_for(maelib.load_pretrained("mae_vit_mini_patch4_28.fmnist_normpix"), image)
    assert "TRUE mean and std" in painter.readout
