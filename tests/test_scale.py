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
from maelib.data import MAEDataModule, random_subset_loader
from maelib.evaluation import FeatureDataModule, knn_accuracy, knn_predict
from maelib.train.callbacks import KNNMonitor
from maelib.train.modules import MAEPretrainModule

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
    cmd = [sys.executable, "-m", "maelib.train.cli", "pretrain", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
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


@pytest.mark.parametrize("in_memory", [True, False])
def test_knn_monitor_subsets_on_both_folder_paths(tmp_path, in_memory):
    root = class_ordered_folder(tmp_path / "folder")
    dm = MAEDataModule(dataset="imagefolder", root=root, img_size=8, in_chans=1, batch_size=8, in_memory=in_memory)
    model = maelib.create_model("mae_vit_mini_patch4_28", img_size=8, in_chans=1, depth=1)
    (_, bank_labels), _ = KNNMonitor(train_samples=20, val_samples=6).features(dm, model)
    assert dm.in_memory is in_memory and len(bank_labels.unique()) >= 7


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
def test_ddp_leaves_the_sincos_tables_and_an_unused_mask_token_alone(tmp_path):
    """What DDP synchronises, through public routes: the CLI's named DDP strategy is built with
    broadcast_buffers=False (the only buffers are the fixed sin-cos tables), and with `[M]` tokens in the encoder
    the decoder's unused mask_token is frozen, so DDP leaves it out. Read off a real DistributedDataParallel
    wrapper (one gloo process) built with the strategy's own arguments."""
    from torch.nn.parallel import DistributedDataParallel

    from maelib.data import MAEDataModule
    from maelib.train.run_cli import make_cli as _make_cli

    cli = _make_cli("pretrain", MAEPretrainModule, MAEDataModule,
                    ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], 1)
    ddp_kwargs = cli.trainer.strategy._ddp_kwargs  # what the strategy hands to DistributedDataParallel
    assert ddp_kwargs["broadcast_buffers"] is False
    store = torch.distributed.HashStore()
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        for mask_tokens in (False, True):
            module = MAEPretrainModule(arch_overrides={"depth": 1, "encoder_mask_tokens": mask_tokens})
            ddp = DistributedDataParallel(module, **ddp_kwargs)
            assert ddp.broadcast_buffers is False
            assert {name for name, _ in module.named_buffers()} == {"model.pos_embed", "model.decoder_pos_embed"}
            # DDP reduces the gradients of the parameters that require one, and with find_unused_parameters=False
            # every one of them must get a gradient at each step (test_encoder_mask_tokens_train_under_ddp runs it)
            reduced = {name for name, p in module.named_parameters() if p.requires_grad}
            assert ("model.mask_token" in reduced) is not mask_tokens
            assert "model.cls_token" in reduced and "model.pos_embed" not in reduced
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


# ------------------------------------------------------------------------------------------ image folders
def broken_jpeg(path: Path) -> Path:
    Image.effect_noise((32, 32), 50).convert("RGB").save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # passes nothing once decoded
    return path


def test_a_broken_file_is_skipped_when_read_with_a_count(tmp_path, caplog):
    root = class_ordered_folder(tmp_path / "folder", per_class=3)
    cut = broken_jpeg(root / "class_04" / "cut.jpg")
    samples, _, skipped = maelib.data.scan_image_folder(root)
    assert (str(cut), 4) in samples and not skipped  # listed, not opened
    ds = maelib.data.ImageFileDataset(samples, maelib.data.eval_transform(img_size=8, in_chans=1, mean=(0.5,),
                                                                          std=(0.5,)), in_chans=1)
    with caplog.at_level("WARNING", logger="maelib.data"):
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == len(samples) and ds.skipped == [str(cut)] and "cut.jpg" in caplog.text
    position = samples.index((str(cut), 4))
    assert torch.equal(items[position][0], items[position + 1][0])  # the next file stood in for it
    for i in range(12):  # 13 broken of 43 files: more than the 10 allowed
        broken_jpeg(root / "class_05" / f"cut_{i}.jpg")
    samples, _, _ = maelib.data.scan_image_folder(root)
    ds = maelib.data.ImageFileDataset(samples, ds.transform, in_chans=1)
    with pytest.raises(RuntimeError, match="cannot be decoded, more than the 10 allowed.*Copy it again"):
        [ds[i] for i in range(len(ds))]


def test_a_folder_is_listed_once_and_again_when_it_changes(tmp_path, monkeypatch):
    root = class_ordered_folder(tmp_path / "folder", per_class=2)
    cache = tmp_path / "index"
    first = maelib.data.cached_scan(root, cache)
    assert len(first[0]) == 2 * CLASSES and len(list(cache.iterdir())) == 1

    def no_scan(*args, **kwargs):
        raise AssertionError("listed again")

    monkeypatch.setattr(maelib.data.datasets, "scan_image_folder", no_scan)
    assert maelib.data.cached_scan(root, cache) == first  # every process of a run, and the next run: the cache
    monkeypatch.undo()
    time.sleep(0.01)
    Image.new("L", (8, 8)).save(root / "class_03" / "new.png")
    again = maelib.data.cached_scan(root, cache)
    assert len(again[0]) == 2 * CLASSES + 1 and (str((root / "class_03" / "new.png").resolve()), 3) in again[0]


