"""The model zoo: shipped models load, fit their cards and re-measure as their cards say; the download path of
the released weights works through file:// URLs with its checksum check; the honest baselines compute what
they claim."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import maelib
from maelib.analysis import reconstruction_baselines, seeded_noise
from maelib.data import PHOTO_REPEATS, MAEDataModule
from maelib.data.photos import HELD_OUT_PHOTOS, PHOTO_SOURCES, load_photos, training_photos
from maelib.evaluation import FeatureDataModule
from maelib.evaluation.cards import run_check
from maelib.weights.convert import to_timm_vit
from maelib.weights.download import hub_checkpoint_path
from maelib.weights.zoo import ModelCard, unregister_pretrained

SHIPPED = {
    "mae_vit_mini_patch4_28.fmnist_normpix",
    "mae_vit_mini_patch4_28.fmnist_pixel",
    "mae_vit_tiny_patch8_64.photos_pixel",
    "vit_mini_patch4_28.fmnist_finetuned",
    "vit_mini_patch4_28.fmnist_mocov3",
    "vit_mini_patch4_28.fmnist_supervised",
}


def test_every_shipped_model_is_listed_with_a_full_card():
    shipped = set(maelib.list_pretrained("shipped"))
    assert shipped == SHIPPED
    for name in shipped:
        card = maelib.pretrained_card(name)
        assert card.recipe.startswith("bash scripts/zoo_train.sh " + name)
        assert card.wall_seconds > 0 and card.machine and card.date and card.metrics and card.check
        assert len(card.mean) == len(card.std) > 0


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_loads_and_matches_its_card(name):
    card = maelib.pretrained_card(name)
    model = maelib.load_pretrained(name)
    if card.kind == "classifier":
        assert model.num_classes == 10 and not model.training
        return
    assert model.config == maelib.model_config(card.arch, **card.arch_overrides)
    if card.kind == "encoder":  # pretrained another way: the file holds the encoder alone
        stored, _ = maelib.read_state_dict(maelib.pretrained_path(name))
        assert stored and not any(k.startswith(("decoder", "mask_token")) for k in stored)
    else:
        assert model.config.norm_pix_loss == (card.target == "norm_pix")
    assert (maelib.pretrained_path(name).stat().st_size) < 10 * 2**20


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_re_measures_as_its_card_says(name):
    card = maelib.pretrained_card(name)
    value, expected = run_check(card), card.check["value"]
    if card.check["what"] == "reconstruction":
        assert value == pytest.approx(expected, rel=0.02)
    else:  # accuracies: within a point
        assert abs(value - expected) <= 0.01


def test_zoo_names_work_wherever_a_checkpoint_path_does():
    name = "mae_vit_mini_patch4_28.fmnist_normpix"
    a, b = maelib.load_model(name), maelib.load_pretrained(name)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="classifier, not an MAE"):
        maelib.load_model("vit_mini_patch4_28.fmnist_finetuned")
    with pytest.raises(ValueError, match="no zoo model named 'nope'.*Shipped"):
        maelib.pretrained_card("nope")


# ---------------------------------------------------------------------------------------------- official weights
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch's hub cache in a temporary folder."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path
    torch.hub.set_dir(old)


def _official_file(path, state_dict) -> str:
    torch.save({"model": state_dict}, path)  # the official checkpoints' layout
    return hashlib.md5(path.read_bytes()).hexdigest()


def _register_official(name, url, md5, kind="mae"):
    card = ModelCard(name=name, kind=kind, arch="mae_vit_mini_patch4_28", source="official", data="test",
                     licence="CC-BY-NC 4.0", mean=(0.5,), std=(0.5,), url=url, md5=md5, target="pixel",
                     arch_overrides={"norm_pix_loss": False})
    maelib.register_pretrained(card, overwrite=True)


def test_official_download_through_file_url_with_checksum(hub):
    torch.manual_seed(0)
    source = maelib.create_model("mae_vit_mini_patch4_28", norm_pix_loss=False)
    src = hub / "mae_visualize_vit_test.pth"
    md5 = _official_file(src, source.state_dict())
    _register_official("official:test_visualize", src.as_uri(), md5[:6])
    try:
        model = maelib.load_pretrained("official:test_visualize", progress=False)
        cached = hub_checkpoint_path(src.as_uri())
        assert cached.is_file() and cached.parent == hub / "hub" / "checkpoints"
        assert not model.config.norm_pix_loss
        for (k, v), w in zip(source.state_dict().items(), model.state_dict().values()):
            assert torch.equal(v, w), k
        src.unlink()  # a second load reads the cache, not the URL
        maelib.load_pretrained("official:test_visualize", progress=False)
    finally:
        unregister_pretrained("official:test_visualize")


def test_official_download_with_a_wrong_checksum_is_refused_and_not_cached(hub):
    src = hub / "mae_pretrain_vit_test.pth"
    md5 = _official_file(src, maelib.create_model("mae_vit_mini_patch4_28").state_dict())
    wrong = "0" * 6 if not md5.startswith("000000") else "1" * 6
    _register_official("official:test_wrong_md5", src.as_uri(), wrong)
    try:
        with pytest.raises(ValueError, match=f"md5 {md5}.*starts with {wrong}.*deleted"):
            maelib.load_pretrained("official:test_wrong_md5", progress=False)
        assert not hub_checkpoint_path(src.as_uri()).exists()
    finally:
        unregister_pretrained("official:test_wrong_md5")


def test_official_finetuned_classifier_loads_as_timm_vit(hub):
    torch.manual_seed(0)
    net = to_timm_vit(maelib.create_model("mae_vit_mini_patch4_28"), num_classes=1000, global_pool="avg")
    torch.nn.init.normal_(net.head.weight)  # a head that changes the logits
    src = hub / "mae_finetuned_vit_test.pth"
    md5 = _official_file(src, net.state_dict())
    _register_official("official:test_finetuned", src.as_uri(), md5[:6], kind="classifier")
    try:
        loaded = maelib.load_pretrained("official:test_finetuned", progress=False)
        x = torch.randn(2, 1, 28, 28)
        torch.testing.assert_close(loaded(x), net.eval()(x))
    finally:
        unregister_pretrained("official:test_finetuned")


def test_official_cards_name_the_published_urls_checksums_and_licence():
    card = maelib.pretrained_card("official:mae_pretrain_vit_large")
    assert card.url == "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth"
    assert card.md5 == "b8b06e" and "CC-BY-NC 4.0" in card.licence
    vis = maelib.pretrained_card("official:mae_visualize_vit_large")
    assert vis.target == "pixel" and vis.arch == "mae_vit_large_patch16" and vis.md5 == ""
    ft = maelib.pretrained_card("official:mae_finetuned_vit_huge")
    assert ft.kind == "classifier" and ft.md5 == "2541f2" and ft.metrics["imagenet_val_top1_published"] == 86.928
    assert maelib.pretrained_card("hf:facebook/vit-mae-base").hf_id == "facebook/vit-mae-base"


# ---------------------------------------------------------------------------------------------- baselines and data
def test_raw_pixel_features_are_the_flattened_inputs():
    dm = FeatureDataModule(arch="mae_vit_mini_patch4_28", pixels=True, train_subset=64, test_subset=32, batch_size=32)
    dm.setup()
    feats, labels = dm.features["test"]
    imgs, img_labels = dm.images.test_set.batch(range(32))
    assert dm.feature_dim == 784 and feats.shape == (32, 784)
    torch.testing.assert_close(feats, imgs.flatten(1))
    assert torch.equal(labels, img_labels)


def test_reconstruction_baselines_by_hand():
    torch.manual_seed(0)
    model = maelib.create_model("mae_vit_mini_patch4_28", norm_pix_loss=False)
    imgs = torch.randn(4, 1, 28, 28)
    noise = seeded_noise(model, 4, 0.75, seed=1)
    got = reconstruction_baselines(model, imgs, 0.75, noise)
    _, pred, mask = model(imgs, 0.75, noise)
    target, hidden = model.patchify(imgs), mask.bool()  # (4, 49, 16), (4, 49)
    assert got["predict_zero"] == pytest.approx(target[hidden].pow(2).mean().item(), rel=1e-5)
    flat = target - target.mean(-1, keepdim=True)
    assert got["flat_true_mean"] == pytest.approx(flat[hidden].pow(2).mean().item(), rel=1e-5)
    assert got["model"] == pytest.approx((pred.detach() - target)[hidden].pow(2).mean().item(), rel=1e-5)


def test_photos_ship_offline_and_held_out_ones_stay_out_of_training():
    photos = load_photos(size=32)
    assert photos.shape == (len(PHOTO_SOURCES), 3, 32, 32) and photos.dtype == torch.uint8
    assert photos.float().std() > 20  # real pictures, not blank
    assert set(HELD_OUT_PHOTOS) <= set(PHOTO_SOURCES) and not set(HELD_OUT_PHOTOS) & set(training_photos())
    dm = MAEDataModule(dataset="photos", img_size=32, in_chans=3, batch_size=16)
    dm.setup()
    assert dm.class_names == training_photos() and not dm.has_class_labels
    assert len(dm.val_set) == len(HELD_OUT_PHOTOS) * PHOTO_REPEATS["test"]


def test_notebook_6_shows_an_official_format_model_named_by_zoo_name(tmp_path, monkeypatch):
    """The `-p colour_checkpoint official:...` path of notebook 7, offline: a tiny colour MAE saved in the official
    layout, its card in a folder on $MAELIB_ZOO_PATH, fetched through a file:// URL into a temporary hub cache."""
    import json

    import nbformat
    import papermill as pm

    torch.manual_seed(0)
    weights = tmp_path / "mae_visualize_vit_tiny_test.pth"
    md5 = _official_file(weights, maelib.create_model("mae_vit_tiny_patch8_64", norm_pix_loss=False).state_dict())
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    card = ModelCard(name="official:test_visualize_tiny", kind="mae", arch="mae_vit_tiny_patch8_64", source="official",
                     data="test", licence="CC-BY-NC 4.0", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     target="pixel", arch_overrides={"norm_pix_loss": False}, url=weights.as_uri(), md5=md5[:6])
    (zoo / "test_visualize_tiny.json").write_text(json.dumps(card.to_dict()))
    monkeypatch.setenv("MAELIB_ZOO_PATH", str(zoo))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    nb = notebooks / "07_visualising.ipynb"
    out = tmp_path / "out"
    params = {**nbformat.read(nb, as_version=4).metadata["maelib"]["test_parameters"], "out_dir": str(out),
              "colour_checkpoint": "official:test_visualize_tiny"}
    pm.execute_notebook(str(nb), str(tmp_path / "run.ipynb"), parameters=params, cwd=str(notebooks),
                        progress_bar=False)
    results = json.loads((out / "results.json").read_text())
    assert results["colour_checkpoint"] == "official:test_visualize_tiny"
    assert (tmp_path / "torch" / "hub" / "checkpoints" / weights.name).is_file()
    assert {"recon_colour.png", "rollout_colour.png", "attention_colour.png"} <= set(results["figures"])
