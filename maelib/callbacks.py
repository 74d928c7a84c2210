"""Callbacks that let people watch pretraining work: an online k-NN accuracy and reconstruction figures."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from .data import random_subset_loader
from .evaluate import extract_features, knn_accuracy


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
        self.k, self.temperature, self.pool, self.seed = k, temperature, pool, seed

    def features(self, dm, model) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """(bank features, labels), (query features, labels) of `model` on the datamodule `dm`'s subsets."""
        bank = random_subset_loader(dm.labelled_train_dataloader(), self.train_samples, self.seed)
        queries = random_subset_loader(dm.val_dataloader(), self.val_samples, self.seed)
        return extract_features(model, bank, self.pool), extract_features(model, queries, self.pool)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule
        if not getattr(dm, "has_class_labels", True):  # e.g. dataset="photos": nothing to classify
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
        from .viz import save_figure, show_reconstruction

        dm = trainer.datamodule
        imgs = next(iter(random_subset_loader(dm.val_dataloader(), self.num_images, self.seed)))[0][: self.num_images]
        imgs = imgs.to(pl_module.device)
        model = pl_module.model
        g = torch.Generator().manual_seed(self.seed)
        ratio = getattr(pl_module.hparams, "mask_ratio", None)  # the training ratio, else the model's default
        ratio = model.config.mask_ratio if ratio is None else ratio
        noise = model.make_noise(len(imgs), ratio, device=imgs.device, generator=g)  # and its masking strategy
        fig = show_reconstruction(model, imgs, ratio, noise=noise, mean=dm.mean, std=dm.std, max_images=self.num_images)
        fig.suptitle(f"epoch {trainer.current_epoch + 1}, step {trainer.global_step}")
        save_figure(fig, Path(trainer.default_root_dir) / "reconstructions" / f"epoch_{trainer.current_epoch + 1:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
                logger.experiment.add_figure("reconstructions", fig, global_step=trainer.global_step)
        import matplotlib.pyplot as plt

        plt.close(fig)
