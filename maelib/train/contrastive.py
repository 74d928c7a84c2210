"""Contrastive pretraining of the same ViT as the MAE: MoCo v3 (Chen, Xie & He, 2021), the MAE paper's main
comparison, so that MAE, contrastive and supervised pretraining start from one architecture on the same images.

Two augmented views of every image go through a query branch (the ViT, a 3-layer projection head, a 2-layer
predictor) and a momentum branch (the same ViT and projection head, an exponential moving average of the query
branch's weights, no gradient). Each query must pick out its own image's key, from the other view, among the
batch's keys: InfoNCE with temperature T, summed over both directions, scaled by 2T (`moco_v3_loss`).

The projection heads, the momentum update and its cosine schedule are lightly's pure-torch parts
(`lightly.models.modules.heads.MoCoProjectionHead`, `lightly.models.utils.update_momentum`,
`lightly.utils.scheduler.cosine_schedule`); the Lightning module is maelib's own (lightly's own modules are built
on `pytorch_lightning`). The encoder lives inside a `MaskedAutoencoder` (its decoder frozen and unused), so the
trained weights save, load and evaluate like an MAE's: `save_model(module.model, path)`, then
`maelib knn --model.checkpoint path`, the linear probe, fine-tuning.

    module = MoCoV3Module("mae_vit_mini_patch4_28", arch_overrides={"embed_dim": 64, "num_heads": 2})
    quiet_trainer(max_epochs=4).fit(module, datamodule=MAEDataModule(augment="none", batch_size=256))
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule

from ..data.color import color_jitter, jitter_params
from ..data.transforms import crop_params, random_resized_crop
from ..model import check_pool
from ..registry import create_model
from ..rng import AUGMENT
from ..validate import check_positive
from ..weights.zoo import load_model
from .modules import ScheduledModule
from .optim import scaled_lr, weight_decay_groups

VIEW_JITTER = (0.4, 0.4, 0.0, 0.0)  # brightness and contrast: what colour jitter means for grey images


def moco_v3_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v3's contrastive loss: q, k (N, D) -> cross-entropy of each normalised query against all N keys (its
    own at the same row), with temperature T, multiplied by 2T as in the paper's code."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.T / temperature  # (N, N): row i's positive is column i
    return F.cross_entropy(logits, torch.arange(len(q), device=q.device)) * 2 * temperature


def two_views(imgs: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor, crop_scale: tuple[float, float],
              jitter: tuple[float, float, float, float], generators: tuple[torch.Generator | None, ...] = (None, None),
              global_size: int | None = None, rows: slice = slice(None)) -> list[torch.Tensor]:
    """Two random views of normalised images (N, C, H, W): each a random resized crop and flip, then colour jitter
    in pixel space ([0, 1]), normalised again. One generator per view (None: the global RNG). On one of several
    processes, the draws are made for the `global_size` batch and this process's `rows` kept (as `BatchTransform`),
    so every image gets the same views on 1 or N processes."""
    n = global_size or len(imgs)
    views = []
    for g in generators:
        theta = crop_params(n, *imgs.shape[-2:], crop_scale, flip=True, generator=g)[rows]
        x = random_resized_crop(imgs, imgs.shape[-1], theta=theta)
        pixels = color_jitter((x * std + mean).clamp(0, 1), jitter_params(n, jitter, generator=g)[rows])
        views.append((pixels - mean) / std)
    return views


class MoCoV3Module(ScheduledModule):
    """MoCo v3 on a maelib ViT. The data module gives un-augmented images (`MAEDataModule(augment="none")`); the two
    views are drawn here, keyed by the batch, so a resumed or multi-process run draws the same views."""

    def __init__(self, arch: str | None = "mae_vit_mini_patch4_28", arch_overrides: dict | None = None,
                 checkpoint: str | None = None, pool: str = "cls",
                 hidden_dim: int = 1024, out_dim: int = 256, temperature: float = 0.2, momentum: float = 0.99,
                 base_lr: float = 1.5e-4, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.999),
                 warmup_epochs: float = 1.0, view_crop_scale: tuple[float, float] = (0.2, 1.0),
                 view_jitter: tuple[float, float, float, float] = VIEW_JITTER) -> None:
        """arch (+ arch_overrides): the ViT, at random initialisation; checkpoint: start from a trained MAE's
        encoder instead (a zoo name or a file). pool: the vector the heads see ("cls", as MoCo v3's ViT, or
        "mean"). temperature, momentum (the start of the cosine schedule to 1), base_lr (scaled by batch / 256),
        weight decay and betas: MoCo v3's ViT recipe (AdamW, lr 1.5e-4, wd 0.1, T 0.2, m 0.99).
        view_crop_scale and view_jitter: how the two views are drawn (named apart from the data module's own
        crop_scale and jitter, which are for MAE's input)."""
        super().__init__()
        check_pool(pool)
        check_positive("temperature", temperature)
        check_positive("base_lr", base_lr)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] (MoCo v3: 0.99, raised to 1 on a cosine), got {momentum}")
        self.save_hyperparameters()
        if checkpoint is not None:
            self.model = load_model(checkpoint, arch=arch, **(arch_overrides or {}))
        elif arch is not None:
            self.model = create_model(arch, **(arch_overrides or {}))
        else:
            raise ValueError("give an `arch` to train from random initialisation, or a `checkpoint` to start from")
        for name, p in self.model.named_parameters():  # the decoder is not trained: only the encoder is compared
            if not name.startswith(("patch_embed", "cls_token", "blocks", "norm")):
                p.requires_grad_(False)
        width = self.model.config.embed_dim
        self.projection = MoCoProjectionHead(width, hidden_dim, out_dim, num_layers=3, batch_norm=True)
        self.prediction = MoCoProjectionHead(out_dim, hidden_dim, out_dim, num_layers=2, batch_norm=True)
        self.momentum_model = copy.deepcopy(self.model)
        self.momentum_projection = copy.deepcopy(self.projection)
        deactivate_requires_grad(self.momentum_model)
        deactivate_requires_grad(self.momentum_projection)
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def setup(self, stage: str) -> None:
        dm = self.attached_datamodule()
        mean, std = (getattr(dm, "mean", None), getattr(dm, "std", None)) if dm is not None else (None, None)
        chans = self.model.config.in_chans
        self._stats = (torch.tensor(mean or (0.5,) * chans).view(1, -1, 1, 1),
                       torch.tensor(std or (0.5,) * chans).view(1, -1, 1, 1))

    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        """The query encoder's vector per image (`pool`). imgs (N, C, H, W) -> (N, D)"""
        return self.model.features(imgs, self.hparams.pool)

    def views(self, imgs: torch.Tensor, key, fixed_seed: int | None = None) -> list[torch.Tensor]:
        """The two views of a batch: drawn from the batch's key (training), from `fixed_seed` (validation: the
        same views every epoch), or from the global RNG."""
        if fixed_seed is not None:
            gens = tuple(torch.Generator().manual_seed(fixed_seed * 2 + view) for view in (1, 2))
        elif key is not None:
            gens = tuple(torch.Generator().manual_seed(key.seed_for(AUGMENT, view)) for view in (1, 2))
        else:
            gens = (None, None)
        mean, std = (s.to(imgs) for s in self._stats)
        return two_views(imgs, mean=mean, std=std, crop_scale=tuple(self.hparams.view_crop_scale),
                         jitter=tuple(self.hparams.view_jitter), generators=gens,
                         global_size=None if key is None else key.global_size,
                         rows=slice(None) if key is None else key.rows)

    def contrastive_loss(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        """The symmetrised MoCo v3 loss of two views (N, C, H, W): queries of each against keys of the other."""
        q1, q2 = (self.prediction(self.projection(self.features(v))) for v in (v1, v2))
        with torch.no_grad():
            k1, k2 = (self.momentum_projection(self.momentum_model.features(v, self.hparams.pool)) for v in (v1, v2))
        t = self.hparams.temperature
        return moco_v3_loss(q1, k2, t) + moco_v3_loss(q2, k1, t)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        imgs, _, key = self.split_batch(batch)
        v1, v2 = self.views(imgs, key)
        m = cosine_schedule(self.global_step, max(1, int(self.trainer.estimated_stepping_batches)),
                            self.hparams.momentum, 1.0)
        update_momentum(self.model, self.momentum_model, m)
        update_momentum(self.projection, self.momentum_projection, m)
        loss = self.contrastive_loss(v1, v2)
        self.log("train/loss", self.checked_loss(loss, imgs, batch_idx), prog_bar=True)
        self.log("train/momentum", m)
        self.log_lr()
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """The contrastive loss on held-out images, with the same views every epoch (seeded by the batch index)."""
        imgs, _, _ = self.split_batch(batch)
        self.log("val/loss", self.contrastive_loss(*self.views(imgs, None, fixed_seed=batch_idx)), prog_bar=True)

    def configure_optimizers(self):
        lr = scaled_lr(self.hparams.base_lr, self.effective_batch())
        wd = self.hparams.weight_decay  # the frozen decoder and momentum branch are left out (no requires_grad)
        groups = (weight_decay_groups(self.model, wd)
                  + weight_decay_groups(nn.ModuleList([self.projection, self.prediction]), wd))
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(self.hparams.betas))
        return {"optimizer": optimizer, "lr_scheduler": self.schedule(optimizer, self.hparams.warmup_epochs)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["maelib_config"] = self.model.config.to_dict()
