"""How well an MAE fills in hidden patches, beside what filling them in costs without learning: the masked loss on
held-out images under fixed masks, and the predict-zero level in the same target space."""

from __future__ import annotations

import torch

from ..rng import seeded_noise

VAL_MASK_SEED = 1234  # fixed masks: the same for every run and every model scored


@torch.no_grad()
def masked_loss_levels(model, loader, mask_ratio: float, seed: int = VAL_MASK_SEED) -> dict[str, float]:
    """The model's masked-patch loss on `loader`'s images under seeded masks of its own strategy, and two levels
    in the same target space that need no learning: `target_predict_zero` (`MaskedAutoencoder.trivial_patch_loss`: a
    prediction of zeros, which is the dataset's mean pixel, for normalised-pixel targets each patch's own mean, the
    mean PCA coordinates; for tokens, the training tokens' frequencies) and, for pixel targets, `target_patch_mean`
    (each hidden patch predicted by its true mean, borrowed; equal to target_predict_zero for normalised-pixel
    targets; None for the others). -> dict of floats (or None)."""
    device = next(model.parameters()).device
    sums = dict(val_loss=0.0, target_predict_zero=0.0, target_patch_mean=0.0)
    count = 0
    pixels = model.config.target == "pixels"
    for i, (x, _) in enumerate(loader):
        x = x.to(device)
        noise = seeded_noise(model, len(x), mask_ratio, seed + i)
        loss, _, mask = model(x, mask_ratio=mask_ratio, noise=noise)
        hidden = mask.sum()
        sums["val_loss"] += loss.item() * len(x)  # the same number of hidden patches in every image
        sums["target_predict_zero"] += ((model.trivial_patch_loss(x) * mask).sum() / hidden).item() * len(x)
        if pixels:
            target = model.loss_target(x).float()  # (N, L, p*p*C), normalised per patch for norm-pix
            centred = target - target.mean(-1, keepdim=True)
            sums["target_patch_mean"] += ((centred.pow(2).mean(-1) * mask).sum() / hidden).item() * len(x)
        count += len(x)
    return {k: v / count if pixels or k != "target_patch_mean" else None for k, v in sums.items()}
