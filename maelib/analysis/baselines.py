"""Honest baselines for a reconstruction: what hidden patches cost without a model, or with borrowed information.

    errors = reconstruction_baselines(model, imgs, mask_ratio=0.75)   # {"model": ..., "predict_zero": ..., ...}

(Input space: `predict_zero` here is zeros in normalised pixels. The ablations score in the *target* space
instead, `target_predict_zero` in maelib.experiments.ablation: the same for pixel targets, per-patch for norm-pix.)

Every number is a mean squared error over the hidden patches, in the model's input space (normalised pixels),
so the model's own error can stand beside them: predict zero (the dataset's mean colour), each image's mean
visible colour, the visible pixels interpolated into the holes, and (borrowed) each hidden patch's true mean.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..patches import patchify
from .reconstruction import mask_to_image, reconstruct


def mean_colour_baseline_mse(imgs: torch.Tensor, mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """MSE over hidden patches when each is predicted by its image's mean visible colour. -> scalar tensor.

    imgs: (N, C, H, W), mask: (N, L) with 1 = hidden. The colour is the per-channel mean of all visible
    pixels of the image. A reconstruction in the same pixel space should beat this number.
    """
    n, c = imgs.shape[:2]
    patches = patchify(imgs, patch_size).reshape(n, mask.shape[1], patch_size * patch_size, c).float()  # (N, L, P, C)
    visible = (1 - mask.float())[:, :, None, None]  # (N, L, 1, 1)
    colour = (patches * visible).sum(dim=(1, 2)) / (visible.sum(dim=(1, 2)) * patch_size**2)  # (N, C)
    err = (patches - colour[:, None, None, :]).pow(2).mean(dim=(2, 3))  # (N, L)
    return (err * mask).sum() / mask.sum().clamp_min(1)


def interpolate_hidden(imgs: torch.Tensor, mask: torch.Tensor, patch_size: int,
                       sigma: float | None = None) -> torch.Tensor:
    """Fill the hidden patches by interpolating the visible pixels: each pixel becomes a Gaussian-weighted mean
    of the visible pixels around it (a normalised convolution), with no learning at all. -> (N, C, H, W)

    imgs: (N, C, H, W), mask: (N, L) with 1 = hidden; sigma in pixels, default 0.75 * patch_size (the best of
    sigma = 3, 4, 6, 8 px with 8 px patches on crops of held-out training photos at mask 0.75). Few hidden patches are easy for it: at 15% every one
    has visible neighbours; at 75% most are far from any. Visible pixels are returned unchanged.
    """
    n, c, h, w = imgs.shape
    sigma = 0.75 * patch_size if sigma is None else sigma
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=imgs.device)
    g = torch.exp(-x**2 / (2 * sigma**2))
    hidden = mask_to_image(mask.float(), patch_size).to(imgs.device)  # (N, 1, H, W), 1 = hidden
    visible = 1 - hidden

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, zero outside the image: (M, 1, H, W)
        t = torch.nn.functional.conv2d(t, g.view(1, 1, 1, -1), padding=(0, radius))
        return torch.nn.functional.conv2d(t, g.view(1, 1, -1, 1), padding=(radius, 0))

    num = blur((imgs.float() * visible).reshape(n * c, 1, h, w)).reshape(n, c, h, w)
    den = blur(visible)  # (N, 1, H, W): how much visible weight reaches each pixel
    filled = num / den.clamp_min(1e-12)
    return imgs * visible + filled * hidden


def reconstruction_baselines(
    model: nn.Module, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None
) -> dict[str, float]:
    """MSE over the hidden patches in input space (normalised pixels) of the model and of its honest baselines.

      model           the model's reconstruction (a norm-pix model's is scaled with each hidden patch's true
                      mean and std, see `reconstruct`: borrowed information)
      predict_zero    every hidden pixel predicted as 0: the dataset's mean colour in normalised space
      mean_colour     each image's mean visible colour (`mean_colour_baseline_mse`)
      interpolate     the visible pixels interpolated into the hidden patches (`interpolate_hidden`): what a
                      model gets without learning anything about images but smoothness
      flat_true_mean  each hidden patch filled with its own true mean colour: what a norm-pix picture borrows;
                      a model that beats it predicts structure inside the patches, not only their colour
    """
    out = reconstruct(model, imgs, mask_ratio, noise)
    with torch.no_grad():
        imgs = imgs.to(out["pred"].device).float()
        mask = out["mask"].float()
        p, c = model.config.patch_size, imgs.shape[1]
        target = model.patchify(imgs)  # (N, L, p*p*C)
        patches = target.reshape(*target.shape[:2], p * p, c)  # (N, L, p*p, C)

        def hidden_mean(err: torch.Tensor) -> float:  # err (N, L)
            return ((err * mask).sum() / mask.sum().clamp_min(1)).item()

        return dict(
            model=hidden_mean((model.patchify(out["reconstruction"].float()) - target).pow(2).mean(-1)),
            predict_zero=hidden_mean(target.pow(2).mean(-1)),
            mean_colour=mean_colour_baseline_mse(imgs, mask, p).item(),
            interpolate=hidden_mean((model.patchify(interpolate_hidden(imgs, mask, p)) - target).pow(2).mean(-1)),
            flat_true_mean=hidden_mean((patches - patches.mean(2, keepdim=True)).pow(2).mean((2, 3))),
        )
