"""The paper's linear-probe protocol (configs/linprobe_vit_base.yaml): LARS at batch 16384, 90 epochs, random
resized crops + flips whose features the frozen encoder computes at every step, evaluation at 256 -> 224."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision.transforms import v2

import maelib
from maelib.evaluation import FeatureDataModule
from maelib.train.cli import main

CONFIG = Path(__file__).parents[1] / "configs" / "linprobe_vit_base.yaml"


def rgb_folder(root: Path, classes: int = 2, per_class: int = 4, size: tuple[int, int] = (90, 80)) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # images of each class share a colour, so a probe has something to find
            img = np.clip(rng.normal(60 + 120 * c, 30, (*size[::-1], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"n{c:08d}" / f"{i}.png")
    return root


def test_the_config_is_the_official_protocol():
    """main_linprobe.py with FINETUNE.md's command: --batch_size 512 on 4 nodes of 8 GPUs, --cls_token,
    --epochs 90, --blr 0.1, --weight_decay 0.0, --dist_eval; LARS; warm-up 10 epochs."""
    c = yaml.safe_load(CONFIG.read_text())
    t, m, d = c["trainer"], c["model"], c["data"]
    assert d["batch_size"] * t["devices"] * t["num_nodes"] == 16384
    assert maelib.train.optim.scaled_lr(m["base_lr"], 16384) == pytest.approx(6.4)
    assert (m["optimizer"], m["weight_decay"], m["warmup_epochs"], t["max_epochs"]) == ("lars", 0.0, 10, 90)
    assert (d["pool"], d["augment"], tuple(d["crop_scale"]), d["eval_crop_pct"]) == ("cls", "mae", (0.08, 1.0), 0.875)
    assert d["distributed_eval"] and d["val_root"]


def probe_data(tmp_path: Path, **overrides) -> FeatureDataModule:
    """The config's data section on small folders, with a small random encoder in place of ViT-B."""
    d = yaml.safe_load(CONFIG.read_text())["data"]
    d.update(root=str(rgb_folder(tmp_path / "train")), val_root=str(rgb_folder(tmp_path / "val", per_class=2)),
             arch="mae_vit_tiny_patch8_64", batch_size=4, num_workers=0, crop_scale=tuple(d["crop_scale"]),
             **overrides)
    return FeatureDataModule(**d)


def test_training_features_come_from_fresh_crops_and_flips_at_every_step(tmp_path):
    data = probe_data(tmp_path, in_memory=False)
    data.setup("fit")
    assert data.on_the_fly and not data.features  # nothing cached
    geometry = data.images.train_set.transform.transforms[1:3]  # after ToImage: the official train transform
    crop, flip = geometry
    assert isinstance(crop, v2.RandomResizedCrop) and isinstance(flip, v2.RandomHorizontalFlip)
    assert crop.size == (64, 64) and crop.scale == (0.08, 1.0) and crop.interpolation == v2.InterpolationMode.BICUBIC
    loader = data.train_dataloader()

    def epoch_features(epoch):
        loader.batch_sampler.set_epoch(epoch)
        return [data.on_after_batch_transfer(b, 0) for b in loader]

    first, again, second = epoch_features(0), epoch_features(0), epoch_features(1)
    feats, labels, key = first[0]
    assert key.tolist() == [data.images.hparams.seed, 0, 0, 4, 0, 1]  # the batch's key travels with it
    assert feats.shape == (4, data.feature_dim) and feats.dtype == torch.float32 and labels.dtype == torch.int64
    imgs, labels, _ = next(iter(loader))
    with torch.no_grad():
        assert torch.allclose(data.on_after_batch_transfer([imgs, labels], 0)[0], data.encoder.features(imgs, "cls"))
    everything = lambda batches: torch.cat([f for f, *_ in batches])  # noqa: E731
    assert torch.equal(everything(first), everything(again))  # keyed crops: an epoch repeats (resume)
    assert not torch.allclose(everything(first), everything(second))  # the next epoch crops the images afresh


def test_evaluation_is_resize_then_centre_crop_of_the_val_folder(tmp_path):
    data = probe_data(tmp_path, in_memory=False)
    data.setup("fit")
    imgs, labels = next(iter(data.images.val_dataloader()))
    assert len(data.images.val_set) == 4 and all("/val/" in p for p, _ in data.images.val_set.samples)
    feats, _ = data.on_after_batch_transfer([imgs, labels], 0)
    with torch.no_grad():
        assert torch.allclose(feats, data.encoder.features(imgs, "cls"))  # eval transform: the same every time
    again = data.on_after_batch_transfer(next(iter(data.val_dataloader())), 0)[0]
    assert torch.equal(feats, again)


def test_on_the_fly_refuses_a_holdout_and_an_unknown_augment(tmp_path):
    with pytest.raises(ValueError, match="holdout is for cached features"):
        probe_data(tmp_path, holdout=2)
    with pytest.raises(ValueError, match="augment must be 'none'.*or 'mae'"):
        probe_data(tmp_path, augment="finetune")


def test_the_paper_protocol_runs_from_the_cli(tmp_path):
    """The config itself, on CPU and small folders: LARS trains the head on features of fresh crops, the run
    writes its metrics, and Lightning's DistributedSampler is kept off (the image sampler shares batches out)."""
    run = tmp_path / "run"
    args = ["linprobe", "--config", str(CONFIG), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.num_nodes", "1", "--trainer.strategy", "auto", "--trainer.precision", "32-true",
            "--trainer.max_epochs", "3", "--trainer.default_root_dir", str(run), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--data.root", str(rgb_folder(tmp_path / "train")), "--data.val_root",
            str(rgb_folder(tmp_path / "val", per_class=2)), "--data.arch", "mae_vit_tiny_patch8_64",
            "--data.batch_size", "4", "--data.num_workers", "0", "--model.warmup_epochs", "1"]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["steps"] == 6  # 8 training images in batches of 4, all of them
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["feature_seconds"] == 0.0
