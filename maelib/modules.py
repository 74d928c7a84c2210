"""Lightning modules: thin glue between the model, the optimiser recipe and Lightning's Trainer.

- MAEPretrainModule: the paper's pretraining (AdamW, scaled lr, warm-up + cosine, masked-patch loss).
- LinearProbeModule: BatchNorm + linear head on frozen (cached) features, LARS or SGD.
- FineTuneModule: the encoder as a timm VisionTransformer, layer-wise lr decay, drop path, mixup/cutmix,
  label smoothing, optional partial fine-tuning; or the same recipe from random initialisation.

Devices, precision (bf16 on GPU), several GPUs or nodes (DDP, FSDP, SLURM, torchrun) are the Trainer's job.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import load_model
from .convert import to_timm_vit
from .evaluate import linear_probe_head
from .model import MaskedAutoencoder
from .optim import LARS, layer_decay_groups, scaled_lr, warmup_cosine_scheduler, weight_decay_groups
from .registry import create_model


class ScheduledModule(L.LightningModule):
    """Shared by all modules: the effective batch for lr scaling and the warm-up/cosine step count."""

    def effective_batch(self) -> int:
        """Per-device batch x devices x nodes x gradient accumulation: what `base_lr` is scaled by."""
        trainer = self.trainer
        batch = getattr(trainer.datamodule, "batch_size", None) or trainer.datamodule.hparams.get("batch_size")
        return batch * trainer.world_size * trainer.accumulate_grad_batches

    def schedule(self, optimizer: torch.optim.Optimizer, warmup_epochs: float, min_lr_ratio: float = 0.0) -> dict:
        """Per-step warm-up over `warmup_epochs` (at most half the run), then cosine to the last step."""
        trainer = self.trainer
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ValueError("set max_epochs or max_steps: the lr schedule needs to know where training ends")
        steps_per_epoch = trainer.num_training_batches / trainer.accumulate_grad_batches
        warmup = min(int(warmup_epochs * steps_per_epoch), int(total) // 2)
        return warmup_cosine_scheduler(optimizer, warmup, int(total), min_lr_ratio)

    def log_lr(self) -> None:
        self.log("train/lr", self.optimizers().param_groups[-1]["lr"], prog_bar=False)


def check_loss(loss: torch.Tensor, step: int) -> None:
    """Stop at once on a NaN or inf loss, before it reaches the weights (and so any later checkpoint)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the loss became {loss.item()} at step {step}: training stopped and the last checkpoint is kept. "
            "Lower the learning rate, add gradient clipping (--trainer.gradient_clip_val 1.0) or check the data."
        )


