"""Images <-> sequences of flattened patches (pure functions), and the patch embedding computed on them.

The layout inside a patch is (row, column, channel), channel last, exactly as in the official
MAE code and Hugging Face's ViTMAE, so that predictions and targets line up with theirs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed


def check_image_size(img_size: int, patch_size: int) -> int:
    """Return the number of patches per side; raise a clear error when the size does not tile."""
    if patch_size > img_size:
        divisors = [d for d in range(2, img_size + 1) if img_size % d == 0 and d <= img_size // 2] or [img_size]
        raise ValueError(
            f"patch size {patch_size} is larger than the {img_size}-pixel image: a patch must fit inside it. Use a "
            f"patch size that divides {img_size} (e.g. {', '.join(map(str, divisors[:4]))}), or images of at least "
            f"{patch_size} pixels (a multiple of it)")
    if img_size % patch_size != 0:
        raise ValueError(
            f"image side {img_size} is not a multiple of the patch size {patch_size}: "
            f"resize or crop images to a multiple of {patch_size} (for example {img_size // patch_size * patch_size})"
        )
    return img_size // patch_size


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """imgs: (N, C, H, W), square, H a multiple of patch_size -> patches: (N, L, p*p*C), L = (H/p)**2."""
    if imgs.ndim != 4 or imgs.shape[2] != imgs.shape[3]:
        raise ValueError(f"expected square images of shape (N, C, H, H), got {tuple(imgs.shape)}")
    n, c, side, _ = imgs.shape
    h = check_image_size(side, patch_size)
    x = imgs.reshape(n, c, h, patch_size, h, patch_size)  # (N, C, h, p, w, q)
    x = torch.einsum("nchpwq->nhwpqc", x)  # (N, h, w, p, q, C)
    return x.reshape(n, h * h, patch_size * patch_size * c)


def unpatchify(patches: torch.Tensor, patch_size: int, in_chans: int) -> torch.Tensor:
    """patches: (N, L, p*p*C) -> imgs: (N, C, H, W) with H = W = sqrt(L) * p."""
    n, num_patches, dim = patches.shape
    h = int(round(num_patches**0.5))
    if h * h != num_patches or dim != patch_size * patch_size * in_chans:
        raise ValueError(
            f"cannot unpatchify {tuple(patches.shape)} with patch_size={patch_size}, in_chans={in_chans}: "
            f"need a square number of patches of size {patch_size * patch_size * in_chans}"
        )
    x = patches.reshape(n, h, h, patch_size, patch_size, in_chans)  # (N, h, w, p, q, C)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (N, C, h, p, w, q)
    return x.reshape(n, in_chans, h * patch_size, h * patch_size)


def mask_to_image(mask: torch.Tensor, patch_size: int, channels: int = 1) -> torch.Tensor:
    """Per-patch mask (N, L) -> pixel map (N, channels, H, W): each patch's value over its p x p pixels (1 where
    the patch is hidden, for MAE's masks)."""
    return unpatchify(mask.unsqueeze(-1).expand(-1, -1, patch_size * patch_size * channels), patch_size, channels)


def patch_stats(patches: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and std used by norm_pix_loss. patches: (N, L, D) -> mean, std: (N, L, 1).

    The variance is the unbiased one and eps is added before the square root, as in the paper's code.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return mean, (var + eps) ** 0.5


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The norm_pix_loss target: each patch shifted to mean 0 and scaled to variance ~1. (N, L, D) -> (N, L, D)."""
    mean, std = patch_stats(patches, eps)
    return (patches - mean) / std


class LinearPatchEmbed(PatchEmbed):
    """timm's PatchEmbed (the same parameters: a p x p, stride-p convolution `proj`), computed as one matrix
    product on `patchify`'s rows. The same function as the convolution, without its memory-layout conversions:
    on an H200 those took ~5% of a compiled ViT-B MAE step (benchmarks/RESULTS.md).

    imgs: (N, C, H, W) -> (N, L, D)
    """

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        if tuple(imgs.shape[-2:]) != tuple(self.img_size):
            raise ValueError(f"images are {imgs.shape[-2]}x{imgs.shape[-1]} but this patch embedding expects "
                             f"{self.img_size[0]}x{self.img_size[1]}: resize them or build the model for their size")
        w = self.proj.weight  # (D, C, p, p)
        w = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)  # (D, p*p*C): patchify's (row, column, channel) order
        return F.linear(patchify(imgs, self.patch_size[0]), w, self.proj.bias)