def test_a_small_folder_of_one_size_is_decoded_once_into_memory(tmp_path):
    root = class_ordered_folder(tmp_path / "folder", per_class=4)
    kw = dict(dataset="imagefolder", root=root, img_size=8, in_chans=1, batch_size=4, seed=3)
    memory, disk = MAEDataModule(**kw), MAEDataModule(**kw, in_memory=False)
    memory.setup(), disk.setup()
    assert memory.in_memory and isinstance(memory.train_set, maelib.data.TensorImageDataset) and not disk.in_memory
    for (a, la), (b, lb) in zip(memory.val_dataloader(), disk.val_dataloader()):  # the same eval images
        assert torch.equal(la, lb) and torch.allclose(a, b, atol=1e-6)
    imgs, _, _ = next(iter(memory.train_dataloader()))
    assert imgs.shape == (4, 1, 8, 8) and imgs.dtype == torch.float32
    Image.new("L", (9, 9)).save(root / "class_00" / "odd.png")
    with pytest.raises(ValueError, match="needs a folder of images of one size.*2 sizes \\(8x8, 9x9\\)"):
        MAEDataModule(**kw, in_memory=True).setup()
    mixed = MAEDataModule(**kw)
    mixed.setup()
    assert not mixed.in_memory and isinstance(mixed.train_set, maelib.data.ImageFileDataset)  # two sizes: from disk


@pytest.mark.parametrize("size", [24, 13])
def test_batched_resized_crops_are_antialiased_like_torchvision(size):
    """A 1-pixel checkerboard shrunk to `size` px: torchvision's antialiased resize gives flat grey; one bicubic
    sample per output pixel would alias it into a pattern of full contrast."""
    from torchvision.transforms import v2

    from maelib.data import random_resized_crop

    board = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float().view(1, 1, 64, 64)
    whole = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])  # the crop is the whole image
    reference = v2.functional.resize(board, [size, size], antialias=True)
    ours = random_resized_crop(board, size, theta=whole)
    aliased = random_resized_crop(board, size, theta=whole, antialias=False)
    assert (ours - reference).abs().max() < 0.05 and ours.std() < 0.03
    assert (aliased - reference).abs().max() > 0.3  # what the batched path did before
    small = random_resized_crop(board, 64, theta=whole)  # not shrunk: sampled once, the image itself
    assert torch.allclose(small, board, atol=1e-5)


# ------------------------------------------------------------------------------------------ the paper's recipe
def rgb_folder(root: Path, classes: int = 2, per_class: int = 3, size: tuple[int, int] = (300, 260)) -> Path:
    rng = np.random.default_rng(1)
    for c in range(classes):
        (root / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(root / f"n{c:08d}" / f"{i}.jpg")
    return root


def recipe_datamodule(tmp_path: Path) -> MAEDataModule:
    """configs/finetune_vit_base.yaml's data section, on small folders in place of ImageNet's."""
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "finetune_vit_base.yaml").read_text())
    data = {**config["data"], "root": str(rgb_folder(tmp_path / "train")), "num_workers": 0,
            "val_root": str(rgb_folder(tmp_path / "val", per_class=2)), "batch_size": 2}
    data["crop_scale"] = tuple(data["crop_scale"])
    return MAEDataModule(**data)


def test_the_finetuning_recipe_augments_as_the_official_code_does(tmp_path):
    """The official main_finetune.py's build_transform(is_train=True), rebuilt here from its arguments."""
    from timm.data import create_transform

    dm = recipe_datamodule(tmp_path)
    dm.setup()
    official = create_transform(input_size=224, is_training=True, color_jitter=None, auto_augment="rand-m9-mstd0.5-inc1",
                                interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1,
                                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    ours = dm.train_set.transform
    assert repr(ours) == repr(official)  # crop scale (0.08, 1), bicubic, flip, RandAugment m9, erasing 0.25
    img = Image.open(dm.train_set.samples[0][0]).convert("RGB")
    for seed in range(3):
        torch.manual_seed(seed), np.random.seed(seed)
        import random

        random.seed(seed)
        a = ours(img)
        torch.manual_seed(seed), np.random.seed(seed)
        random.seed(seed)
        assert torch.equal(a, official(img))
    assert dm.hparams.augment == "finetune" and not dm.in_memory


def test_the_finetuning_recipe_evaluates_on_the_val_folder_at_256_then_224(tmp_path):
    from torchvision import transforms as T

    dm = recipe_datamodule(tmp_path)
    dm.setup()
    assert len(dm.train_set) == 6 and len(dm.val_set) == 4  # every training image trains; val is val_root
    assert all("/val/" in path for path, _ in dm.val_set.samples)
    official = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                          T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])  # build_transform(is_train=False)
    imgs, labels = next(iter(dm.val_dataloader()))
    assert imgs.shape[-2:] == (224, 224)
    want = official(Image.open(dm.val_set.samples[0][0]).convert("RGB"))
    # tensor against PIL bicubic resampling of random noise: within a few grey levels
    assert (imgs[0] - want).abs().mean() < 0.05 and (imgs[0] - want).abs().max() < 0.4
    (tmp_path / "val" / "n99999999").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "n99999999" / "x.png")
    with pytest.raises(ValueError, match="must be the same names.*Only in val_root: \\['n99999999'\\]"):
        recipe_datamodule(tmp_path).setup()


