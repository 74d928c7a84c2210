"""Frozen features: what an encoder (or the raw pixels, its honest baseline) turns images into, once and cached, for
k-NN and the linear probe."""

from __future__ import annotations

import functools
import time
from typing import Iterable

import lightning as L
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from ..data import MAEDataModule
from ..model import MAEConfig, MaskedAutoencoder, check_pool
from ..registry import create_model, model_config
from ..weights.zoo import load_model


@torch.no_grad()
def extract_features(
    model: MaskedAutoencoder, loader: Iterable, pool: str = "cls", device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the unmasked encoder in eval mode over (images, labels) batches -> features (N, D), labels (N,).

    The model's training flag is restored afterwards.
    """
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for imgs, y in loader:
            feats.append(model.features(imgs.to(device, non_blocking=True), pool=pool).float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def pca_project(train: torch.Tensor, test: torch.Tensor, dims: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test features (N, F), (M, F) -> their coordinates (N, dims), (M, dims) on the first `dims`
    principal directions of the centred training features (`torch.pca_lowrank`, seeded: it is randomised).
    E.g. raw pixels cut to an encoder's width, to compare the two at equal dimension."""
    centre = train.float().mean(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(train.float() - centre, q=dims, center=False)  # v: (F, dims)
    return (train.float() - centre) @ v, (test.float() - centre) @ v


class RawPixels(nn.Module):
    """The honest baseline of every frozen-feature evaluation: the normalised input pixels themselves, flattened.

    It has an encoder's `config` (for the input size) and `features`, so k-NN and probes run on it by the same
    code as on an MAE. features: imgs (N, C, H, W) -> (N, C*H*W); `pool` is ignored (nothing to pool).
    """

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_dim = config.in_chans * config.img_size**2

    def features(self, imgs: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        return imgs.flatten(1)


class FeatureDataModule(L.LightningDataModule):
    """Frozen-encoder features of a labelled dataset: the data of linear probes and k-NN.

    Two ways, by `augment`:
    - "none" (default, the teaching preset): the features of the eval-transformed images, extracted once and
      cached, so a CPU probe trains in seconds per epoch;
    - "mae": the paper's linear-probe protocol (official main_linprobe.py): every training batch is a fresh random
      resized crop (scale `crop_scale`, bicubic) + flip of its images, turned into features by the frozen encoder
      on the batch's device at every step (`on_after_batch_transfer`; bf16 autocast on GPU); nothing is cached.
      Training images come from the image datamodule's train split; validation and test from its held-out
      images (an image folder's `val_root`, e.g. ImageNet's val folder, else a seeded 10% of the folder; a
      packaged dataset's test split), with the eval transform (`eval_crop_pct`).

    checkpoint: the pretrained MAE (maelib .safetensors / .ckpt, an official .pth with `arch`, or a zoo name such
        as "mae_vit_mini_patch4_28.fmnist_normpix"). Without a checkpoint, `arch` is built at random initialisation
        (seeded): the baseline MAE must beat.
    pixels: use the raw normalised pixels as the features (`RawPixels`, sized like `arch`, or like the
        checkpoint's model): the other baseline, scored by the same k-NN and probe code.
    pool: "cls" (the paper's probe) or "mean" (global average pooling), as in `MaskedAutoencoder.features`.
    The images come from an MAEDataModule sized to the encoder; with augment="none" all take its eval transform,
    training features come from the train split, val/test features from the test split.
    holdout: keep a seeded N of the training images out of training and validate on them instead of on the test
        split (val/acc), so that settings can be compared without looking at the test set. Cached features only
        (with augment="mae" the image datamodule's val split is held out already).
    val_root, eval_crop_pct, crop_scale, in_memory, distributed_eval: the image datamodule's (`MAEDataModule`).
    device: where to extract the features (e.g. "cuda:1"); default: the Trainer's device, else the encoder's.
    """

    def __init__(
        self,
        *,
        checkpoint: str | None = None,
        arch: str | None = None,
        pool: str = "cls",
        dataset: str = "fashion_mnist",
        root: str | None = None,
        batch_size: int = 256,
        train_subset: int | None = None,
        test_subset: int | None = None,
        holdout: int | None = None,
        pixels: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        download: bool = True,
        device: str | None = None,
        augment: str = "none",
        crop_scale: tuple[float, float] = (0.08, 1.0),
        val_root: str | None = None,
        eval_crop_pct: float = 1.0,
        in_memory: bool | None = None,
        distributed_eval: bool = False,
    ) -> None:
        super().__init__()
        pool = check_pool(pool)
        if augment not in ("none", "mae"):
            raise ValueError(f"augment must be 'none' (features cached once) or 'mae' (the paper's linear probe: "
                             f"random resized crops + flips, features computed at every step), got {augment!r}")
        self.on_the_fly = augment != "none"
        if self.on_the_fly and holdout is not None:
            raise ValueError("holdout is for cached features (augment='none'); with augment='mae' validation uses the "
                             "image datamodule's val split already (val_root, or 10% of the training images)")
        if checkpoint is not None:
            self.encoder = load_model(checkpoint, arch=arch)
            if pixels:
                self.encoder = RawPixels(self.encoder.config)
        elif pixels:
            self.encoder = RawPixels(model_config(arch or "mae_vit_mini_patch4_28"))
        elif arch is not None:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                self.encoder = create_model(arch)
        else:
            raise ValueError("give a pretrained `checkpoint`, or an `arch` for the random-initialisation baseline")
        c = self.encoder.config
        self.pool, self.batch_size = pool, batch_size
        self.feature_dim = getattr(self.encoder, "feature_dim", c.embed_dim)
        self.holdout, self.seed, self.feature_device = holdout, seed, device
        self._image_args = dict(
            dataset=dataset, root=root, img_size=c.img_size, in_chans=c.in_chans, batch_size=batch_size,
            augment=augment, crop_scale=crop_scale, train_subset=train_subset, test_subset=test_subset,
            num_workers=num_workers, seed=seed, download=download, val_root=val_root, eval_crop_pct=eval_crop_pct,
            in_memory=in_memory, distributed_eval=distributed_eval,
        )
        self.features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.feature_seconds = 0.0

    @functools.cached_property
    def images(self) -> MAEDataModule:
        """The labelled images, sized to the encoder. Built on first use, not in __init__: LightningCLI records
        the hyper-parameters of the class it is instantiating, and would hand ours to a datamodule built inside."""
        return MAEDataModule(**self._image_args)

    @property
    def num_classes(self) -> int:
        return self.images.num_classes

    def prepare_data(self) -> None:
        self.images.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.on_the_fly:
            self.images.trainer = self.trainer  # its sampler then shares each global batch out over the processes
            self.images.setup(stage)
            return
        if self.features:
            return
        start = time.perf_counter()
        self.encoder.to(self.extraction_device())
        self.features["train"] = extract_features(self.encoder, self.images.labelled_train_dataloader(), self.pool)
        self.features["test"] = extract_features(self.encoder, self.images.test_dataloader(), self.pool)
        self.encoder.cpu()
        self.feature_seconds = time.perf_counter() - start
        if self.holdout is not None:
            feats, labels = self.features["train"]
            if not 0 < self.holdout < len(feats):
                raise ValueError(f"holdout={self.holdout} must be between 1 and the {len(feats)} training images - 1")
            order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(self.seed))
            held, kept = order[: self.holdout], order[self.holdout :]
            self.features["val"] = feats[held], labels[held]
            self.features["train"] = feats[kept], labels[kept]

    def extraction_device(self) -> torch.device:
        """Where the features are extracted: `device` if given, else the Trainer's device (each DDP process its
        own GPU), else where the encoder's weights are. The features are then kept on the CPU for the loaders."""
        if self.feature_device is not None:
            return torch.device(self.feature_device)
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        param = next(self.encoder.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        feats, labels = self.features[split]
        return DataLoader(TensorDataset(feats, labels), batch_size=self.batch_size, shuffle=train,
                          drop_last=train and len(feats) > self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self.images.train_dataloader() if self.on_the_fly else self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        if self.on_the_fly:
            return self.images.val_dataloader()
        return self._loader("val" if "val" in self.features else "test")

    def test_dataloader(self) -> DataLoader:
        return self.images.test_dataloader() if self.on_the_fly else self._loader("test")

    @torch.no_grad()
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """augment="mae": the batch's images -> the frozen encoder's features, where the batch now is (the GPU).
        Cached features pass unchanged."""
        if not self.on_the_fly:
            return batch
        batch = self.images.on_after_batch_transfer(batch, dataloader_idx)  # uint8 -> normalised
        imgs, labels = batch[:2]
        param = next(self.encoder.parameters(), None)
        if param is not None and param.device != imgs.device:
            self.encoder.to(imgs.device)  # once: the encoder is frozen, so it is not part of the LightningModule
        self.encoder.eval()
        with torch.autocast(imgs.device.type, torch.bfloat16, enabled=imgs.device.type == "cuda"):
            feats = self.encoder.features(imgs, pool=self.pool)
        return (feats.float(), labels, *batch[2:])  # a training batch keeps its key (the probe reseeds from it)

    def state_dict(self) -> dict:
        """augment="mae": where the image datamodule's training order stands, for `--resume`."""
        return self.images.state_dict() if self.on_the_fly else {}

    def load_state_dict(self, state: dict) -> None:
        if self.on_the_fly:
            self.images.load_state_dict(state)
