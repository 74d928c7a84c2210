"""Reliability: resume after a real SIGKILL, atomic checkpoints, determinism, DDP = one process with the same
global batch, a dying process, NaN losses, clear errors for bad input, and property-based invariants.

The end-to-end tests run the CLI in subprocesses on a tiny model (16 optimiser steps of 64 Fashion-MNIST
images, OMP_NUM_THREADS=1 so every run computes alike) and compare per-step losses from the CSV logs and the
final weights. Test-only callbacks live in a module written to a temporary folder on PYTHONPATH and are passed
with --trainer.callbacks, so the package has no test hooks.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import maelib
from maelib.data import (
    BatchTransform,
    KeyedBatch,
    MAEDataModule,
    ResumableBatchSampler,
    ResumableDataLoader,
    TensorImageDataset,
)
from maelib.data.sampling import collate_keyed
from maelib.masking import MASKING, check_mask_ratio, num_kept, random_masking
from maelib.model import MAEConfig, MaskedAutoencoder
from maelib.patches import patchify, unpatchify
from maelib.rng import batch_noise
from maelib.train.cli import main
from maelib.train.modules import FineTuneModule, LinearProbeModule, MAEPretrainModule

TINY = "{depth: 1, embed_dim: 64, num_heads: 2, decoder_embed_dim: 32, decoder_num_heads: 2}"
STEPS = 16  # 2 epochs of 512 images in global batches of 64

HOOKS = '''
"""Test-only callbacks for tests/test_reliability.py."""
import os
import time
from pathlib import Path

import lightning as L


class PauseAt(L.Callback):
    """After optimiser step `step`, write this process's id to `marker` and wait to be killed."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(os.getpid()))
            time.sleep(600)


class ExitAt(L.Callback):
    """Process `rank` dies (os._exit(1), no clean-up, like a crash) when optimiser step `step` starts."""

    def __init__(self, step: int, rank: int) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            os._exit(1)


