"""One ablation run: pretrain one MAE variant on Fashion-MNIST, then measure what it learned.

    from maelib.experiments.ablation import run_ablation
    result = run_ablation(mask_ratio=0.25, steps=600, seed=1)   # -> dict, JSON-ready
    result["knn_acc"], result["probe_acc"], result["val_loss"], result["target_predict_zero"]

This is the function behind every row of notebook 8's sweep (`maelib.experiments.sweep` runs it once per setting, in
parallel processes or as SLURM jobs) and behind the child notebook `notebooks/sweeps/ablation_run.ipynb`,
which shows the same steps one cell at a time. A run:

1. pretrains `arch` (the mini ViT by default) for `steps` optimiser steps with one variant of the paper's
   design choices (Table 1: mask ratio, decoder depth and width, target, mask sampling, `[M]` tokens in the
   encoder, augmentation), with the paper's AdamW, warm-up and cosine schedule;
2. measures the masked-patch loss on test images under fixed masks drawn with the variant's own strategy,
   beside what it costs to learn nothing (`target_predict_zero`: zeros in the target space, the dataset's mean pixel
   or, for normalised pixels, each patch's own mean) and, for reference, to borrow each hidden patch's true
   mean (`target_patch_mean`); a run whose loss is not clearly below predict-zero learned no more than the mean;
3. evaluates the frozen encoder on unmasked images of a fixed subset, with the paper's protocol: the cls
   token's features, a linear probe (BatchNorm + linear, `linear_probe_head`) and a weighted k-NN (k = 20);
   and the same on the mean of the patch tokens (`*_mean`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ..data import MAEDataModule
from ..evaluation.features import extract_features
from ..evaluation.knn import knn_accuracy
from ..evaluation.masked_loss import masked_loss_levels
from ..evaluation.probe import linear_probe
from ..train.modules import FineTuneModule, MAEPretrainModule
from ..train.trainer import quiet_trainer
from ..weights.checkpoint import save_model

DATA_SEED = 0  # the same images in every run of a sweep (and the same validation masks: VAL_MASK_SEED)
LEARNED_MARGIN = 0.95  # "learned": a masked-patch loss below 95% of the predict-zero level
PROBE_EPOCHS = 40  # the package's one probe (maelib.evaluation.probe), run longer: 2,000 features make 7 steps an epoch
AUGMENTATIONS = {"none": "none", "crop": "mae", "crop+jitter": "mae_color"}  # the paper's Table 1e names


def finetune_accuracy(model, *, epochs: int, images: int, test_images: int, batch_size: int = 128,
                      base_lr: float = 2e-3, seed: int = 0) -> float:
    """Test accuracy (0-1) after fine-tuning a copy of `model`'s encoder end to end on `images` labelled
    training images for `epochs` epochs, with notebook 6's recipe (global average pooling, layer decay 0.75,
    drop path 0.1, label smoothing 0.1, AdamW with warm-up and cosine; flips only). The model is untouched."""
    L.seed_everything(seed, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, Path(tmp) / "mae.safetensors")
        module = FineTuneModule(checkpoint=str(path), num_classes=10, global_pool="avg", base_lr=base_lr,
                                layer_decay=0.75, drop_path=0.1, weight_decay=0.05, label_smoothing=0.1,
                                warmup_epochs=min(5.0, epochs / 4))
    c = model.config
    data = MAEDataModule(img_size=c.img_size, in_chans=c.in_chans, batch_size=min(batch_size, images),
                         train_subset=images, test_subset=test_images, augment="flip", seed=DATA_SEED)
    quiet_trainer(max_epochs=epochs).fit(module, datamodule=data)
    net = module.net.eval()
    device = next(net.parameters()).device
    correct = total = 0
    with torch.no_grad():
        for x, y in data.test_dataloader():
            correct += (net(x.to(device)).argmax(1).cpu() == y).sum().item()
            total += len(y)
    return correct / total


def run_ablation(*, mask_ratio: float = 0.75, decoder_depth: int = 1, decoder_embed_dim: int = 96,
                 norm_pix_loss: bool = True, masking: str = "random", encoder_mask_tokens: bool = False,
                 augmentation: str = "crop", steps: int = 600, batch_size: int = 128, base_lr: float = 4e-3,
                 warmup_fraction: float = 0.1, train_images: int = 20000, eval_train_images: int = 2000,
                 eval_test_images: int = 1000, seed: int = 0, arch: str = "mae_vit_mini_patch4_28",
                 arch_overrides: dict | None = None, finetune_epochs: int = 0, finetune_images: int = 5000,
                 threads: int | None = None) -> dict[str, Any]:
    """Pretrain one variant for `steps` steps (0: none, the random-initialisation reference) and evaluate it.

    base_lr is scaled by batch_size / 256, as in the paper. augmentation: "none", "crop" (random resized crop +
    flip, the paper's default) or "crop+jitter". seed changes the training randomness only (initialisation,
    masks, batch order, augmentation): every run sees the same images and is scored on the same ones.
    finetune_epochs: also fine-tune a copy of the encoder for this many epochs on `finetune_images` labelled
    images (`finetune_acc`; 0: skip, the default: it costs about as much as the pretraining).
    threads: torch's intra-op threads for this process (1 when two runs share two cores). -> a JSON-ready dict.
    """


    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}, got {augmentation!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    L.seed_everything(seed, verbose=False)
    variant = dict(mask_ratio=mask_ratio, decoder_depth=decoder_depth, decoder_embed_dim=decoder_embed_dim,
                   norm_pix_loss=norm_pix_loss, masking=masking, encoder_mask_tokens=encoder_mask_tokens)
    warmup_epochs = warmup_fraction * steps * batch_size / train_images
    module = MAEPretrainModule(arch, arch_overrides={**(arch_overrides or {}), **variant}, base_lr=base_lr,
                               warmup_epochs=warmup_epochs)
    data = MAEDataModule(train_subset=train_images, test_subset=eval_test_images, batch_size=batch_size,
                         augment=AUGMENTATIONS[augmentation], seed=DATA_SEED)
    data.setup()  # load the images now, so that the timing below is training only

    trainer = quiet_trainer(max_steps=steps)
    start = time.perf_counter()
    if steps:
        trainer.fit(module, datamodule=data)
    train_seconds = time.perf_counter() - start
    model = module.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()

    levels = masked_loss_levels(model, data.test_dataloader(), mask_ratio)
    probe_data = MAEDataModule(train_subset=eval_train_images, test_subset=eval_test_images, augment="none",
                               batch_size=min(256, eval_train_images), seed=DATA_SEED)
    features = {pool: (extract_features(model, probe_data.labelled_train_dataloader(), pool),
                       extract_features(model, probe_data.test_dataloader(), pool)) for pool in ("cls", "mean")}
    with torch.no_grad():
        c = model.config
        probe = torch.zeros(1, c.in_chans, c.img_size, c.img_size, device=next(model.parameters()).device)
        encoder_tokens = model.forward_encoder(probe, mask_ratio)[0].shape[1]  # cls + kept (or all) patches
    finetune_acc = (finetune_accuracy(model, epochs=finetune_epochs, images=finetune_images,
                                      test_images=eval_test_images, seed=seed) if finetune_epochs else None)
    return dict(
        **variant, augmentation=augmentation, seed=seed, steps=steps, batch_size=batch_size, base_lr=base_lr,
        train_images=train_images, num_patches=model.config.num_patches, encoder_tokens=encoder_tokens,
        knn_acc=knn_accuracy(*features["cls"][0], *features["cls"][1], k=20),
        probe_acc=linear_probe(*features["cls"], epochs=PROBE_EPOCHS, seed=seed),
        knn_acc_mean=knn_accuracy(*features["mean"][0], *features["mean"][1], k=20),
        probe_acc_mean=linear_probe(*features["mean"], epochs=PROBE_EPOCHS, seed=seed), finetune_acc=finetune_acc,
        **levels, learned=None if steps == 0 else bool(levels["val_loss"] < LEARNED_MARGIN * levels["target_predict_zero"]),
        train_loss=trainer.callback_metrics["train/loss"].item() if steps else None,
        train_seconds=round(train_seconds, 2),
        images_per_second=round(steps * batch_size / train_seconds, 1) if steps else None,
    )
