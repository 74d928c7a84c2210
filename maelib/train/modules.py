"""Lightning modules: thin glue between the model, the optimiser recipe and Lightning's Trainer.

- MAEPretrainModule: the paper's pretraining (AdamW, scaled lr, warm-up + cosine, masked-patch loss).
- LinearProbeModule: BatchNorm + linear head on frozen (cached) features, LARS or SGD.
- FineTuneModule: the encoder as a timm VisionTransformer, layer-wise lr decay, drop path, mixup/cutmix,
  label smoothing, optional partial fine-tuning; or the same recipe from random initialisation.

Devices, precision (bf16 on GPU), several GPUs or nodes (DDP, SLURM, torchrun) are the Trainer's job.

Randomness in training is keyed by (seed, epoch, global batch) when the batches come from `MAEDataModule`
(see `maelib.rng`): the masks of MAEPretrainModule are drawn from the batch's key, and the classifiers reseed
torch's and numpy's global RNGs from it at every step (drop path, mixup/cutmix). A run resumed mid-epoch thus
repeats the uninterrupted one, and the masks do not depend on the number of processes.

Each module checks at `setup` that the data fit it (image size, channels, classes, labels, batch size) and
says which flag to change, before any training.
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MeanMetric

from ..data.checks import check_classes_fit, check_input_fits, data_hparam, train_labels
from ..masking import check_mask_ratio
from ..model import MaskedAutoencoder
from ..registry import create_model
from ..rng import STEP, BatchKey, batch_noise, fixed_noise
from ..validate import check_loss, check_positive
from ..weights.convert import to_timm_vit
from ..weights.zoo import load_model
from .optim import LARS, layer_decay_groups, scaled_lr, warmup_cosine_scheduler, warmup_steps, weight_decay_groups


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
        return warmup_cosine_scheduler(optimizer, warmup_steps(warmup_epochs, steps_per_epoch, total), int(total),
                                       min_lr_ratio)

    def checked_loss(self, loss: torch.Tensor, inputs: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The step's loss averaged over processes (what is logged), after stopping every process at once when it is
        NaN or inf on any of them: a NaN on one rank makes the mean NaN on all, so all raise in the same step
        instead of the healthy ones waiting in the next all-reduce for the process group's 30-minute timeout.
        The message says whether this batch's `inputs` hold non-finite values (then the data are at fault)."""
        world = self._trainer.world_size if self._trainer is not None else 1
        mean = loss.detach().clone()  # the all-reduce is in place: not on the tensor that backward uses
        if world > 1:
            mean = self.trainer.strategy.reduce(mean, reduce_op="mean")
        epoch = self._trainer.current_epoch if self._trainer is not None else 0
        check_loss(mean, self.global_step, world, inputs=inputs, batch=f"batch {batch_idx} of epoch {epoch}")
        return mean

    def log_lr(self) -> None:
        self.log("train/lr", self.optimizers().param_groups[-1]["lr"], prog_bar=False)

    @staticmethod
    def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None, BatchKey | None]:
        """(inputs, labels or None, key or None) of a training batch: MAEDataModule's training batches are
        (images, labels, key), the key being the `BatchKey` that the sampler made and the augmentation was drawn
        from (`maelib.data.sampling.collate_keyed`); other loaders give (inputs, labels) or bare inputs."""
        if not isinstance(batch, (list, tuple)):
            return batch, None, None
        key = BatchKey.from_tensor(batch[2]) if len(batch) > 2 else None
        return batch[0], batch[1] if len(batch) > 1 else None, key

    def attached_datamodule(self):
        """The trainer's datamodule, or None."""
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None


COMPILE_MIN_PARAMS = 50_000_000  # MAE ViT-B/16 has 112M; the teaching presets 1-6M


