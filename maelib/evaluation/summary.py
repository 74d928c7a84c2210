"""What a pretraining run learned, said at its end beside what needs no learning (`maelib pretrain` prints it):

- the masked loss on held-out images under fixed masks, beside predicting zero on the same masks;
- when the images have classes: weighted k-NN of the encoder beside the same architecture at random initialisation
  and beside the raw pixels, on the same seeded subsets.

A run that does not clearly beat predict-zero or random initialisation gets a warning that says what to change.
`reference_knn` and `reference_probes` give `maelib knn --references true` and `maelib linprobe --references true`
the same two references for any encoder.
"""

from __future__ import annotations

import copy

import torch

from ..data.sampling import random_subset_loader
from ..model import MaskedAutoencoder
from .features import FeatureDataModule, RawPixels, extract_features
from .knn import knn_accuracy
from .masked_loss import masked_loss_levels
from .probe import PIXELS_PROBE_BASE_LR, PROBE_BASE_LR, linear_probe

LEARNED = 0.95  # a held-out masked loss below 95% of predict-zero's counts as "learned something"


@torch.no_grad()
def pretraining_summary(model: MaskedAutoencoder, datamodule, *, bank: int = 5000, queries: int = 2000,
                        seed: int = 0, masked_loss: bool = True) -> dict[str, float]:
    """The numbers of the end-of-run summary (see the module's docstring), on seeded subsets of the datamodule's
    held-out (val) images and, for k-NN, of its labelled training images (`bank` of them) as the bank. The
    random-initialisation twin is seeded, so two runs compare against the same one. masked_loss=False: k-NN only
    (an encoder trained without the decoder, e.g. contrastive)."""
    model = model.eval()
    held_out = random_subset_loader(datamodule.val_dataloader(), queries, seed)
    summary = {}
    if masked_loss:
        levels = masked_loss_levels(model, held_out, model.config.mask_ratio)
        summary.update(val_masked_loss=levels["val_loss"], predict_zero=levels["target_predict_zero"])
    if not getattr(datamodule, "has_class_labels", False):
        return summary
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin = MaskedAutoencoder(model.config).to(next(model.parameters()).device).eval()
    bank_loader = random_subset_loader(datamodule.labelled_train_dataloader(), bank, seed)
    for name, encoder in (("knn", model), ("knn_random_init", twin), ("knn_pixels", RawPixels(model.config))):
        summary[name] = knn_accuracy(*extract_features(encoder, bank_loader, "mean"),
                                     *extract_features(encoder, held_out, "mean"))
    return summary


def summary_text(summary: dict[str, float]) -> str:
    """The summary as the lines `maelib pretrain` prints, with a warning and what to change where the run did not
    beat predict-zero or random initialisation."""
    lines, warnings = ["what this run learned (held-out images):"], []
    if "val_masked_loss" in summary:
        loss, zero = summary["val_masked_loss"], summary["predict_zero"]
        lines.append(f"  masked loss {loss:.4f} vs predict zero {zero:.4f} ({loss / zero:.0%} of it; fixed masks)")
        if loss >= LEARNED * zero:
            warnings.append("the model fills hidden patches no better than predicting zero")
    if "knn" in summary:
        knn, rand, pixels = summary["knn"], summary["knn_random_init"], summary["knn_pixels"]
        lines.append(f"  k-NN (mean pooling) {knn:.1%} vs the same architecture at random init {rand:.1%} vs raw "
                     f"pixels {pixels:.1%}")
        if knn <= rand:
            warnings.append("its features are no better than a random encoder's on k-NN")
    for warning in warnings:
        lines.append(f"WARNING: {warning}. Train for more steps (--trainer.max_steps, or --trainer.max_epochs on "
                     "a small folder), with a smaller --data.batch_size for more steps per epoch, or a higher "
                     "--model.base_lr (a small folder wants about 1e-3 to 4e-3 at batch 64, not the paper's 1.5e-4 "
                     "for ImageNet at batch 4096)")
    return "\n".join(lines)


def reference_features(data: FeatureDataModule) -> dict[str, dict]:
    """The features of `data`'s two references on the same images (and the same held-out split): its encoder's
    architecture at random initialisation (seeded with the data's seed) and the raw pixels.
    -> {"random_init": {"train": (feats, labels), "test": ...}, "pixels": {...}}"""
    config = data.encoder.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(data.seed)
        twin = MaskedAutoencoder(config)
    features = {}
    for name, encoder in (("random_init", twin), ("pixels", RawPixels(config))):
        reference = copy.copy(data)  # shares the image datamodule, already set up; its own features
        reference.encoder, reference.features = encoder, {}
        reference.setup("fit")
        features[name] = reference.features
    return features


def reference_knn(data: FeatureDataModule, *, k: int, temperature: float) -> dict:
    """k-NN of the two references (`reference_features`) -> {"knn/random_init_acc", "knn/pixels_acc"}."""
    return {f"knn/{name}_acc": knn_accuracy(*f["train"], *f["test"], k=k, temperature=temperature)
            for name, f in reference_features(data).items()}


def reference_probes(data: FeatureDataModule, *, epochs: int, seed: int = 0) -> dict:
    """The package's quick linear probe (`linear_probe`: SGD, BatchNorm, `epochs`) on `data`'s encoder and on its
    two references, the same recipe for all three (the raw pixels at base lr 0.01, 1.0 for encoders, as
    `maelib.experiments.compare.frozen_scores`) -> {"probe/quick_acc", "probe/random_init_acc", "probe/pixels_acc"}."""
    features = {"quick": data.features, **reference_features(data)}
    return {f"probe/{name}_acc": linear_probe(f["train"], f["test"], epochs=epochs, seed=seed,
                                               base_lr=PIXELS_PROBE_BASE_LR if name == "pixels" else PROBE_BASE_LR)
            for name, f in features.items()}
