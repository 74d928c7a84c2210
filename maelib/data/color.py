"""Colour jitter for a whole batch at once: each image gets its own brightness, contrast, saturation and hue.

The paper's Table 1e compares crop-only augmentation with crop + colour jitter (the jitter lowers fine-tuning
accuracy on ImageNet by 0.6 points). maelib's `augment="mae_color"` adds this jitter after the random resized
crop, with torchvision's `ColorJitter(0.4, 0.4, 0.4, 0.1)` strengths by default:

    params = jitter_params(n, generator=g)      # (n, 4): one set of factors per image
    x = color_jitter(x, params)                 # x: float (n, C, H, W) in [0, 1], C = 1 or 3

Hue is turned by rotating each pixel's chroma in the YIQ colour space (a rotation that keeps the luma), a
close and vectorised stand-in for torchvision's HSV hue shift.
"""

from __future__ import annotations

import math

import torch

# torchvision's ColorJitter strengths that the SimCLR/MoCo family and most MAE re-implementations use.
JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def jitter_params(n: int, strengths: tuple[float, float, float, float] = JITTER,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """-> (n, 4): brightness, contrast and saturation factors in [1 - s, 1 + s], a hue turn in [-h, h] turns."""
    b, c, s, h = strengths
    if min(strengths) < 0 or h > 0.5:
        raise ValueError(f"colour jitter strengths must be >= 0 and hue <= 0.5 (half a turn), got {strengths}")
    u = torch.rand(n, 4, generator=generator) * 2 - 1  # uniform in [-1, 1)
    return torch.stack([1 + b * u[:, 0], 1 + c * u[:, 1], 1 + s * u[:, 2], h * u[:, 3]], dim=1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, H, W): luma for colour images (the ITU-R 601 weights), the image itself for grey."""
    if x.shape[1] == 1:
        return x
    w = _RGB_TO_YIQ[0].to(x).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """x: float (N, C, H, W) in [0, 1], params: (N, 4) from `jitter_params` -> jittered, clamped to [0, 1].

    Brightness scales the pixels; contrast blends with the image's mean grey; saturation blends with its own
    grey; hue turns the chroma (colour images only). Applied in that order, each step clamped, as torchvision.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"color_jitter expects (N, 1 or 3, H, W) images, got shape {tuple(x.shape)}")
    p = params.to(x).view(-1, 4, 1, 1, 1)  # (N, 4, 1, 1, 1)
    x = (x * p[:, 0]).clamp(0, 1)
    grey_mean = _grey(x).mean((1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    x = ((x - grey_mean) * p[:, 1] + grey_mean).clamp(0, 1)
    if x.shape[1] == 3:
        grey = _grey(x)
        x = ((x - grey) * p[:, 2] + grey).clamp(0, 1)
        yiq = torch.einsum("ij,njhw->nihw", _RGB_TO_YIQ.to(x), x)
        angle = 2 * math.pi * p[:, 3, 0, 0, 0]  # (N,)
        cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
        i, q = yiq[:, 1] * cos - yiq[:, 2] * sin, yiq[:, 1] * sin + yiq[:, 2] * cos
        yiq = torch.stack([yiq[:, 0], i, q], dim=1)
        x = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_YIQ).to(x), yiq).clamp(0, 1)
    return x
