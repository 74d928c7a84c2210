"""Pretraining methods side by side: the same ViT pretrained by MAE, by a contrastive method
(MoCo v3), with labels (supervised), or not at all (random initialisation), judged by the same tests.

    encoders = load_encoders(INITS)                            # zoo names -> MaskedAutoencoders; None: random
    rows = frozen_scores(encoders, bank=10000, test=2000)      # k-NN and the linear probe, per method
    curves = label_efficiency(encoders, labels=5000, fractions=(0.01, 0.1, 1.0), seeds=3)
    seg = segmentation_transfer(encoders, train_scenes=1000, test_scenes=300)

Every function prints a line per finished measurement (progress on long work) and returns JSON-ready records;
`mean_table` turns records into mean +- standard error per method and setting. All images come from seeded
subsets, so two calls give the same numbers.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from ..course.presets import preset_path
from ..data import MAEDataModule
from ..data.scenes import SCENE_CLASSES, split_scenes
from ..evaluation.features import RawPixels, extract_features
from ..evaluation.finetune import finetune_accuracy
from ..evaluation.knn import knn_accuracy
from ..evaluation.probe import PIXELS_PROBE_BASE_LR, PROBE_BASE_LR, linear_probe
from ..evaluation.segmentation import segment
from ..model import MaskedAutoencoder
from ..registry import create_model
from ..train.contrastive import MoCoV3Module
from ..train.modules import FineTuneModule, MAEPretrainModule
from ..train.trainer import quiet_trainer
from ..weights.zoo import load_model
from .stats import mean_se

# The four starting points compared, by zoo name (None: the architecture at random initialisation, seeded).
INITS = {
    "MAE": "mae_vit_mini_patch4_28.fmnist_normpix",
    "MoCo v3": "vit_mini_patch4_28.fmnist_mocov3",
    "supervised": "vit_mini_patch4_28.fmnist_supervised",
    "random init": None,
}
ARCH = "mae_vit_mini_patch4_28"
# How each method pretrains: the maelib command, its preset, the module the preset configures, the encoder it saves.
RECIPES = {
    "MAE": ("pretrain", "pretrain_fmnist", MAEPretrainModule, "model.safetensors"),
    "MoCo v3": ("contrastive", "contrastive_fmnist", MoCoV3Module, "model.safetensors"),
    "supervised": ("finetune", "supervised_fmnist", FineTuneModule, "encoder.safetensors"),
}
TRAIN_IMAGES = 60000


class _StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self.last = warmup, [], None

    def on_train_batch_end(self, trainer, *args) -> None:
        now = time.perf_counter()
        if self.last is not None and trainer.global_step > self.warmup:
            self.times.append(now - self.last)
        self.last = now


def step_seconds(method: str, *, steps: int = 10, warmup: int = 2) -> tuple[float, int]:
    """(median seconds per optimiser step, batch size) of `method`'s preset (`RECIPES`) in the real Lightning loop
    on this machine, after `warmup` steps. What `benchmarks/pretraining_cost.py` reports, and what
    `pretrain_methods` sizes equal-time runs by."""
    _, preset, module_class, _ = RECIPES[method]
    config = yaml.safe_load(preset_path("pretrain", preset).read_text())
    L.seed_everything(0, verbose=False)
    module = module_class(**config["model"])
    timer = _StepTimer(warmup)
    quiet_trainer(max_steps=steps + warmup + 1, limit_val_batches=0, callbacks=[timer]).fit(
        module, datamodule=MAEDataModule(**config["data"]))
    return statistics.median(timer.times), config["data"]["batch_size"]


def pretrain_methods(minutes: float, out_dir: str | Path) -> dict[str, str]:
    """Pretrain every method of `RECIPES` from random initialisation for about `minutes` each on this machine
    (equal wall time): each one's steps are its own step time, measured here first, into the budget; Lightning's
    max_time stops a run that is slower than measured. -> method name -> the encoder file it saved."""
    from ..train.cli import main

    files = {}
    for method, (command, preset, _, saved) in RECIPES.items():
        seconds, _ = step_seconds(method, steps=5)
        steps = max(1, int(minutes * 60 / seconds))
        run = Path(out_dir) / preset
        print(f"{method}: {seconds:.2f} s a step here, so {steps} steps in {minutes:g} minutes", flush=True)
        limit = int(minutes * 60 * 1.25)
        main([command, "--config", preset, "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
              "--trainer.max_time", f"00:{limit // 3600:02d}:{limit // 60 % 60:02d}:{limit % 60:02d}",
              "--trainer.default_root_dir", str(run), "--trainer.enable_model_summary", "false"])
        files[method] = str(run / saved)
    return files


def load_encoders(inits: dict[str, str | None] = INITS, *, arch: str = ARCH, seed: int = 0) -> dict[str, MaskedAutoencoder]:
    """Method name -> encoder in eval mode: a zoo name or file loaded, None built at random init (seeded)."""
    encoders = {}
    for name, source in inits.items():
        if source is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                encoders[name] = create_model(arch).eval()
        else:
            encoders[name] = load_model(source).eval()
    return encoders


def _data(model, *, train_subset: int, **kwargs) -> MAEDataModule:
    c = model.config
    return MAEDataModule(img_size=c.img_size, in_chans=c.in_chans, augment="none", train_subset=train_subset,
                         batch_size=min(256, train_subset), **kwargs)


def frozen_scores(encoders: dict[str, MaskedAutoencoder], *, bank: int = 10000, test: int = 2000, pool: str = "mean",
                  probe_epochs: int = 20, pixels: bool = True, seed: int = 0) -> list[dict]:
    """k-NN (k = 20) and the linear probe on frozen features, `bank` labelled training images and `test` test
    images, for each encoder (and the raw pixels with `pixels`). -> [{"method", "knn", "probe"}]"""
    rows = []
    models = dict(encoders)
    if pixels:
        models["raw pixels"] = RawPixels(next(iter(encoders.values())).config)
    for name, model in models.items():
        start = time.perf_counter()
        data = _data(model, train_subset=bank, test_subset=test, seed=seed)
        train = extract_features(model, data.labelled_train_dataloader(), pool)
        held_out = extract_features(model, data.test_dataloader(), pool)
        rows.append(dict(method=name, knn=knn_accuracy(*train, *held_out, k=20),
                         probe=linear_probe(train, held_out, epochs=probe_epochs, seed=seed,
                                            base_lr=PIXELS_PROBE_BASE_LR if name == "raw pixels" else PROBE_BASE_LR)))
        print(f"{name:12s} k-NN {rows[-1]['knn']:.1%}  probe {rows[-1]['probe']:.1%}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def label_counts(labels: int, fractions) -> dict[float, int]:
    """fraction -> number of labelled images (at least 10: one per class on average)."""
    return {f: max(10, round(labels * f)) for f in fractions}


def label_efficiency(encoders: dict[str, MaskedAutoencoder], *, labels: int = 5000,
                     fractions: tuple[float, ...] = (0.01, 0.1, 1.0), seeds: int = 3, test: int = 2000,
                     pool: str = "mean", probe_epochs: int = 20, finetune_steps: int = 150,
                     finetune: bool = True, from_probe: bool = True) -> list[dict]:
    """The linear probe and fine-tuning with a fraction of `labels` labelled training images, each method on the
    same seeded subsets: `seeds` subsets for fractions below 1, one for the whole. Fine-tuning runs
    `finetune_steps` optimiser steps whatever the number of labels; from_probe: its head starts from the probe
    just trained on the same images ("linear probe, then fine-tune"), so that a short fine-tuning starts where
    the probe ended instead of from a random head (needs pool="mean", the features the classifier's head reads).
    -> [{"method", "fraction", "labels", "seed", "probe", "finetune"}]"""
    if finetune and from_probe and pool != "mean":
        raise ValueError(f"from_probe=True starts the classifier's head (on mean-pooled tokens) from the probe, "
                         f"which needs pool='mean', got pool={pool!r}: use pool='mean' or from_probe=False")
    rows = []
    for fraction, n in label_counts(labels, fractions).items():
        for seed in range(seeds if fraction < 1 else 1):
            for name, model in encoders.items():
                start = time.perf_counter()
                data = _data(model, train_subset=n, test_subset=test, seed=seed)
                train = extract_features(model, data.labelled_train_dataloader(), pool)
                held_out = extract_features(model, data.test_dataloader(), pool)
                probe, head = linear_probe(train, held_out, epochs=probe_epochs, seed=seed, num_classes=10,
                                           return_head=True)
                row = dict(method=name, fraction=fraction, labels=n, seed=seed, probe=probe)
                if finetune:
                    row["finetune"] = finetune_accuracy(model, images=n, test_images=test, steps=finetune_steps,
                                                        batch_size=64, seed=seed, subset_seed=seed,
                                                        head=head if from_probe else None)
                rows.append(row)
                ft = f"  fine-tuned {row['finetune']:.1%}" if finetune else ""
                print(f"{n:6d} labels, seed {seed}: {name:12s} probe {row['probe']:.1%}{ft} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def segmentation_transfer(encoders: dict[str, MaskedAutoencoder], *, train_scenes: int = 1000, test_scenes: int = 300,
                          size: int = 56, head_epochs: int = 40, head_lr: float = 2e-2, epochs: int = 3,
                          lr: float = 1e-3, seed: int = 0, examples: int = 0,
                          modes: tuple[bool, ...] = (True, False)) -> list[dict]:
    """Semantic segmentation of scenes of Fashion-MNIST *test* items (`maelib.data.scenes`), a task no encoder
    was trained on: a linear head on the patch tokens, with the encoder frozen and fine-tuned (`modes`: the
    values of `frozen` to run). Frozen: the head trains `head_epochs` at `head_lr` on tokens computed once.
    Fine-tuned: the same head training first, then `epochs` of head and encoder together at `lr`
    (`maelib.evaluation.segmentation.segment`).
    -> [{"method", "frozen", "miou", "pixel_acc", "per_class_iou"}] (and with examples=k, "examples": the
    predicted masks of the first k test scenes, a tensor: drop it before saving the records as JSON)"""
    train, test = split_scenes(train=train_scenes, test=test_scenes, size=size, seed=seed)
    rows = []
    for name, model in encoders.items():
        for frozen in modes:
            start = time.perf_counter()
            how = dict(epochs=head_epochs, lr=head_lr) if frozen else dict(head_epochs=head_epochs, head_lr=head_lr,
                                                                            epochs=epochs, lr=lr)
            result = segment(model, train, test, num_classes=len(SCENE_CLASSES), frozen=frozen, seed=seed,
                             examples=examples, **how)
            rows.append(dict(method=name, **result))
            print(f"{name:12s} {'frozen    ' if frozen else 'fine-tuned'} mIoU {result['miou']:.1%}  pixel accuracy "
                  f"{result['pixel_acc']:.1%} ({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def mean_table(rows: list[dict], keys: tuple[str, ...], value: str) -> dict[tuple, tuple[float, float, int]]:
    """Records -> {(key values): (mean, standard error, n)} of `value` (`stats.mean_se`)."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        if row.get(value) is not None:
            groups.setdefault(tuple(row[k] for k in keys), []).append(row[value])
    return {key: (*mean_se(values), len(values)) for key, values in groups.items()}