class MAEPretrainModule(ScheduledModule):
    """MAE pretraining. `arch` names a model in maelib's registry; `arch_overrides` change its config fields;
    `checkpoint` starts from a trained MAE instead of random initialisation."""

    def __init__(
        self,
        arch: str = "mae_vit_mini_patch4_28",
        arch_overrides: dict | None = None,
        checkpoint: str | None = None,
        base_lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.0,
        mask_ratio: float | None = None,
        compile: bool | None = None,
    ) -> None:
        """compile: run the model's forward (and so its backward) through torch.compile. None (default) = where
        it pays: on CUDA for models of at least `COMPILE_MIN_PARAMS` (an H200 in benchmarks/RESULTS.md: ViT-B
        1.42x faster than eager for ~45-55 s of compilation; teaching sizes 0.89-1.0x, so they stay eager),
        never on CPU (no gain there).

        checkpoint: continue pretraining from a trained MAE: a zoo name (`maelib.list_pretrained()`, e.g.
        "mae_vit_tiny_patch8_64.photos_pixel" or "official:mae_visualize_vit_base"), a maelib .safetensors or
        .ckpt, or an official .pth (then `arch` names its architecture). `arch_overrides` apply on top, e.g.
        {img_size: 96}: the position embeddings are interpolated to the new grid (the official code's
        interpolate_pos_embed), so a model pretrained at one size continues at another."""
        super().__init__()
        if mask_ratio is not None:
            check_mask_ratio(mask_ratio)
        check_positive("base_lr", base_lr, flag="--model.base_lr")
        self.save_hyperparameters()
        if checkpoint is not None:
            self.model: MaskedAutoencoder = load_model(checkpoint, arch=arch, **(arch_overrides or {}))
        else:
            self.model = create_model(arch, **(arch_overrides or {}))
        self.compiled = False  # set once torch.compile has wrapped the model's forward (`setup`)

    def setup(self, stage: str) -> None:
        c = self.model.config
        if (dm := self.attached_datamodule()) is not None:
            check_input_fits(c.img_size, c.in_chans, dm, f"build the model for them (--model.arch_overrides "
                             f"'{{img_size: {data_hparam(dm, 'img_size')}, in_chans: {data_hparam(dm, 'in_chans')}}}', "
                             f"a multiple of patch_size={c.patch_size})")
            if stage == "fit" and not self.model.target_is_fitted:
                self.fit_target(dm)
        on_cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        pays = on_cuda and self.model.num_params() >= COMPILE_MIN_PARAMS
        wanted = pays if self.hparams.compile is None else self.hparams.compile
        if stage == "fit" and wanted and not self.compiled:
            self.model.compile()  # in place: parameter names, checkpoints and exports stay as they are
            self.compiled = True

    FIT_IMAGES = 10_000  # a PCA or token target is fitted on the patches of this many training images

    def fit_target(self, datamodule) -> None:
        """Fit the model's PCA or k-means target (`MaskedAutoencoder.fit_target`) on a seeded sample of the
        training images, un-augmented (the datamodule's labelled training loader), before the first step."""
        images = []
        loader = getattr(datamodule, "labelled_train_dataloader", datamodule.train_dataloader)()
        for batch in loader:
            images.append(self.split_batch(batch)[0])
            if sum(len(x) for x in images) >= self.FIT_IMAGES:
                break
        imgs = torch.cat(images)[: self.FIT_IMAGES].to(next(self.model.parameters()).device)
        self.model.fit_target(imgs, seed=data_hparam(datamodule, "seed") or 0)
        logging.getLogger(__name__).info("fitted the %s target on %d training images", self.model.config.target,
                                         len(imgs))

    @property
    def mask_ratio(self) -> float:
        """The training mask ratio: this module's `mask_ratio`, else the model config's."""
        return self.model.config.mask_ratio if self.hparams.mask_ratio is None else self.hparams.mask_ratio

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        imgs, _, key = self.split_batch(batch)
        # masks keyed by the batch (maelib.rng.batch_noise); without keys the model draws from the global RNG
        noise = None if key is None else batch_noise(key, len(imgs), self.model.noise_draw(self.mask_ratio))
        loss, _, _ = self.model(imgs, mask_ratio=self.mask_ratio, noise=None if noise is None else noise.to(imgs.device))
        # averaged over processes: with DDP the logged curve is the global batch's loss, as on one process
        self.log("train/loss", self.checked_loss(loss, imgs, batch_idx), prog_bar=True)
        self.log_lr()
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        imgs = batch[0] if isinstance(batch, (list, tuple)) else batch
        # The same mask for validation image i every epoch, whatever the batch size or number of processes, so
        # validation losses are comparable across epochs and runs; drawn with the model's own masking strategy.
        per_batch = getattr(self.trainer.val_dataloaders, "batch_size", None) or imgs.shape[0]
        noise = fixed_noise(batch_idx * per_batch, len(imgs), self.model.config.num_patches,
                            draw=self.model.noise_draw(self.mask_ratio))
        loss, _, _ = self.model(imgs, mask_ratio=self.mask_ratio, noise=noise.to(imgs.device))
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
        # summed over processes at each epoch's end: exact when each process scores a share of the images
        self.scores = nn.ModuleDict({f"{stage}_{name}": MeanMetric() for stage in ("val", "test")
                                     for name in ("loss", "acc")})
        self.mixup = None  # a timm Mixup, for fine-tuning

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        if (dm := self.attached_datamodule()) is not None:
            self.check_data(dm, stage)

    def check_data(self, datamodule, stage: str) -> None:
        """Raise before training if the dataset's classes or labels do not fit the head."""
        check_classes_fit(datamodule, self.hparams.num_classes, type(self).__name__, labels=stage == "fit")

    @staticmethod
    def reseed_step(key: BatchKey | None) -> None:
        """Reseed torch's and numpy's global RNGs from the batch key (drop path, mixup/cutmix), so this step's
        randomness does not depend on what ran before it (e.g. a resume). Each process gets its own seed."""
        if key is not None:
            seed = key.seed_for(STEP, key.rank)
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, key = self.split_batch(batch)
        self.reseed_step(key)
        if self.mixup is not None:
            x, soft = self.mixup(x, y)  # mixed images, smoothed one-hot targets
            loss = torch.sum(-soft * F.log_softmax(self(x), dim=-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        self.log("train/loss", self.checked_loss(loss, x, batch_idx), prog_bar=True)  # the mean over processes
        self.log_lr()
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch[:2]
        logits = self(x)
        loss, acc = self.scores[f"{stage}_loss"], self.scores[f"{stage}_acc"]
        loss.update(F.cross_entropy(logits, y), weight=len(y))
        acc.update((logits.argmax(-1) == y).float().mean(), weight=len(y))
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")


def linear_probe_head(dim: int, num_classes: int) -> nn.Sequential:
    """The paper's probe: BatchNorm without affine parameters (it just whitens features), then a linear layer
    initialised with std 0.01."""
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    return head


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
        check_positive("base_lr", base_lr, flag="--model.base_lr")
        self.save_hyperparameters()
        self.net = linear_probe_head(feature_dim, num_classes)

    def check_data(self, datamodule, stage: str) -> None:
        super().check_data(datamodule, stage)
        feature_dim = getattr(datamodule, "feature_dim", None)
        if feature_dim is not None and feature_dim != self.hparams.feature_dim:
            raise ValueError(f"the features have {feature_dim} dimensions but the probe takes feature_dim="
                             f"{self.hparams.feature_dim}: set --model.feature_dim {feature_dim}")
        if stage != "fit":
            return
        batch = data_hparam(datamodule, "batch_size")
        if batch is not None and batch < 2:
            raise ValueError(f"batch_size={batch}: the probe's BatchNorm needs at least 2 samples per batch to train "
                             "(it normalises with the batch's statistics): set --data.batch_size 2 or more")
        labels = train_labels(datamodule)
        if labels is not None and len(labels) < 2:
            raise ValueError(f"{len(labels)} training sample: the probe's BatchNorm needs at least 2 to train; "
                             "raise --data.train_subset")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if len(batch[0]) < 2:
            raise ValueError("a training batch of 1 sample: the probe's BatchNorm needs at least 2 to train. Use a "
                             "batch size of 2 or more, and drop an incomplete last batch of 1 (drop_last=True)")
        return super().training_step(batch, batch_idx)

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
    min_lr: where the cosine schedule ends (the paper's recipe: 1e-6), scaled by each layer's decay.
    fc_norm: with global_pool="avg", "encoder" (the pretrained final norm becomes fc_norm) or "fresh" (a new
        LayerNorm, as the official fine-tuning code): see `maelib.to_timm_vit`.
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
        min_lr: float = 0.0,
        fc_norm: str = "encoder",
    ) -> None:
        super().__init__(label_smoothing=label_smoothing)
        check_positive("base_lr", base_lr, flag="--model.base_lr")
        self.save_hyperparameters()
        if checkpoint is not None:
            mae = load_model(checkpoint, arch=arch, **(arch_overrides or {}))
        elif arch is not None:
            mae = create_model(arch, **(arch_overrides or {}))
        else:
            raise ValueError("give a pretrained `checkpoint`, or an `arch` to fine-tune from random initialisation")
        self.mae_config = mae.config  # the input it takes (`check_data`), and what rebuilds it (`save_classifier`)
        self.net = to_timm_vit(mae, num_classes=num_classes, global_pool=global_pool, drop_path_rate=drop_path,
                               fc_norm=fc_norm)
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes)
        if train_last_blocks is not None:
            self.freeze_all_but_last(train_last_blocks)

    def check_data(self, datamodule, stage: str) -> None:
        c = self.mae_config
        img_size, in_chans, patch = c.img_size, c.in_chans, c.patch_size
        check_input_fits(img_size, in_chans, datamodule, f"build the encoder for them: --model.arch_overrides "
                         f"'{{img_size: {data_hparam(datamodule, 'img_size')}}}' (a multiple of patch_size={patch}; "
                         "position embeddings are resized; the channel count of a pretrained encoder is fixed)")
        super().check_data(datamodule, stage)
        batch = data_hparam(datamodule, "batch_size")
        if stage == "fit" and self.mixup is not None and batch is not None and batch % 2:
            raise ValueError(f"mixup/cutmix pair each image with another of its batch and need an even batch size, "
                             f"got batch_size={batch}: set --data.batch_size {batch + 1}")

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
        # the cosine ends at min_lr (times each layer's decay, as in the official code), not at zero
        return {"optimizer": optimizer, "lr_scheduler": self.schedule(optimizer, h.warmup_epochs, h.min_lr / lr)}
