"""Comparing pretraining methods (maelib.experiments.compare): the same seeded subsets for every
method, records that add up, encoders from other methods loading through the zoo like an MAE's."""

import json

import pytest
import torch

import maelib
from maelib.evaluation.finetune import finetune_accuracy, set_head_from_probe
from maelib.evaluation.probe import linear_probe
from maelib.experiments.compare import (
    frozen_scores,
    label_counts,
    label_efficiency,
    load_encoders,
    mean_table,
    segmentation_transfer,
)
from maelib.experiments.stats import mean_se
from maelib.train.modules import FineTuneModule
from maelib.weights.checkpoint import save_encoder
from maelib.weights.zoo import ModelCard, register_pretrained, unregister_pretrained

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2)


@pytest.fixture(scope="module")
def twins():
    """Two copies of one tiny encoder: every score must come out the same for both."""
    torch.manual_seed(0)
    model = maelib.create_model("mae_vit_mini_patch4_28", **TINY).eval()
    copy = maelib.create_model("mae_vit_mini_patch4_28", **TINY).eval()
    copy.load_state_dict(model.state_dict())
    return {"a": model, "b": copy}


def test_label_counts_and_mean_table():
    assert label_counts(5000, (0.01, 0.1, 1.0)) == {0.01: 50, 0.1: 500, 1.0: 5000}
    assert label_counts(200, (0.01,)) == {0.01: 10}  # never fewer than one label per class on average
    rows = [{"m": "x", "v": 0.5}, {"m": "x", "v": 0.7}, {"m": "y", "v": 0.1}, {"m": "y", "v": None}]
    table = mean_table(rows, ("m",), "v")
    assert table[("x",)] == pytest.approx((*mean_se([0.5, 0.7]), 2))
    assert table[("y",)][0] == 0.1 and table[("y",)][2] == 1


def test_label_efficiency_scores_every_method_on_the_same_seeded_subsets(twins):
    rows = label_efficiency(twins, labels=200, fractions=(0.1, 1.0), seeds=2, test=100, probe_epochs=2,
                            finetune_steps=2)
    assert [(r["labels"], r["seed"]) for r in rows[::2]] == [(20, 0), (20, 1), (200, 0)]
    for a, b in zip(rows[::2], rows[1::2]):
        assert (a["method"], b["method"]) == ("a", "b")
        assert a["probe"] == b["probe"] and a["finetune"] == b["finetune"]  # same images, same seeds
    json.dumps(rows)  # JSON-ready
    again = label_efficiency({"a": twins["a"]}, labels=200, fractions=(0.1,), seeds=1, test=100, probe_epochs=2,
                             finetune=False)
    assert again[0]["probe"] == rows[0]["probe"] and "finetune" not in again[0]


def test_frozen_scores_and_segmentation_give_a_row_per_method(twins):
    rows = frozen_scores(twins, bank=200, test=100, probe_epochs=2)
    assert [r["method"] for r in rows] == ["a", "b", "raw pixels"]
    assert rows[0]["knn"] == rows[1]["knn"] and 0 <= rows[2]["knn"] <= 1
    seg = segmentation_transfer(twins, train_scenes=16, test_scenes=8, epochs=1)
    assert [(r["method"], r["frozen"]) for r in seg] == [("a", True), ("a", False), ("b", True), ("b", False)]
    assert seg[0]["miou"] == seg[2]["miou"] and 0 <= seg[1]["miou"] <= 1


def test_fine_tuning_from_the_probe_starts_from_the_probes_predictions(twins, tmp_path):
    """"Linear probe, then fine-tune": the classifier's head, set from a probe trained on the encoder's mean-pooled
    features, gives the probe's logits before any step (the BatchNorm folded into the linear layer)."""
    model = twins["a"]
    torch.manual_seed(1)
    imgs, labels = torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    with torch.no_grad():
        feats = model.features(imgs, pool="mean")
    _, head = linear_probe((feats, labels), (feats, labels), epochs=3, num_classes=10, return_head=True)
    module = FineTuneModule(checkpoint=str(maelib.save_model(model, tmp_path / "m.safetensors")), num_classes=10,
                            global_pool="avg")
    set_head_from_probe(module.net, head)
    with torch.no_grad():
        torch.testing.assert_close(module.net.eval()(imgs), head.eval()(feats), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="needs pool='mean'"):
        label_efficiency(twins, labels=20, fractions=(1.0,), test=20, pool="cls", finetune_steps=1)


def test_finetune_length_is_epochs_or_steps(twins):
    with pytest.raises(ValueError, match="epochs or as steps"):
        finetune_accuracy(twins["a"], images=20, test_images=20)
    with pytest.raises(ValueError, match="epochs or as steps"):
        finetune_accuracy(twins["a"], images=20, test_images=20, epochs=1, steps=2)


def test_an_encoder_card_loads_as_an_mae_with_a_fresh_decoder(twins, tmp_path):
    path = save_encoder(twins["a"], tmp_path / "enc.safetensors")
    card = ModelCard(name="test:encoder", kind="encoder", arch="mae_vit_mini_patch4_28", source="shipped",
                     data="test", licence="test", mean=(0.5,), std=(0.5,), arch_overrides=TINY)
    register_pretrained(card, path)
    try:
        loaded = load_encoders({"enc": "test:encoder", "random": None}, arch="mae_vit_mini_patch4_28")
        x = torch.randn(2, 1, 28, 28)
        assert torch.allclose(loaded["enc"].features(x), twins["a"].features(x), atol=1e-6)
        assert not loaded["random"].training and loaded["random"].config.embed_dim == 128
        with pytest.raises(ValueError, match="kind must be one of"):
            register_pretrained(ModelCard(**{**card.to_dict(), "name": "test:bad", "kind": "moco"}), path)
    finally:
        unregister_pretrained("test:encoder")


def test_pretrain_methods_trains_each_recipe_for_its_share_of_the_time_and_saves_its_encoder(tmp_path):
    from maelib.experiments.compare import RECIPES, pretrain_methods

    files = pretrain_methods(0.02, tmp_path)  # about a second each: a few steps of every method's preset
    assert list(files) == list(RECIPES)
    for method, path in files.items():
        encoder = maelib.load_model(path)
        assert encoder.config.embed_dim == 128, method
        metrics = json.loads((tmp_path / RECIPES[method][1] / "metrics.json").read_text())
        assert metrics["steps"] >= 1
