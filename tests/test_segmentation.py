"""The segmentation transfer task: scenes of Fashion-MNIST test items (maelib.data.scenes), mIoU by hand, and a
linear head on patch tokens that learns the scenes (maelib.evaluation.segmentation)."""

import math

import pytest
import torch

import maelib
from maelib.data.scenes import SCENE_CLASSES, compose, make_scenes, split_scenes
from maelib.evaluation.segmentation import at_size, confusion_matrix, mean_iou, segment


def test_compose_pastes_items_over_each_other_with_their_classes():
    a = torch.zeros(2, 4, 4, dtype=torch.uint8)
    a[0, :, :] = 200  # a solid square of class 3
    a[1, 1:3, 1:3] = 100  # a smaller one of class 7, pasted later, overlapping
    image, mask = compose(a, torch.tensor([3, 7]), torch.tensor([[0, 0], [1, 1]]), size=6)
    assert image.shape == (1, 6, 6) and mask.shape == (6, 6)
    assert mask[0, 0] == 4 and mask[2, 2] == 8 and mask[5, 5] == 0  # 1 + label; later on top; background 0
    assert image[0, 2, 2] == 100 and image[0, 0, 0] == 200
    with pytest.raises(ValueError, match="does not fit"):
        compose(a[:1], torch.tensor([0]), torch.tensor([[4, 4]]), size=6)


def test_scenes_are_seeded_and_their_items_come_from_disjoint_test_images():
    images, masks = make_scenes(20, size=56, seed=3)
    assert images.shape == (20, 1, 56, 56) and images.dtype == torch.uint8 and masks.shape == (20, 56, 56)
    assert 0 <= int(masks.min()) and int(masks.max()) <= 10 and len(SCENE_CLASSES) == 11
    assert ((masks > 0) == (images[:, 0] > 0.2 * 255)).all()  # a labelled pixel is exactly an item's pixel
    again, _ = make_scenes(20, size=56, seed=3)
    assert torch.equal(again, images)
    (tr, _), (te, _) = split_scenes(train=4, test=4, size=56)
    assert tr.shape[0] == te.shape[0] == 4
    with pytest.raises(ValueError, match="at least 28"):
        make_scenes(1, size=20)


def test_mean_iou_by_hand():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    conf = confusion_matrix(pred, target, 4)
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2; class 3 absent
    miou, per_class = mean_iou(conf)
    assert per_class[:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and math.isnan(per_class[3])
    assert miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_at_size_resizes_the_position_embeddings_and_keeps_the_weights():
    model = maelib.create_model("mae_vit_mini_patch4_28", depth=1)
    big = at_size(model, 56)
    assert big.config.img_size == 56 and big.pos_embed.shape[1] == 1 + 14 * 14
    assert torch.equal(big.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_a_linear_head_learns_the_scenes_and_fine_tuning_changes_the_encoder_copy_only():
    train, test = split_scenes(train=256, test=64, size=56)
    model = maelib.create_model("mae_vit_mini_patch4_28", depth=1, embed_dim=64, num_heads=2)
    before = model.blocks[0].attn.qkv.weight.clone()
    frozen = segment(model, train, test, frozen=True, epochs=1, batch_size=64)
    tuned = segment(model, train, test, frozen=False, epochs=5, batch_size=16, lr=3e-3)
    for r in (frozen, tuned):
        assert 0 < r["miou"] <= 1 and len(r["per_class_iou"]) == 11 and r["frozen"] == (r is frozen)
    # the level of answering "background" everywhere: its mIoU over the classes in the truth
    everywhere_background, _ = mean_iou(confusion_matrix(torch.zeros_like(test[1]), test[1], 11))
    assert tuned["miou"] > everywhere_background + 0.02 and tuned["per_class_iou"][0] > 0.85
    assert torch.equal(model.blocks[0].attn.qkv.weight, before)  # the model given is never changed


def test_fine_tuning_first_trains_the_head_alone_exactly_as_the_frozen_head_trains():
    train, test = split_scenes(train=64, test=16, size=56)
    model = maelib.create_model("mae_vit_mini_patch4_28", depth=1, embed_dim=64, num_heads=2)
    frozen = segment(model, train, test, frozen=True, epochs=3, lr=2e-2, batch_size=16, seed=4)
    head_first = segment(model, train, test, frozen=False, head_epochs=3, head_lr=2e-2, epochs=0, batch_size=16, seed=4)
    assert head_first["per_class_iou"] == frozen["per_class_iou"] or torch.allclose(
        torch.tensor(head_first["per_class_iou"]).nan_to_num(-1), torch.tensor(frozen["per_class_iou"]).nan_to_num(-1))
    then_tuned = segment(model, train, test, frozen=False, head_epochs=3, head_lr=2e-2, epochs=1, batch_size=16, seed=4)
    assert then_tuned["per_class_iou"] != head_first["per_class_iou"]  # the encoder's epoch changed the predictions
