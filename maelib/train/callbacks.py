"""Lightning callbacks and plugins: an online k-NN accuracy and reconstruction figures that let people watch
pretraining work; checkpoints/last.ckpt rewritten often (`LastCheckpoint`), and atomically (`AtomicCheckpointIO`)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from ..data import random_subset_loader
from ..evaluation.features import extract_features
from ..evaluation.knn import knn_accuracy
from ..files import atomic_write, remove_stale_temporaries
from ..model import check_pool
from ..rng import seeded_noise


class KNNMonitor(L.Callback):
    """Log `knn/acc`: weighted k-NN accuracy of the frozen encoder on held-out labelled data, every few epochs.

    The memory bank is a seeded random `train_samples` of the datamodule's labelled (un-augmented) training
    images, the queries a seeded random `val_samples` of its validation images: random across the whole split,
    since an image folder lists its images class by class (the first 5,000 ImageNet images span 4 classes).
    The same subsets every epoch. Every process computes the same number, so it works unchanged under DDP.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        train_samples: int | None = 5000,
        val_samples: int | None = 2000,
        k: int = 20,
        temperature: float = 0.07,
        pool: str = "cls",
        seed: int = 0,
    ) -> None:
        self.every_n_epochs, self.train_samples, self.val_samples = every_n_epochs, train_samples, val_samples
        self.k, self.temperature, self.pool, self.seed = k, temperature, check_pool(pool), seed
        self.said_off = False  # "the monitor is off" is said once per run, not every epoch

    def features(self, dm, model) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """(bank features, labels), (query features, labels) of `model` on the datamodule `dm`'s subsets."""
        bank = random_subset_loader(dm.labelled_train_dataloader(), self.train_samples, self.seed)
        queries = random_subset_loader(dm.val_dataloader(), self.val_samples, self.seed)
        return extract_features(model, bank, self.pool), extract_features(model, queries, self.pool)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule
        if not getattr(dm, "has_class_labels", True):  # an unlabelled folder, the photos, or one class
            if not self.said_off:
                rank_zero_info("the k-NN monitor is off: these images have no classes to tell apart (an unlabelled "
                               "folder, one class, or the photos' names), so its accuracy would mean nothing")
                self.said_off = True
            return
        bank, queries = self.features(dm, pl_module.model)
        acc = knn_accuracy(*bank, *queries, k=self.k, temperature=self.temperature)
        pl_module.log("knn/acc", acc, prog_bar=True)


class ReconstructionLogger(L.Callback):
    """Every few epochs, save a reconstruction figure of fixed validation images with fixed masks
    (`<run dir>/reconstructions/epoch_NNN.png`), and add it to TensorBoard when that logger is used. The images
    are a seeded random `num_images` of the validation split (an image folder's first ones share a class)."""

    def __init__(self, every_n_epochs: int = 1, num_images: int = 8, seed: int = 0) -> None:
        self.every_n_epochs, self.num_images, self.seed = every_n_epochs, num_images, seed

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        from ..analysis.viz import save_figure, show_reconstruction

        dm = trainer.datamodule
        imgs = next(iter(random_subset_loader(dm.val_dataloader(), self.num_images, self.seed)))[0][: self.num_images]
        imgs = imgs.to(pl_module.device)
        model = pl_module.model
        ratio = getattr(pl_module, "mask_ratio", model.config.mask_ratio)  # the training ratio
        noise = seeded_noise(model, len(imgs), ratio, self.seed)  # and the model's masking strategy
        fig = show_reconstruction(model, imgs, ratio, noise=noise, mean=dm.mean, std=dm.std, max_images=self.num_images)
        fig.suptitle(f"epoch {trainer.current_epoch + 1}, step {trainer.global_step}")
        save_figure(fig, Path(trainer.default_root_dir) / "reconstructions" / f"epoch_{trainer.current_epoch + 1:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
                logger.experiment.add_figure("reconstructions", fig, global_step=trainer.global_step)
        import matplotlib.pyplot as plt

        plt.close(fig)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written atomically: torch.save to a temporary file in the same folder, flushed to
    disk, then renamed over the target (`maelib.files.atomic_write`). A kill at any point leaves either the
    old checkpoint or the new one, whole. (Lightning's own writer stages the file in the system's temporary
    folder and moves it, which is a copy -- not atomic -- when that is another file system.)

        trainer = L.Trainer(plugins=[AtomicCheckpointIO()], ...)
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
        remove_stale_temporaries(path)  # left by earlier runs killed mid-save (only rank 0 writes checkpoints)


class LastCheckpoint(L.Callback):
    """checkpoints/last.ckpt, rewritten every `every_n_train_steps` optimiser steps (0: never mid-epoch) and at
    the end of every training epoch (after its validation), so that a killed run loses little. Keeps no other
    checkpoint. Written with the Trainer's public `save_checkpoint`, which every process calls and the
    Trainer's CheckpointIO (maelib's atomic one) writes on one."""

    def __init__(self, dirpath, every_n_train_steps: int = 100) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"checkpoint_every_n_steps must be >= 0, got {every_n_train_steps}")
        self.path, self.every = Path(dirpath) / "last.ckpt", every_n_train_steps
        self._saved_at: int | None = None  # the optimiser step of the last save: never twice at one step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or self._saved_at == trainer.global_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # a whole checkpoint: optimiser, loops, callbacks
        self._saved_at = trainer.global_step
