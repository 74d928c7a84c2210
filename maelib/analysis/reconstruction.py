"""The numbers behind reconstruction pictures: what the model fills in, and how wrong it is (pure functions).

Everything here returns tensors or arrays; `maelib.analysis.viz` turns them into figures. Model-driven functions run
in eval mode under `torch.no_grad()` and put the model back in the mode it was in.

    out = reconstruct(model, imgs, mask_ratio=0.75)           # masked, reconstruction, pasted, mask, loss
    err, mask = patch_errors(model, imgs, 0.75, noise)        # (N, L) per-patch error, 1 = hidden
    curve = error_vs_mask_ratio(model, imgs, [0.25, 0.5, 0.75]) # hidden-patch error per test ratio

Shapes: N images, L = grid**2 patches, T tokens (1 + L unmasked, 1 + L_keep masked), D feature width.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from ..masking import check_mask_ratio
from ..patches import mask_to_image  # noqa: F401 (public here too: maelib.analysis.mask_to_image)
from ..rng import seeded_noise  # noqa: F401 (public here too: maelib.analysis.seeded_noise)


# ---------------------------------------------------------------------------------------------- helpers
@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no_grad inside the `with`; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (images are moved there)."""
    return next(model.parameters()).device


def target_patches(model: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    """What the model is trained to predict: (N, L, p*p*C) pixels, per-patch normalised for norm_pix models; PCA
    coordinates or token indices for those targets (`MaskedAutoencoder.loss_target`)."""
    return model.loss_target(imgs)


# ---------------------------------------------------------------------------------------------- reconstruction
def reconstruct(
    model: nn.Module, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Run the MAE once and return everything needed to show it. imgs: (N, C, H, W) in model input space.

    Returns a dict of tensors (on the model's device):
      masked (N, C, H, W)          the input with hidden patches set to 0 (the dataset mean if inputs are normalised)
      reconstruction (N, C, H, W)  the prediction of every patch as an image; norm_pix predictions are scaled
                                   back with each true patch's mean and std (see MaskedAutoencoder.pred_to_images)
      pasted (N, C, H, W)          reconstruction with the visible patches copied from the input
      mask (N, L)                  1 = hidden;  mask_map (N, 1, H, W) the same per pixel
      pred (N, L, p*p*C)           raw predictions (target space);  loss () the model's loss
    """
    with evaluating(model):
        imgs = imgs.to(model_device(model))
        loss, pred, mask = model(imgs, mask_ratio, noise)
        recon = model.pred_to_images(pred, imgs)
        mask_map = mask_to_image(mask, model.config.patch_size).to(imgs.dtype)
        return dict(
            masked=imgs * (1 - mask_map),
            reconstruction=recon,
            pasted=model.paste_visible(imgs, recon, mask),
            mask=mask,
            mask_map=mask_map,
            pred=pred,
            loss=loss,
        )


def patch_errors(
    model: nn.Module,
    imgs: torch.Tensor,
    mask_ratio: float | None = None,
    noise: torch.Tensor | None = None,
    space: str = "target",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch reconstruction error (the model's loss per patch: MSE, cross-entropy for tokens) and the mask. -> errors (N, grid, grid), mask (N, grid, grid) with 1 = hidden.

    space="target": against what the model is trained on (normalised patches for norm_pix models); the mean
    over hidden patches is then the model's loss. space="pixel": against the input pixels, with norm_pix
    predictions un-normalised by the true patch statistics (so only shape/texture errors remain).
    Errors are given for every patch; the visible ones are usually near-trivial for a trained model.
    """
    if space not in ("target", "pixel"):
        raise ValueError(f"space must be 'target' or 'pixel', got {space!r}")
    out = reconstruct(model, imgs, mask_ratio, noise)
    with torch.no_grad():
        imgs = imgs.to(out["pred"].device)
        if space == "target":
            err = model.patch_loss(imgs, out["pred"])  # (N, L): squared error, or cross-entropy for tokens
        else:
            err = (model.patchify(out["reconstruction"]) - model.patchify(imgs)).float().pow(2).mean(dim=-1)
    g = model.config.grid_size
    return err.reshape(-1, g, g), out["mask"].reshape(-1, g, g)


def error_vs_mask_ratio(
    model: nn.Module,
    imgs: torch.Tensor,
    ratios: Sequence[float] = (0.25, 0.5, 0.75, 0.9),
    repeats: int = 3,
    seed: int = 0,
    space: str = "target",
) -> torch.Tensor:
    """Mean MSE over hidden patches at each mask ratio, averaged over `repeats` seeded masks. -> (len(ratios),)

    Repeat k uses the noise of seed + k at every ratio, so results are reproducible and comparable.
    A ratio that hides nothing (0.0) gives NaN.
    """
    means = []
    for ratio in ratios:
        ratio = check_mask_ratio(ratio)
        per_repeat = []
        for k in range(repeats):
            noise = seeded_noise(model, imgs.shape[0], ratio, seed + k)
            err, mask = patch_errors(model, imgs, ratio, noise, space=space)
            per_repeat.append((err * mask).sum() / mask.sum() if mask.sum() > 0 else torch.tensor(float("nan")))
        means.append(torch.stack([v.cpu() for v in per_repeat]).mean())
    return torch.stack(means)