class PoisonAt(L.Callback):
    """The images of optimiser step `step` become NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            batch[0].fill_(float("nan"))
'''


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def hooks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hooks")
    (folder / "reliability_hooks.py").write_text(HOOKS)
    return folder


def cli_env(hooks: Path) -> dict:
    path = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def pretrain_cmd(run_dir: Path, batch_size: int = 64, *extra: str) -> list[str]:
    return [sys.executable, "-m", "maelib.train.cli", "pretrain", "--trainer.default_root_dir", str(run_dir),
            "--trainer.max_epochs", "2", "--model.arch_overrides", TINY, "--data.train_subset", "512",
            "--data.test_subset", "64", "--data.batch_size", str(batch_size), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1",
            "--checkpoint_every_n_steps", "3", *extra]


def run_ok(cmd: list[str], hooks: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=cli_env(hooks))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def logged(run_dir: Path, column: str = "train/loss") -> dict[int, float]:
    """step -> value of `column`, over every log version (a resumed run logs into a new one)."""
    values = {}
    for f in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        for row in csv.DictReader(f.open()):
            if row.get(column):
                values[int(row["step"])] = float(row[column])
    return values


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, hooks) -> Path:
    """One uninterrupted single-process run: 16 steps of 64 images, checkpoints every 3 steps."""
    run = tmp_path_factory.mktemp("reference")
    run_ok(pretrain_cmd(run), hooks)
    assert sorted(logged(run)) == list(range(STEPS))
    # 16 is not a multiple of 3: this last.ckpt was written at the end of an epoch
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STEPS
    return run


# ------------------------------------------------------------------------------------------ 1. resume
def test_sigkill_mid_epoch_then_resume_reaches_the_same_weights(reference, hooks, tmp_path):
    """Kill -9 at step 11 (the last checkpoint is step 9, one batch into epoch 2), resume with --resume last:
    the per-step losses after the resume and the final weights equal the uninterrupted run's, bit for bit.
    The killed and resumed runs load with a DataLoader worker, which fetches batches ahead of training (the
    reference has none): neither the prefetching nor the worker changes a number."""
    run, marker, out = tmp_path / "killed", tmp_path / "pid", tmp_path / "killed.log"
    cmd = pretrain_cmd(run, 64, "--data.num_workers", "1", "--trainer.callbacks+=reliability_hooks.PauseAt",
                       "--trainer.callbacks.step", "11", "--trainer.callbacks.marker", str(marker))
    with out.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=cli_env(hooks))
        try:
            deadline = time.monotonic() + 240
            while not marker.exists():
                assert proc.poll() is None, out.read_text()[-3000:]
                assert time.monotonic() < deadline, "the run never reached step 11"
                time.sleep(0.2)
            assert int(marker.read_text()) == proc.pid
            os.kill(proc.pid, signal.SIGKILL)  # for real: no clean-up, no last save
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 9  # every 3 steps: 3, 6, 8 (epoch end), 9; the kill lost steps 10 and 11
    assert ckpt["MAEDataModule"]["train_sampler"]["epoch"] == 1
    assert ckpt["MAEDataModule"]["train_sampler"]["batches_done"] == 1  # mid-epoch
    assert not list(last.parent.glob(".*.tmp"))

    run_ok(pretrain_cmd(run, 64, "--data.num_workers", "1", "--resume", "last"), hooks)
    resumed, uninterrupted = logged(run), logged(reference)
    assert sorted(resumed) == list(range(STEPS))  # steps 0-8 from the killed run's log, 9-15 from the resumed one
    assert resumed == uninterrupted  # bitwise: CSV floats are exact reprs
    assert max_abs_diff(weights(run), weights(reference)) == 0.0


def test_a_kill_during_a_checkpoint_save_leaves_the_previous_one_whole(tmp_path):
    """AtomicCheckpointIO: SIGKILL half-way through writing a checkpoint; the previous one is intact and loads."""
    script = textwrap.dedent("""
        import io, os, signal, sys
        import torch
        from maelib.train.callbacks import AtomicCheckpointIO

        path = sys.argv[1]
        writer = AtomicCheckpointIO()
        writer.save_checkpoint({"global_step": 1, "w": torch.ones(100_000)}, path)
        real_save = torch.save

        def save_half_then_die(obj, f):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            data = buffer.getvalue()
            with open(f, "wb") as out:
                out.write(data[: len(data) // 2])
                out.flush()
                os.fsync(out.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save_half_then_die
        writer.save_checkpoint({"global_step": 2, "w": torch.zeros(100_000)}, path)
    """)
    path = tmp_path / "checkpoints" / "last.ckpt"
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["w"], torch.ones(100_000))
    stale = list(path.parent.glob(".last.ckpt.*.tmp"))
    assert len(stale) == 1 and 0 < stale[0].stat().st_size < path.stat().st_size  # the half-written new one
    from maelib.train.callbacks import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 3
    assert not list(path.parent.glob(".last.ckpt.*.tmp"))  # the next save clears what the kill left


class Exploit:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_resuming_from_a_code_carrying_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "loops": Exploit()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="refused to resume from .*evil.ckpt.*arbitrary code"):
        main(["pretrain", "--trainer.default_root_dir", str(tmp_path / "run"), "--model.arch_overrides", TINY,
              "--data.train_subset", "64", "--data.batch_size", "32", "--trainer.enable_progress_bar", "false",
              "--resume", str(tmp_path / "evil.ckpt")])
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------ 4. determinism
def test_the_same_seed_gives_the_same_loss_curve_and_weights(reference, hooks, tmp_path):
    run = tmp_path / "again"
    run_ok(pretrain_cmd(run), hooks)
    assert logged(run) == logged(reference)  # every step, bitwise
    assert max_abs_diff(weights(run), weights(reference)) == 0.0


# ------------------------------------------------------------------------------------------ 5. several processes
def test_two_ddp_processes_match_one_process_with_the_same_global_batch(reference, hooks, tmp_path):
    """2 CPU processes (gloo) with batch 32 each vs 1 process with batch 64: the same images, augmentations
    and masks at every step; only the fp32 reduction order differs. Measured: per-step losses within 1.2e-7
    (1 ulp), weights within 6e-7 of each tensor's scale, except the key part of the attention qkv biases
    (true gradient 0, so Adam turns rounding noise into lr-sized steps): within 5e-6."""
    run = tmp_path / "ddp"
    run_ok(pretrain_cmd(run, 32, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                        "--trainer.strategy", "ddp"), hooks)
    ddp, single = logged(run), logged(reference)
    assert sorted(ddp) == sorted(single) == list(range(STEPS))
    for step in single:
        assert ddp[step] == pytest.approx(single[step], rel=1e-6, abs=0), step
    val_ddp, val_single = logged(run, "val/loss"), logged(reference, "val/loss")
    assert val_ddp.keys() == val_single.keys() and len(val_ddp) == 2
    for step in val_single:  # the validation masks are per image, whatever the batch size
        assert val_ddp[step] == pytest.approx(val_single[step], rel=1e-5)
    a, b = weights(run), weights(reference)
    for name in a:
        diff = (a[name] - b[name]).abs().max().item()
        if name.endswith("attn.qkv.bias"):
            assert diff < 1e-4, name
        else:
            assert diff <= 1e-5 * b[name].abs().max().item() + 1e-12, (name, diff)


def test_a_dying_process_takes_the_ddp_run_down(hooks, tmp_path):
    """Process 1 dies like a crash at step 3: the launcher exits non-zero within the timeout (no hang, and no
    process left holding its output pipe) and says what happened."""
    run = tmp_path / "dies"
    cmd = pretrain_cmd(run, 32, "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                       "--trainer.callbacks+=reliability_hooks.ExitAt", "--trainer.callbacks.step", "3",
                       "--trainer.callbacks.rank", "1")
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=cli_env(hooks))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    # maelib's message (rank 0 sees the broken connection), or Lightning's launcher if its watchdog is first
    assert ("lost contact with another process of this run" in output
            or "terminated with code 1" in output), output[-3000:]
    assert time.monotonic() - start < 300


# ------------------------------------------------------------------------------------------ 3. NaN
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(hooks, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(hooks))
    run = tmp_path / "nan"
    args = ["pretrain", "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1", "--model.arch_overrides",
            TINY, "--data.train_subset", "512", "--data.test_subset", "64", "--data.batch_size", "64",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--checkpoint_every_n_steps", "2", "--trainer.callbacks+=reliability_hooks.PoisonAt",
            "--trainer.callbacks.step", "5"]
    with pytest.raises(FloatingPointError, match="the loss became nan at step 5: training stopped and the last "
                                                 "checkpoint is kept"):
        main(args)
    last = run / "checkpoints" / "last.ckpt"
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # nothing written at the failure
    assert torch.load(last, weights_only=True)["global_step"] == 4
    model = maelib.load_model(last)  # weights only, config inside
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())
    assert not (run / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------ the sampler, keys
def test_sampler_shares_each_global_batch_out_over_processes():
    single = ResumableBatchSampler(100, 12, seed=3)
    for world in (2, 3):
        ranks = [ResumableBatchSampler(100, 12 // world, seed=3, rank=r, world_size=world) for r in range(world)]
        for s in (single, *ranks):
            s.set_epoch(2)
        assert len(single) == len(ranks[0]) == 100 // 12
        for t, (whole, *parts) in enumerate(zip(single, *ranks)):
            assert list(whole) == [i for part in parts for i in part]
            assert whole.key.index == t and whole.key.epoch == 2 and parts[1].key.rows == slice(12 // world, 24 // world)
    epochs = [list(map(list, ResumableBatchSampler(100, 12, seed=3).__iter__())) for _ in range(2)]
    assert epochs[0] == epochs[1]  # the same seed and epoch: the same order
    single.set_epoch(3)
    assert [list(b) for b in single] != list(map(list, ResumableBatchSampler(100, 12, seed=3)))
    flat = [i for b in single for i in b]
    assert len(set(flat)) == len(flat) == 96  # each image at most once per epoch, the last 4 dropped


def test_lightning_sets_the_samplers_epoch():
    """Lightning calls set_epoch on loader.sampler and loader.batch_sampler.sampler: ours must be reached."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    ds = TensorImageDataset(torch.zeros(40, 4, 4, dtype=torch.uint8), torch.zeros(40))
    loader = ResumableDataLoader(ds, batch_sampler=ResumableBatchSampler(40, 8))
    _set_sampler_epoch(loader, 5)
    assert loader.batch_sampler.epoch == 5 and next(iter(loader.batch_sampler)).key.epoch == 5


def test_sampler_resumes_mid_epoch_and_refuses_a_different_run():
    full = list(ResumableBatchSampler(100, 8, seed=1).__iter__())
    state = {"epoch": 0, "batches_done": 5, "seed": 1, "num_samples": 100, "global_batch_size": 8}
    resumed = ResumableBatchSampler(100, 8, seed=1)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert [list(b) for b in rest] == [list(b) for b in full[5:]] and rest[0].key.index == 5
    assert len(list(resumed)) == len(full)  # the next pass over the epoch is whole again
    at_end = ResumableBatchSampler(100, 8, seed=1)
    at_end.load_state_dict({**state, "batches_done": 12})  # written at the end of epoch 0: go on with epoch 1
    assert at_end.epoch == 1 and len(list(at_end)) == 12
    for change in ({"seed": 2}, {"global_batch_size": 16}, {"num_samples": 50}):
        with pytest.raises(ValueError, match="cannot continue that epoch.*--data.batch_size"):
            ResumableBatchSampler(100, 8, seed=1).load_state_dict({**state, **change})
    ResumableBatchSampler(100, 16, seed=1).load_state_dict({**state, "batches_done": 0})  # a new epoch: fine


def test_augmentation_does_not_depend_on_processes_or_workers():
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    for augment in ("mae", "flip"):
        ds = TensorImageDataset(images, torch.arange(64), BatchTransform(img_size=28, in_chans=3, mean=(0.5,),
                                                                         std=(0.25,), augment=augment))
        whole = [ds.batch(b)[0] for b in ResumableBatchSampler(64, 16, seed=0)]
        halves = [[ds.batch(b)[0] for b in ResumableBatchSampler(64, 8, seed=0, rank=r, world_size=2)] for r in (0, 1)]
        for t, w in enumerate(whole):
            assert torch.equal(w, torch.cat([halves[0][t], halves[1][t]])), (augment, t)
        keys = ResumableBatchSampler(64, 16)
        same_images = [ds.batch(KeyedBatch(range(16), keys.key(epoch, 0)))[0] for epoch in (0, 0, 1)]
        assert torch.equal(same_images[0], same_images[1]) and not torch.equal(same_images[0], same_images[2])
    torch.manual_seed(123)  # the global RNG plays no part, nor do worker processes
    with_workers = [x for x, _, _ in ResumableDataLoader(ds, batch_sampler=ResumableBatchSampler(64, 16), num_workers=1)]
    assert len(with_workers) == len(whole) and all(torch.equal(a, b) for a, b in zip(with_workers, whole))


@pytest.mark.parametrize("masking", sorted(MASKING))
def test_masks_do_not_depend_on_processes(masking):
    module = MAEPretrainModule(arch_overrides={"depth": 1, "masking": masking})

    def noise(batch_size, rank, world):
        sampler = ResumableBatchSampler(64, batch_size, seed=0, rank=rank, world_size=world)
        sampler.set_epoch(1)
        batch = collate_keyed(([(torch.zeros(1, 28, 28), 0)] * batch_size, list(sampler)[2].key))
        _, _, key = module.split_batch(batch)  # the key as the training step reads it from its batch
        return batch_noise(key, batch_size, module.model.noise_draw(module.mask_ratio))

    whole = noise(8, 0, 1)
    assert whole.shape == (8, 49)
    assert torch.equal(whole, torch.cat([noise(4, 0, 2), noise(4, 1, 2)]))
    assert torch.equal(whole, noise(8, 0, 1))


def test_finetuning_reseeds_the_global_rngs_from_the_batch_key():
    """Drop path and mixup draw from torch's and numpy's global RNGs: reseeded from the batch key at every step,
    they do not depend on what ran before (as after a resume), and differ between steps and processes."""
    import numpy as np

    module = FineTuneModule(arch="mae_vit_mini_patch4_28", arch_overrides={"depth": 1})

    def draws(batch_idx, rank=0, history=0):
        torch.manual_seed(history)
        np.random.seed(history)
        sampler = ResumableBatchSampler(64, 8, rank=rank, world_size=2)
        module.reseed_step(list(sampler)[batch_idx].key)
        return torch.rand(3).tolist() + np.random.rand(2).tolist()

    assert draws(2, history=0) == draws(2, history=1)
    assert draws(2) != draws(3) and draws(2, rank=0) != draws(2, rank=1)


# ------------------------------------------------------------------------------------------ 3. bad input
@pytest.fixture
def fake_root(tmp_path) -> str:
    from test_data import write_fake_fashion_mnist

    return str(write_fake_fashion_mnist(tmp_path / "fm", n_train=40, n_test=10))


def fit_setup(module, datamodule, tmp_path):
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)


def test_data_that_does_not_fit_the_model_fails_at_setup_naming_both(fake_root, tmp_path):
    pretrain = MAEPretrainModule(arch_overrides={"depth": 1})
    with pytest.raises(ValueError, match=r"data are 32x32 images with 1 channel\(s\) but the model takes 28x28 images "
                                         r"with 1: set --data.img_size 28 --data.in_chans 1.*arch_overrides"):
        fit_setup(pretrain, MAEDataModule(root=fake_root, img_size=32, batch_size=8), tmp_path)
    with pytest.raises(ValueError, match="28x28 images with 3 channel.* takes 28x28 images with 1"):
        fit_setup(pretrain, MAEDataModule(root=fake_root, in_chans=3, batch_size=8), tmp_path)
    finetune = FineTuneModule(arch="mae_vit_mini_patch4_28", arch_overrides={"depth": 1})
    with pytest.raises(ValueError, match="data are 56x56 .* takes 28x28 .* position embeddings are resized"):
        fit_setup(finetune, MAEDataModule(root=fake_root, img_size=56, batch_size=8), tmp_path)
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"mask_ratio must be a number in \[0, 1\)"):
            MAEPretrainModule(mask_ratio=ratio)


def test_heads_that_do_not_fit_the_classes_fail_at_setup(fake_root, tmp_path):
    with pytest.raises(ValueError, match=r"num_classes=12 outputs but the dataset has 10 classes: build "
                                         r"FineTuneModule\(num_classes=10\)"):
        fit_setup(FineTuneModule(arch="mae_vit_mini_patch4_28", arch_overrides={"depth": 1}, num_classes=12),
                  MAEDataModule(root=fake_root, batch_size=8), tmp_path)

    class Labelled(L.LightningDataModule):  # no num_classes: only the labels can tell
        def __init__(self, labels):
            super().__init__()
            self.train_set = TensorImageDataset(torch.zeros(len(labels), 1, 28, 28, dtype=torch.uint8), labels)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(self.train_set, batch_size=4)

    finetune = FineTuneModule(arch="mae_vit_mini_patch4_28", arch_overrides={"depth": 1}, num_classes=10)
    with pytest.raises(ValueError, match=r"labels go up to 12 but the head has num_classes=10 outputs \(labels 0..9\)"):
        fit_setup(finetune, Labelled(list(range(13))), tmp_path)
    with pytest.raises(ValueError, match="unlabelled images .* --data.stl10_unlabeled false"):
        fit_setup(finetune, Labelled([0, 1, -1, 2]), tmp_path)


def test_batches_of_one(fake_root, tmp_path):
    """The probe's BatchNorm cannot train on one sample, mixup needs pairs: clear errors at setup. MAE
    pretraining and plain fine-tuning do work on a batch of one."""

    class Features(L.LightningDataModule):
        def __init__(self, batch_size, n=16):
            super().__init__()
            self.batch_size, self.num_classes, self.feature_dim = batch_size, 10, 8
            self.features = {"train": (torch.randn(n, 8), torch.arange(n) % 10)}

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*self.features["train"]),
                                               batch_size=self.batch_size)

    probe = LinearProbeModule(feature_dim=8, num_classes=10)
    with pytest.raises(ValueError, match="batch_size=1: the probe's BatchNorm needs at least 2 .* --data.batch_size 2"):
        fit_setup(probe, Features(batch_size=1), tmp_path)
    with pytest.raises(ValueError, match="1 training sample: the probe's BatchNorm needs at least 2"):
        fit_setup(probe, Features(batch_size=4, n=1), tmp_path)
    with pytest.raises(ValueError, match="a training batch of 1 sample"):
        probe.training_step((torch.randn(1, 8), torch.tensor([3])), 0)
    mixup = FineTuneModule(arch="mae_vit_mini_patch4_28", arch_overrides={"depth": 1}, mixup=0.8)
    with pytest.raises(ValueError, match="even batch size, got batch_size=5: set --data.batch_size 6"):
        fit_setup(mixup, MAEDataModule(root=fake_root, batch_size=5), tmp_path)

    mae = maelib.create_model("mae_vit_mini_patch4_28", depth=1)
    loss, pred, mask = mae(torch.randn(1, 1, 28, 28))
    loss.backward()
    assert torch.isfinite(loss) and pred.shape == (1, 49, 16) and mask.sum() == 49 - num_kept(49, 0.75)
    finetune = FineTuneModule(arch="mae_vit_mini_patch4_28", arch_overrides={"depth": 1})
    finetune(torch.randn(1, 1, 28, 28)).sum().backward()
    dm = MAEDataModule(root=fake_root, batch_size=16)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=4)  # 16 x 4 processes > 40 images
    with pytest.raises(ValueError, match=r"batch_size=16 x 4 processes = 64 images per step is more than the 40"):
        dm.train_dataloader()


