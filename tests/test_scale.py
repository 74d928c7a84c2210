"""Research scale: what breaks past Fashion-MNIST. Monitors on class-ordered image folders, k-NN on the features'
own device, and data-parallel training (DDP on two CPU processes with gloo): `[M]` tokens in the encoder, a NaN on
one rank, and the fixed sin-cos tables that DDP must not broadcast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import maelib
from maelib.callbacks import KNNMonitor
from maelib.data import MAEDataModule, random_subset_loader
from maelib.evaluate import FeatureDataModule, knn_accuracy, knn_predict
from maelib.modules import MAEPretrainModule

TINY = "{depth: 1, embed_dim: 64, num_heads: 2, decoder_embed_dim: 32, decoder_num_heads: 2}"
CLASSES = 10

HOOK = '''
import time
from pathlib import Path

import lightning as L


class PoisonRankAt(L.Callback):
    """The images of optimiser step `step` become NaN on process `rank` only; the time goes to `marker`."""

    def __init__(self, step: int, rank: int, marker: str) -> None:
        self.step, self.rank, self.marker = step, rank, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            Path(self.marker).write_text(str(time.time()))
            batch[0].fill_(float("nan"))
'''


def class_ordered_folder(root: Path, per_class: int = 12) -> Path:
    """CLASSES sub-folders of `per_class` 8 px grey PNGs each: listed class by class, as ImageNet's are."""
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        (root / f"class_{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / f"class_{c:02d}" / f"{i:03d}.png")
    return root


def ddp_pretrain(run: Path, hooks: Path, *extra: str, timeout: int = 300) -> tuple[subprocess.CompletedProcess, float]:
    """`maelib pretrain` on two CPU processes (DDP, gloo), a tiny model, 256 images: 2 steps of 2 x 64 an epoch."""
    cmd = [sys.executable, "-m", "maelib.cli", "pretrain", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(run), "--model.arch_overrides", TINY,
           "--data.train_subset", "256", "--data.test_subset", "64", "--data.batch_size", "64",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
           "--trainer.log_every_n_steps", "1", *extra]
    path = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return result, time.time()


@pytest.fixture(scope="module")
def hooks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scale_hooks")
    (folder / "scale_hooks.py").write_text(HOOK)
    return folder


# ------------------------------------------------------------------------------------------ class-ordered folders
def test_knn_monitor_draws_its_bank_and_queries_across_classes(tmp_path):
    """On a folder listed class by class, the first 20 training images would hold 2-3 classes; the monitor's
    seeded random subsets hold nearly all of them, the same ones every epoch."""
    root = class_ordered_folder(tmp_path / "folder")
    dm = MAEDataModule(dataset="imagefolder", root=root, img_size=8, in_chans=1, batch_size=8, val_fraction=0.25)
    first = torch.cat([y for _, y in dm.labelled_train_dataloader()])[:20]
    assert len(first.unique()) <= 3  # the defect: a bank of the first images is a bank of the first classes
    model = maelib.create_model("mae_vit_mini_patch4_28", img_size=8, in_chans=1, depth=1)
    monitor = KNNMonitor(train_samples=20, val_samples=12)
    (bank, bank_labels), (queries, query_labels) = monitor.features(dm, model)
    assert bank.shape == (20, model.config.embed_dim) and queries.shape[0] == 12
    assert len(bank_labels.unique()) >= 7 and len(query_labels.unique()) >= 6
    again = monitor.features(dm, model)
    assert torch.equal(again[0][1], bank_labels) and torch.equal(again[1][0], queries)  # fixed subsets


def test_random_subset_loader_keeps_the_loader_and_covers_classes(tmp_path):
    root = class_ordered_folder(tmp_path / "folder")
    dm = MAEDataModule(dataset="imagefolder", root=root, img_size=8, in_chans=1, batch_size=8, val_fraction=0.25)
    loader = dm.val_dataloader()
    assert random_subset_loader(loader, None) is loader and random_subset_loader(loader, 10_000) is loader
    imgs, labels = next(iter(random_subset_loader(loader, 8, seed=0)))  # what ReconstructionLogger draws
    assert imgs.shape == (8, 1, 8, 8) and len(labels.unique()) >= 5
    with pytest.raises(ValueError, match="between 1 and"):
        random_subset_loader(loader, 0)


# ------------------------------------------------------------------------------------------ devices
def test_knn_predict_stays_on_the_features_device_and_accepts_half_precision():
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(200, 16, generator=g), torch.randint(0, 5, (200,), generator=g)
    expected = knn_predict(feats, labels, feats[:50])
    assert torch.equal(expected, labels[:50])  # each query is its own nearest neighbour
    on_meta = knn_predict(feats.to("meta"), labels.to("meta"), feats[:50].to("meta"), num_classes=5)
    assert on_meta.device.type == "meta" and on_meta.shape == (50,)
    half = knn_predict(feats.half(), labels, feats[:50].half())
    assert torch.equal(half, expected)
    assert knn_accuracy(feats.half(), labels, feats[:50], labels[:50]) == 1.0
    if torch.cuda.is_available():
        on_gpu = knn_predict(feats.cuda(), labels.cuda(), feats[:50].cuda())
        assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), expected)


