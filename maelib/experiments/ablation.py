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
   and the same on the mean of the patch tokens (`*_mean`);
4. optionally fine-tunes a copy of the encoder end to end (`finetune_epochs`, notebook 6's recipe), and scores
   the same at chosen steps along the way (`score_at_steps`: the pretraining-length curve from one run).

`holdout=N` keeps a seeded N of the training images out of pretraining and scores on them instead of the test
set: the way to choose a budget or a recipe without looking at the test images.
"""

from __future__ import annotations

import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch

from ..data import MAEDataModule
from ..evaluation.features import RawPixels, extract_features
from ..evaluation.finetune import finetune_accuracy
from ..evaluation.knn import knn_accuracy
from ..evaluation.masked_loss import masked_loss_levels
from ..evaluation.probe import linear_probe
from ..registry import model_config
from ..train.modules import MAEPretrainModule
from ..train.trainer import quiet_trainer

DATA_SEED = 0  # the same images in every run of a sweep (and the same validation masks: VAL_MASK_SEED)
LEARNED_MARGIN = 0.95  # "learned": a masked-patch loss below 95% of the predict-zero level
PROBE_EPOCHS = 40  # the package's one probe (maelib.evaluation.probe), run longer: 2,000 features make 7 steps an epoch
AUGMENTATIONS = {"none": "none", "crop": "mae", "crop+jitter": "mae_color"}  # the paper's Table 1e names
# Table 1c's reconstruction targets, as model config fields. PCA and tokens encode the normalised patches, so that
# only the target's form differs from the norm-pix baseline (maelib.targets); `target_dim` defaults per target.
TABLE_1C_TARGETS = {"pixel": dict(norm_pix_loss=False), "norm_pix": dict(norm_pix_loss=True),
           "pca": dict(norm_pix_loss=True, target="pca"), "tokens": dict(norm_pix_loss=True, target="tokens")}
TARGET_DIMS = {"pca": 8, "tokens": 64}  # half of a 4x4 grey patch's 16 values; a 64-word codebook


def target_fields(target: str, target_dim: int | None = None) -> dict:
    """A Table 1c target name ("pixel", "norm_pix", "pca", "tokens") -> the model config fields that build it."""
    if target not in TABLE_1C_TARGETS:
        raise ValueError(f"target must be one of {sorted(TABLE_1C_TARGETS)}, got {target!r}")
    dim = TARGET_DIMS.get(target, 0) if target_dim is None else target_dim
    return {**TABLE_1C_TARGETS[target], **({"target_dim": dim} if target in TARGET_DIMS else {})}


def score_encoder(model, *, mask_ratio: float, eval_train_images: int = 2000, eval_test_images: int = 1000,
                  holdout: int | None = None, finetune_epochs: int = 0, finetune_images: int = 5000,
                  seed: int = 0) -> dict[str, Any]:
    """Everything one run is judged by, on images it did not train on (the test set, or `holdout` training
    images): the masked loss beside its trivial levels (`masked_loss_levels`), k-NN and the package's linear probe
    on the frozen cls token and on the mean of the patch tokens (`*_mean`), and, with finetune_epochs, the
    accuracy after fine-tuning a copy. The model is put back in training mode if it was; the global random state
    is restored, so scoring in the middle of a run does not change the rest of it. -> a JSON-ready dict."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    was_training = model.training
    model.eval()
    c = model.config
    data = MAEDataModule(img_size=c.img_size, in_chans=c.in_chans, train_subset=eval_train_images,
                         test_subset=eval_test_images, augment="none", batch_size=min(256, eval_train_images),
                         seed=DATA_SEED, holdout=holdout)
    levels = masked_loss_levels(model, data.test_dataloader(), mask_ratio)
    features = {pool: (extract_features(model, data.labelled_train_dataloader(), pool),
                       extract_features(model, data.test_dataloader(), pool)) for pool in ("cls", "mean")}
    scores = dict(
        knn_acc=knn_accuracy(*features["cls"][0], *features["cls"][1], k=20),
        probe_acc=linear_probe(*features["cls"], epochs=PROBE_EPOCHS, seed=seed),
        knn_acc_mean=knn_accuracy(*features["mean"][0], *features["mean"][1], k=20),
        probe_acc_mean=linear_probe(*features["mean"], epochs=PROBE_EPOCHS, seed=seed),
        finetune_acc=(finetune_accuracy(model, epochs=finetune_epochs, images=finetune_images, seed=seed,
                                        test_images=eval_test_images, holdout=holdout, subset_seed=DATA_SEED)
                      if finetune_epochs else None),
        **levels)
    model.train(was_training)
    torch.set_rng_state(states[0]), np.random.set_state(states[1]), random.setstate(states[2])
    return scores


PIXEL_PROBE_BASE_LR = 0.01  # the probe's base lr on raw pixels, chosen on held-out images (the zoo cards' notes)


def score_pixels(*, eval_train_images: int = 2000, eval_test_images: int = 1000, holdout: int | None = None,
                 seed: int = 0) -> dict[str, float]:
    """The raw-pixel reference on the same images as `score_encoder`: k-NN and the linear probe on the normalised
    pixels themselves (`RawPixels`), the baseline every frozen-feature score must beat to mean anything."""
    data = MAEDataModule(train_subset=eval_train_images, test_subset=eval_test_images, augment="none",
                         batch_size=min(256, eval_train_images), seed=DATA_SEED, holdout=holdout)
    pixels = RawPixels(model_config("mae_vit_mini_patch4_28"))  # 28 px, one channel: Fashion-MNIST's size
    train, test = extract_features(pixels, data.labelled_train_dataloader()), extract_features(pixels, data.test_dataloader())
    return dict(knn_acc=knn_accuracy(*train, *test, k=20),
                probe_acc=linear_probe(train, test, epochs=PROBE_EPOCHS, base_lr=PIXEL_PROBE_BASE_LR, seed=seed))


class ScoreAtSteps(L.Callback):
    """Scores the model being pretrained (`score_encoder`) after the given optimiser steps: the
    pretraining-length curve (the paper's Figure 7) read from one run. `scores`: one dict per step, in order."""

    def __init__(self, steps: list[int], **score_kwargs) -> None:
        self.steps, self.kwargs, self.scores = sorted(set(steps)), score_kwargs, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in self.steps and not any(s["step"] == trainer.global_step for s in self.scores):
            start = time.perf_counter()
            scores = score_encoder(pl_module.model, **self.kwargs)
            self.scores.append(dict(step=trainer.global_step, **scores,
                                    score_seconds=round(time.perf_counter() - start, 2)))


def run_ablation(*, mask_ratio: float = 0.75, decoder_depth: int = 1, decoder_embed_dim: int = 96,
                 target: str = "norm_pix", target_dim: int | None = None, masking: str = "random", encoder_mask_tokens: bool = False,
                 augmentation: str = "crop", steps: int = 600, batch_size: int = 128, base_lr: float = 4e-3,
                 warmup_fraction: float = 0.1, train_images: int | None = 20000, eval_train_images: int = 2000,
                 eval_test_images: int = 1000, seed: int = 0, arch: str = "mae_vit_mini_patch4_28",
                 arch_overrides: dict | None = None, embed_dim: int | None = None, finetune_epochs: int = 0, finetune_images: int = 5000,
                 holdout: int | None = None, score_at_steps: list[int] | None = None,
                 threads: int | None = None) -> dict[str, Any]:
    """Pretrain one variant for `steps` steps (0: none, the random-initialisation reference) and evaluate it.

    target: "pixel", "norm_pix" (the paper's two), "pca" or "tokens" (`target_fields`; target_dim: PCA components
    or tokens, default `TARGET_DIMS`). base_lr is scaled by batch_size / 256, as in the paper. augmentation: "none", "crop" (random resized crop +
    flip, the paper's default) or "crop+jitter". seed changes the training randomness only (initialisation,
    masks, batch order, augmentation): every run sees the same images and is scored on the same ones.
    embed_dim: the encoder's width (one head per 32 channels), over `arch` and `arch_overrides`: the model-size
    factor. train_images: a seeded subset of the training images (None: all of them, less the holdout).
    finetune_epochs: also fine-tune a copy of the encoder for this many epochs on `finetune_images` labelled
    images (`finetune_acc`; 0: skip, the default: it costs about as much as the pretraining).
    holdout: pretrain without a seeded N of the training images and score on them instead of the test set.
    score_at_steps: also score (all of the above) after these steps of this run -> "by_step", one dict each.
    threads: torch's intra-op threads for this process (1 when two runs share two cores). -> a JSON-ready dict.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}, got {augmentation!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    L.seed_everything(seed, verbose=False)
    variant = dict(mask_ratio=mask_ratio, decoder_depth=decoder_depth, decoder_embed_dim=decoder_embed_dim,
                   masking=masking, encoder_mask_tokens=encoder_mask_tokens)
    fields = target_fields(target, target_dim)
    if embed_dim is not None:
        fields.update(embed_dim=embed_dim, num_heads=max(1, embed_dim // 32))
    data = MAEDataModule(train_subset=train_images, test_subset=eval_test_images, batch_size=batch_size,
                         augment=AUGMENTATIONS[augmentation], seed=DATA_SEED, holdout=holdout)
    data.setup()  # load the images now, so that the timing below is training only
    pretrain_images = len(data.train_set)
    warmup_epochs = warmup_fraction * steps * batch_size / pretrain_images
    module = MAEPretrainModule(arch, arch_overrides={**(arch_overrides or {}), **variant, **fields}, base_lr=base_lr,
                               warmup_epochs=warmup_epochs)
    score_kwargs = dict(mask_ratio=mask_ratio, eval_train_images=eval_train_images, holdout=holdout,
                        eval_test_images=eval_test_images, finetune_epochs=finetune_epochs,
                        finetune_images=finetune_images, seed=seed)
    along = ScoreAtSteps([s for s in score_at_steps or [] if 0 < s < steps], **score_kwargs)
    trainer = quiet_trainer(max_steps=steps, callbacks=[along])
    start = time.perf_counter()
    if steps:
        trainer.fit(module, datamodule=data)
    train_seconds = time.perf_counter() - start - sum(s["score_seconds"] for s in along.scores)
    model = module.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    if not model.target_is_fitted:  # steps=0: the random-initialisation reference still needs its target's levels
        model.fit_target(torch.stack([data.labelled_train_set[i][0] for i in range(min(2000, pretrain_images))]))
    with torch.no_grad():
        c = model.config
        probe = torch.zeros(1, c.in_chans, c.img_size, c.img_size, device=next(model.parameters()).device)
        encoder_tokens = model.forward_encoder(probe, mask_ratio)[0].shape[1]  # cls + kept (or all) patches
    start = time.perf_counter()
    scores = score_encoder(model, **score_kwargs)
    score_seconds = time.perf_counter() - start
    return dict(
        **variant, target=target, target_dim=fields.get("target_dim"), embed_dim=model.config.embed_dim, augmentation=augmentation, seed=seed, steps=steps, batch_size=batch_size, base_lr=base_lr,
        train_images=pretrain_images, epochs=round(steps * batch_size / pretrain_images, 3), holdout=holdout,
        num_patches=model.config.num_patches, encoder_tokens=encoder_tokens,
        encoder_params=model.num_params("encoder"), **scores,
        learned=None if steps == 0 else bool(scores["val_loss"] < LEARNED_MARGIN * scores["target_predict_zero"]),
        train_loss=trainer.callback_metrics["train/loss"].item() if steps else None,
        train_seconds=round(train_seconds, 2), score_seconds=round(score_seconds, 2),
        images_per_second=round(steps * batch_size / train_seconds, 1) if steps else None,
        by_step=along.scores,
    )