def test_missing_or_broken_data_is_a_clear_error_before_training(tmp_path):
    args = ["pretrain", "--trainer.default_root_dir", str(tmp_path / "run"), "--data.dataset", "imagefolder",
            "--trainer.enable_progress_bar", "false"]
    with pytest.raises(FileNotFoundError, match="does not exist; expected the layout root/class_name/image.jpg"):
        main([*args, "--data.root", str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files .* and no class sub-folders"):
        main([*args, "--data.root", str(tmp_path / "empty")])
    assert not (tmp_path / "run" / "checkpoints").exists()
    # unreadable files are skipped and counted when read (tests/test_scale.py); both are documented
    assert "skipped" in MAEDataModule.__doc__ and "skipped" in maelib.data.ImageFileDataset.__doc__
    # a folder of nothing but a truncated JPEG: an error naming it, not an endless search for a readable file
    from PIL import Image

    from maelib.data import ImageFileDataset, eval_transform

    (tmp_path / "photos" / "cats").mkdir(parents=True)
    jpeg = tmp_path / "photos" / "cats" / "cut.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    samples, _, skipped = maelib.data.scan_image_folder(tmp_path / "photos")
    assert samples == [(str(jpeg), 0)] and not skipped
    ds = ImageFileDataset([(str(jpeg), 0)], eval_transform(img_size=32, in_chans=3, mean=(0.5,), std=(0.5,)))
    with pytest.raises(RuntimeError, match="none of the 1 image files could be decoded, e.g. .*cut.jpg.*remove or "
                                           "replace the files"):
        ds[0]


# ------------------------------------------------------------------------------------------ properties
PROPERTIES = settings(max_examples=30, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow])


@PROPERTIES
@given(n=st.integers(1, 3), chans=st.sampled_from([1, 3]), patch=st.integers(1, 8), grid=st.integers(1, 6),
       data=st.data())
def test_patchify_round_trips_for_any_shape(n, chans, patch, grid, data):
    side = patch * grid
    imgs = torch.randn(n, chans, side, side)
    patches = patchify(imgs, patch)
    assert patches.shape == (n, grid * grid, patch * patch * chans)
    assert torch.equal(unpatchify(patches, patch, chans), imgs)
    off = data.draw(st.integers(1, patch - 1)) if patch > 1 else 0
    if off:
        with pytest.raises(ValueError, match=f"not a multiple of the patch size {patch}"):
            patchify(torch.zeros(1, chans, side + off, side + off), patch)


@PROPERTIES
@given(strategy=st.sampled_from(sorted(MASKING)), n=st.integers(1, 4), grid=st.integers(1, 8),
       ratio=st.floats(0.0, 0.95), seed=st.integers(0, 2**31))
def test_every_masking_strategy_keeps_the_same_count(strategy, n, grid, ratio, seed):
    num_patches = grid * grid
    noise = MASKING[strategy](n, grid, ratio, generator=torch.Generator().manual_seed(seed))
    assert noise.shape == (n, num_patches)
    again = MASKING[strategy](n, grid, ratio, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(noise, again)  # a seeded generator decides everything
    x = torch.arange(n * num_patches, dtype=torch.float32).view(n, num_patches, 1).expand(-1, -1, 3)
    kept, mask, ids_restore = random_masking(x, ratio, noise)
    keep = max(1, int(num_patches * (1 - ratio)))  # the paper's count, at least one patch visible
    assert kept.shape == (n, keep, 3) and (mask.sum(1) == num_patches - keep).all()
    assert torch.equal(ids_restore.sort(1).values, torch.arange(num_patches).expand(n, -1))  # a permutation
    visible = mask == 0
    if keep < num_patches:  # the lowest noise is kept
        assert (noise[visible].view(n, keep).max(1).values <= noise[~visible].view(n, -1).min(1).values).all()
    assert torch.equal(kept[..., 0].sort(1).values, x[..., 0][visible].view(n, keep))  # ... and only those


@PROPERTIES
@given(ratio=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0), st.just(float("nan"))))
def test_mask_ratios_outside_0_1_are_refused(ratio):
    with pytest.raises(ValueError, match=r"mask_ratio must be a number in \[0, 1\)"):
        check_mask_ratio(ratio)


