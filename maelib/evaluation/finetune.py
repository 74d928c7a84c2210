"""Fine-tuning as a score: the accuracy an encoder reaches when a copy of it is trained end to end on a few
labelled images, with notebook 6's recipe. The ablation study scores every run with it; the comparison of
pretraining methods (`maelib.experiments.compare`) draws its label-efficiency curves with it.

    acc = finetune_accuracy(model, epochs=5, images=5000, test_images=2000)          # -> 0-1
    acc = finetune_accuracy(model, steps=150, images=50, test_images=2000, subset_seed=2)   # 1% of 5,000 labels

`maelib finetune` (the Lightning CLI) is the same module for whole runs; this is the in-process form for studies.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import lightning as L
import torch

from ..data import MAEDataModule
from ..train.modules import FineTuneModule
from ..train.trainer import quiet_trainer
from ..weights.checkpoint import save_model


def probe_as_linear(probe_head: torch.nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's probe head (BatchNorm without affine, in eval mode, then Linear) folded into one linear map:
    -> (weight (classes, D), bias (classes,)) with weight @ x + bias = probe_head(x) for features x (D,)."""
    norm, linear = probe_head[0], probe_head[1]
    scale = (norm.running_var + norm.eps).rsqrt()  # (D,)
    weight = linear.weight * scale  # (classes, D): the whitening's scale moved into the weights
    return weight.detach().clone(), (linear.bias - weight @ norm.running_mean).detach().clone()


def set_head_from_probe(net: torch.nn.Module, probe_head: torch.nn.Sequential) -> None:
    """Start a classifier's head (timm's `head`, on global-average-pooled tokens) from a linear probe trained on
    the same encoder's mean-pooled features (the vector timm's fc_norm gives its head): "linear probe, then
    fine-tune" (Kumar et al., 2022). Before any training step the classifier predicts what the probe predicts."""
    weight, bias = probe_as_linear(probe_head)
    with torch.no_grad():
        net.head.weight.copy_(weight)
        net.head.bias.copy_(bias)


def finetune_accuracy(model, *, images: int, test_images: int | None, epochs: int | None = None,
                      steps: int | None = None, batch_size: int = 128, base_lr: float = 2e-3,
                      layer_decay: float = 0.75, seed: int = 0, subset_seed: int = 0,
                      holdout: int | None = None, head: torch.nn.Sequential | None = None) -> float:
    """Test accuracy (0-1) after fine-tuning a copy of `model`'s encoder end to end on a seeded `images` of the
    labelled training images (global average pooling, layer decay, drop path 0.1, label smoothing 0.1, AdamW with
    warm-up and cosine; flips only). The model is untouched.

    epochs, or steps: how long (steps: that many optimiser steps whatever the number of images, as epochs =
    steps x batch / images rounded up, so 50 labels get as many updates as 5,000). seed: the head's
    initialisation, the order and the flips; subset_seed: which images are the labelled ones (and which
    test_images are scored: None scores all 10,000). holdout: score on that many held-out training images
    instead of the test set. head: a linear probe's head trained on this encoder's mean-pooled features of the same
    labelled images (`linear_probe(..., return_head=True)`), to start from instead of a random head
    (`set_head_from_probe`)."""
    if (epochs is None) == (steps is None):
        raise ValueError("give the fine-tuning's length as epochs or as steps (one of them)")
    batch = min(batch_size, images)
    epochs = epochs if steps is None else max(1, math.ceil(steps * batch / images))
    L.seed_everything(seed, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, Path(tmp) / "mae.safetensors")
        module = FineTuneModule(checkpoint=str(path), num_classes=10, global_pool="avg", base_lr=base_lr,
                                layer_decay=layer_decay, drop_path=0.1, weight_decay=0.05, label_smoothing=0.1,
                                warmup_epochs=min(5.0, epochs / 4))
    if head is not None:
        set_head_from_probe(module.net, head)
    c = model.config
    data = MAEDataModule(img_size=c.img_size, in_chans=c.in_chans, batch_size=batch, train_subset=images,
                         test_subset=test_images, augment="flip", seed=subset_seed, holdout=holdout)
    quiet_trainer(max_epochs=epochs).fit(module, datamodule=data)
    net = module.net.eval()
    device = next(net.parameters()).device
    correct = total = 0
    with torch.no_grad():
        for x, y in data.test_dataloader():
            correct += (net(x.to(device)).argmax(1).cpu() == y).sum().item()
            total += len(y)
    return correct / total