class MAEPretrainModule(ScheduledModule):
    """MAE pretraining. `arch` names a model in maelib's registry; `arch_overrides` change its config fields."""

    def __init__(
        self,
        arch: str = "mae_vit_mini_patch4_28",
        arch_overrides: dict | None = None,
        base_lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.0,
        mask_ratio: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model: MaskedAutoencoder = create_model(arch, **(arch_overrides or {}))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        imgs = batch[0] if isinstance(batch, (list, tuple)) else batch
        loss, _, _ = self.model(imgs, mask_ratio=self.hparams.mask_ratio)
        check_loss(loss, self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        self.log_lr()
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        imgs = batch[0] if isinstance(batch, (list, tuple)) else batch
        # The same masks every epoch, so validation losses are comparable across epochs.
        g = torch.Generator().manual_seed(batch_idx)
        noise = torch.rand(imgs.shape[0], self.model.config.num_patches, generator=g).to(imgs.device)
        loss, _, _ = self.model(imgs, mask_ratio=self.hparams.mask_ratio, noise=noise)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        lr = scaled_lr(self.hparams.base_lr, self.effective_batch())
        optimizer = torch.optim.AdamW(
            weight_decay_groups(self.model, self.hparams.weight_decay),
            lr=lr,
            betas=tuple(self.hparams.betas),
            fused=self.device.type == "cuda",
        )
        return {"optimizer": optimizer, "lr_scheduler": self.schedule(optimizer, self.hparams.warmup_epochs, self.hparams.min_lr_ratio)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["maelib_config"] = self.model.config.to_dict()  # lets load_model rebuild from the .ckpt alone


class ClassifierModule(ScheduledModule):
    """Cross-entropy training and accuracy for a network `self.net`; subclasses build it and the optimiser."""

    net: nn.Module

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.mixup = None  # a timm Mixup, for fine-tuning

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mixup is not None:
            x, soft = self.mixup(x, y)  # mixed images, smoothed one-hot targets
            loss = torch.sum(-soft * F.log_softmax(self(x), dim=-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        check_loss(loss, self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        self.log_lr()
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True, sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")


class LinearProbeModule(ClassifierModule):
    """The paper's linear probe on frozen features: BatchNorm (no affine) + linear, wd 0, warm-up + cosine.

    optimizer: "lars" is the paper's, made for its batch of 16384 (lr = 0.1 x 16384 / 256 = 6.4); at the
    small batches of a course it barely moves the head, so "sgd" (momentum 0.9) is the default here.
    It trains on feature vectors (N, feature_dim), cached once by `FeatureDataModule`, so a CPU probe is fast.
    """

    def __init__(
        self,
        feature_dim: int = 128,
        num_classes: int = 10,
        optimizer: str = "sgd",
        base_lr: float = 0.1,
        weight_decay: float = 0.0,
        warmup_epochs: float = 10.0,
    ) -> None:
        super().__init__()
        if optimizer not in ("lars", "sgd"):
            raise ValueError(f"optimizer must be 'lars' or 'sgd', got {optimizer!r}")
        self.save_hyperparameters()
        self.net = linear_probe_head(feature_dim, num_classes)

    def configure_optimizers(self):
        h = self.hparams
        lr = scaled_lr(h.base_lr, self.effective_batch())
        if h.optimizer == "lars":
            optimizer = LARS(self.net.parameters(), lr=lr, weight_decay=h.weight_decay)
        else:
            optimizer = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=0.9, weight_decay=h.weight_decay)
        return {"optimizer": optimizer, "lr_scheduler": self.schedule(optimizer, h.warmup_epochs)}


class FineTuneModule(ClassifierModule):
    """End-to-end fine-tuning of the encoder (exported to timm's VisionTransformer), the paper's recipe.

    checkpoint: a pretrained MAE (maelib .safetensors / .ckpt, or official .pth with `arch`); None trains the
    same architecture from random initialisation (`arch` required): the baseline to compare against.
    train_last_blocks: partial fine-tuning, train only the last k blocks (+ norm and head); None trains all.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        arch: str | None = None,
        arch_overrides: dict | None = None,
        num_classes: int = 10,
        global_pool: str = "avg",
        drop_path: float = 0.1,
        base_lr: float = 1e-3,
        weight_decay: float = 0.05,
        layer_decay: float = 0.75,
        warmup_epochs: float = 5.0,
        label_smoothing: float = 0.1,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        train_last_blocks: int | None = None,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing)
        self.save_hyperparameters()
        if checkpoint is not None:
            mae = load_model(checkpoint, arch=arch, **(arch_overrides or {}))
        elif arch is not None:
            mae = create_model(arch, **(arch_overrides or {}))
        else:
            raise ValueError("give a pretrained `checkpoint`, or an `arch` to fine-tune from random initialisation")
        self.net = to_timm_vit(mae, num_classes=num_classes, global_pool=global_pool, drop_path_rate=drop_path)
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes)
        if train_last_blocks is not None:
            self.freeze_all_but_last(train_last_blocks)

    def freeze_all_but_last(self, k: int) -> None:
        depth = len(self.net.blocks)
        if not 0 <= k <= depth:
            raise ValueError(f"train_last_blocks must be between 0 and {depth}, got {k}")
        for name, p in self.net.named_parameters():
            block = int(name.split(".")[1]) if name.startswith("blocks.") else None
            p.requires_grad = name.startswith(("head.", "fc_norm.", "norm.")) or (block is not None and block >= depth - k)

    def configure_optimizers(self):
        h = self.hparams
        lr = scaled_lr(h.base_lr, self.effective_batch())
        groups = layer_decay_groups(self.net, lr, h.weight_decay, h.layer_decay)
        optimizer = torch.optim.AdamW(groups, lr=lr, fused=self.device.type == "cuda")
        return {"optimizer": optimizer, "lr_scheduler": self.schedule(optimizer, h.warmup_epochs)}