def test_feature_datamodule_extracts_where_it_is_told(tmp_path):
    root = class_ordered_folder(tmp_path / "folder", per_class=4)
    kw = dict(arch="mae_vit_mini_patch4_28", dataset="imagefolder", root=str(root), batch_size=16)
    dm = FeatureDataModule(**kw)
    assert dm.extraction_device() == torch.device("cpu")  # no Trainer: where the encoder is
    dm_meta = FeatureDataModule(**kw, device="meta")
    assert dm_meta.extraction_device() == torch.device("meta")
    with pytest.raises(Exception):  # the meta device has no data: proof that extraction ran there
        dm_meta.setup()


# ------------------------------------------------------------------------------------------ DDP
def test_ddp_leaves_the_sincos_tables_and_an_unused_mask_token_alone():
    """What DDP synchronises, read off a real DistributedDataParallel wrapper (one gloo process)."""
    from torch.nn.parallel import DistributedDataParallel

    store = torch.distributed.HashStore()
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        for mask_tokens in (False, True):
            module = MAEPretrainModule(arch_overrides={"depth": 1, "encoder_mask_tokens": mask_tokens})
            ddp = DistributedDataParallel(module)
            assert ddp.modules_buffers == []  # pos_embed and decoder_pos_embed: not broadcast at every forward
            synced = {name for name, p in module.named_parameters() if any(p is q for q in ddp._module_parameters)}
            assert ("model.mask_token" in synced) is not mask_tokens
            assert "model.cls_token" in synced and "model.pos_embed" not in synced
    finally:
        torch.distributed.destroy_process_group()


def test_encoder_mask_tokens_train_under_ddp(tmp_path, hooks):
    """Before: DDP refused the decoder's mask_token, which `encoder_mask_tokens=True` leaves unused."""
    run = tmp_path / "mask_tokens"
    result, _ = ddp_pretrain(run, hooks, "--trainer.max_epochs", "2", "--model.arch_overrides",
                             TINY[:-1] + ", encoder_mask_tokens: true}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and np.isfinite(metrics["train/loss"])


def test_a_nan_on_one_rank_stops_both_ranks_at_once(tmp_path, hooks):
    run, marker = tmp_path / "nan", tmp_path / "poisoned_at"
    result, ended = ddp_pretrain(run, hooks, "--trainer.max_epochs", "3",
                                 "--trainer.callbacks+=scale_hooks.PoisonRankAt", "--trainer.callbacks.step", "3",
                                 "--trainer.callbacks.rank", "1", "--trainer.callbacks.marker", str(marker))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "the loss became nan at step 3 on at least one of the 2 processes" in output, output[-3000:]
    assert ended - float(marker.read_text()) < 30  # not the process group's 30-minute timeout