@PROPERTIES
@given(patch=st.sampled_from([1, 2, 4]), grid=st.integers(1, 4), chans=st.sampled_from([1, 3]),
       ratio=st.floats(0.0, 0.95), strategy=st.sampled_from(sorted(MASKING)), norm_pix=st.booleans(),
       n=st.integers(1, 3))
def test_forward_pass_on_random_small_configs(patch, grid, chans, ratio, strategy, norm_pix, n):
    assume(not (norm_pix and patch * patch * chans < 2))  # one value per patch has no variance to normalise
    config = MAEConfig(img_size=patch * grid, patch_size=patch, in_chans=chans, embed_dim=16, depth=1, num_heads=2,
                       decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, masking=strategy,
                       norm_pix_loss=norm_pix)
    torch.manual_seed(0)
    model = MaskedAutoencoder(config)
    imgs = torch.randn(n, chans, patch * grid, patch * grid)
    noise = model.make_noise(n, ratio, generator=torch.Generator().manual_seed(1))
    loss, pred, mask = model(imgs, mask_ratio=ratio, noise=noise)
    num_patches = grid * grid
    assert pred.shape == (n, num_patches, patch * patch * chans) and mask.shape == (n, num_patches)
    assert (mask.sum(1) == num_patches - max(1, int(num_patches * (1 - ratio)))).all()
    assert math.isfinite(loss.item()) and loss.item() >= 0
    assert (loss.item() == 0) == (mask.sum().item() == 0)
    assert model.unpatchify(pred).shape == imgs.shape
    assert torch.equal(model(imgs, mask_ratio=ratio, noise=noise)[1], pred)  # the noise fixes everything
    with pytest.raises(ValueError, match=f"images have {4 - chans} channels but the model expects {chans}"):
        model(torch.randn(n, 4 - chans, patch * grid, patch * grid), mask_ratio=ratio)