def test_the_finetuning_cosine_ends_at_min_lr(tmp_path):
    import lightning as L

    from maelib.train.modules import FineTuneModule

    root = rgb_folder(tmp_path / "train", per_class=8, size=(32, 32))
    dm = MAEDataModule(dataset="imagefolder", root=str(root), img_size=32, in_chans=3, batch_size=4, augment="mae")
    module = FineTuneModule(arch="mae_vit_tiny_patch8_64", arch_overrides={"img_size": 32, "depth": 2},
                            num_classes=2, min_lr=1e-6, warmup_epochs=0, base_lr=1e-3)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    groups = trainer.optimizers[0].param_groups
    head = max(groups, key=lambda g: g.get("lr_scale", 1.0))  # the head: scale 1
    assert head["lr"] == pytest.approx(1e-6, rel=1e-6)  # the official schedule: min_lr at the end, not zero


def test_the_pooled_export_can_start_from_a_fresh_fc_norm_as_the_official_fine_tuning():
    mae = maelib.create_model("mae_vit_mini_patch4_28", depth=1)
    with torch.no_grad():
        mae.norm.weight.uniform_(0.5, 1.5), mae.norm.bias.uniform_(-0.5, 0.5)
    kept = maelib.to_timm_vit(mae, num_classes=10, global_pool="avg")
    fresh = maelib.to_timm_vit(mae, num_classes=10, global_pool="avg", fc_norm="fresh")
    assert torch.equal(kept.fc_norm.weight, mae.norm.weight) and torch.equal(kept.fc_norm.bias, mae.norm.bias)
    assert torch.equal(fresh.fc_norm.weight, torch.ones(mae.config.embed_dim))
    assert torch.equal(fresh.fc_norm.bias, torch.zeros(mae.config.embed_dim))
    assert torch.equal(fresh.blocks[0].attn.qkv.weight, mae.blocks[0].attn.qkv.weight)  # the rest is pretrained
    with pytest.raises(ValueError, match="fc_norm must be 'encoder'.*or 'fresh'"):
        maelib.to_timm_vit(mae, global_pool="avg", fc_norm="new")


def test_kept_indices_are_the_encoders_tokens():
    from maelib.masking import kept_indices, random_masking

    noise = torch.rand(3, 49, generator=torch.Generator().manual_seed(0))
    tokens = torch.arange(49.0).view(1, 49, 1).expand(3, -1, 4)  # token j carries its patch index j
    kept, _, _ = random_masking(tokens, 0.75, noise)
    assert torch.equal(kept[..., 0].long(), kept_indices(noise, 0.75)) and kept.shape[1] == 12


# ------------------------------------------------------------------------------------------ distributed evaluation
def test_shard_sampler_shares_every_image_once():
    from maelib.data import ShardSampler

    shares = [list(ShardSampler(101, rank, 4)) for rank in range(4)]
    assert sorted(i for share in shares for i in share) == list(range(101))
    assert {len(share) for share in shares} == {25, 26} and len(ShardSampler(101, 0, 4)) == 26
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(10, 2, 2)
    dm = MAEDataModule(test_subset=101, batch_size=32, distributed_eval=True)
    dm._process = lambda: (1, 2)  # as process 1 of 2 sees it
    assert len(dm.test_dataloader().sampler) == 50 and len(dm.val_dataloader().sampler) == 50
    assert len(dm.labelled_train_dataloader().sampler) == 60000  # the k-NN bank and probes: never sharded
    assert len(MAEDataModule(test_subset=101, distributed_eval=False).test_dataloader().sampler) == 101


def test_distributed_evaluation_scores_every_test_image_once(tmp_path, hooks):
    """Two processes each score their share of 101 test images (51 + 50): the summed accuracy is the saved
    classifier's own count over all 101, exactly, not a mean of the two shares' means."""
    run = tmp_path / "ft"
    cmd = [sys.executable, "-m", "maelib.train.cli", "finetune", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1",
           "--model.arch", "mae_vit_mini_patch4_28", "--model.arch_overrides", TINY, "--data.train_subset", "256",
           "--data.test_subset", "101", "--data.batch_size", "32", "--data.distributed_eval", "true",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    acc = json.loads((run / "metrics.json").read_text())["test/acc"]
    net = maelib.load_classifier(run / "classifier.safetensors").eval()
    dm = MAEDataModule(test_subset=101, batch_size=64)
    with torch.no_grad():
        hits = sum((net(x).argmax(1) == y).sum().item() for x, y in dm.test_dataloader())
    assert acc == pytest.approx(hits / 101, abs=1e-6)
