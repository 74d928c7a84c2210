"""Transforms to the model's input: channel matching and normalisation, the per-image (PIL) stacks of image
folders, and the vectorised batch transform of the in-memory datasets."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from ..rng import AUGMENT, BatchKey
from .color import JITTER, color_jitter, jitter_params

AUGMENTS = ("mae", "mae_color", "flip", "none", "finetune")  # "finetune": image folders only (timm, per image)
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL and torchvision convert RGB to grey


def channel_stats(mean: Sequence[float], std: Sequence[float],
                  in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std adapted to `in_chans`: one grey value is repeated for RGB; RGB stats become grey
    ones with the luma weights (exact for the mean, an upper bound for the std, close for natural images)."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) == in_chans:
        return mean, std
    if len(mean) == 1:
        return mean * in_chans, std * in_chans
    if len(mean) == 3 and in_chans == 1:
        return (sum(w * m for w, m in zip(_GREY_WEIGHTS, mean)),), (sum(w * s for w, s in zip(_GREY_WEIGHTS, std)),)
    raise ValueError(f"cannot adapt {len(mean)}-channel statistics to in_chans={in_chans}")


class ToModelInput:
    """uint8 image (..., C, H, W) -> float32 (..., in_chans, H, W), normalised: grey is repeated to RGB, RGB made
    grey. Works on one image or a batch. With normalize=False the channels are matched and the image stays uint8:
    `normalize_uint8` finishes the job later, e.g. on the GPU (4x fewer bytes through the loader and the bus).

    One plain tensor step in place of v2's ToDtype + Normalize (4x less per-image overhead on small images).
    """

    def __init__(self, in_chans: int, mean: Sequence[float], std: Sequence[float], normalize: bool = True) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
        self.in_chans, self.normalize_output = in_chans, normalize
        mean, std = channel_stats(mean, std, in_chans)
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = img.as_subclass(torch.Tensor)  # drop the tv_tensors.Image wrapper
        if img.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 image, got {img.dtype}")
        c = img.shape[-3]
        if c == 3 and self.in_chans == 1:
            img = v2.functional.rgb_to_grayscale(img, num_output_channels=1)
        elif c == 1 and self.in_chans == 3:
            img = img.expand(*img.shape[:-3], 3, -1, -1)
        elif c != self.in_chans:
            raise ValueError(f"cannot convert a {c}-channel image to {self.in_chans} channels")
        return self.normalize_uint8(img) if self.normalize_output else img

    def normalize_uint8(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 pixels with the right channels (..., C, H, W), on any device -> normalised float32."""
        return self.normalize(img.float().div_(255))

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] with the right channels (..., C, H, W) -> normalised."""
        return (img - self.mean) / self.std

    def to(self, device: torch.device | str) -> "ToModelInput":
        """A copy whose statistics live on `device`, to normalise batches there."""
        moved = copy.copy(self)
        moved.mean, moved.std = self.mean.to(device), self.std.to(device)
        return moved

    def __repr__(self) -> str:
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        return f"ToModelInput(in_chans={self.in_chans}, mean={mean}, std={std})"


def _resize_crop(img_size: int, crop_pct: float = 1.0) -> list:
    """Resize the short side to img_size / crop_pct (bicubic, antialiased), then take the centre img_size square."""
    resize = int(img_size / crop_pct)  # as the official code and timm round it: 224 / 0.875 -> 256
    return [v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(img_size)]


def eval_transform(*, img_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float],
                   crop_pct: float = 1.0) -> v2.Compose:
    """PIL image or uint8 tensor (C, H, W) -> float (in_chans, img_size, img_size): resize the short side
    (bicubic) to img_size / crop_pct, center crop img_size, match channels, normalise. crop_pct=0.875 is the
    paper's ImageNet evaluation (resize 256, centre crop 224). An image already img_size square is left as it is
    at crop_pct=1."""
    return v2.Compose([v2.ToImage(), *_resize_crop(img_size, crop_pct), ToModelInput(in_chans, mean, std)])


FINETUNE_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"  # the paper's fine-tuning RandAugment (official FINETUNE.md)


def finetune_transform(*, img_size: int, mean: Sequence[float], std: Sequence[float],
                       auto_augment: str | None = FINETUNE_AUTO_AUGMENT, reprob: float = 0.25,
                       crop_scale: tuple[float, float] = (0.08, 1.0)) -> Callable:
    """The paper's fine-tuning augmentation, built by timm exactly as the official code builds it
    (`timm.data.create_transform`): RandomResizedCrop(img_size, scale=crop_scale, bicubic) + flip, RandAugment
    `auto_augment`, normalisation, then random erasing with probability `reprob` (per-pixel random values).
    PIL RGB image -> float (3, img_size, img_size)."""
    from timm.data import create_transform

    return create_transform(input_size=img_size, is_training=True, color_jitter=None, auto_augment=auto_augment,
                            interpolation="bicubic", re_prob=reprob, re_mode="pixel", re_count=1,
                            mean=tuple(mean), std=tuple(std), scale=tuple(crop_scale))


def train_transform(*, img_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float],
                    augment: str = "mae", crop_scale: tuple[float, float] = (0.2, 1.0),
                    normalize: bool = True, jitter: tuple[float, float, float, float] = JITTER) -> v2.Compose:
    """Like `eval_transform` but augmented: "mae" is the paper's RandomResizedCrop(img_size, scale=crop_scale,
    bicubic) + horizontal flip; "mae_color" adds torchvision's ColorJitter(*jitter); "flip" only flips; "none"
    is the eval transform. On 28 px images a larger crop_scale minimum (e.g. 0.35) keeps more of each object.
    normalize=False: uint8 out (see `ToModelInput`)."""
    if augment in ("mae", "mae_color"):
        geometry = [v2.RandomResizedCrop(img_size, scale=crop_scale, interpolation=v2.InterpolationMode.BICUBIC,
                                         antialias=True), v2.RandomHorizontalFlip()]
        if augment == "mae_color":
            geometry.append(v2.ColorJitter(*jitter[:3], hue=jitter[3]))
    elif augment == "flip":
        geometry = [*_resize_crop(img_size), v2.RandomHorizontalFlip()]
    elif augment == "none":
        geometry = _resize_crop(img_size)
    elif augment == "finetune":
        raise ValueError("augment='finetune' is `finetune_transform` (timm), not a train_transform")
    else:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    return v2.Compose([v2.ToImage(), *geometry, ToModelInput(in_chans, mean, std, normalize)])


def crop_params(n: int, h: int, w: int, scale: tuple[float, float] = (0.2, 1.0),
                ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crops (+ flips) of n images h x w as affine matrices theta (n, 2, 3) for `F.affine_grid`.

    Drawn from `generator` (the global RNG if None) in a fixed order, so a seeded generator gives the same
    crops for row i of a batch whatever else is in the batch."""
    area = torch.empty(n).uniform_(*scale, generator=generator) * h * w
    aspect = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()
    crop_w = (area * aspect).sqrt().clamp(max=w)
    crop_h = (area / aspect).sqrt().clamp(max=h)
    left = torch.rand(n, generator=generator) * (w - crop_w)
    top = torch.rand(n, generator=generator) * (h - crop_h)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    # affine_grid maps output coordinates in [-1, 1] to input coordinates in [-1, 1]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sign * crop_w / w
    theta[:, 0, 2] = (2 * left + crop_w) / w - 1
    theta[:, 1, 1] = crop_h / h
    theta[:, 1, 2] = (2 * top + crop_h) / h - 1
    return theta


MAX_SUPERSAMPLING = 4  # antialiasing of random_resized_crop: at most 4 x 4 samples per output pixel


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True, *,
                        theta: torch.Tensor | None = None, antialias: bool = True) -> torch.Tensor:
    """RandomResizedCrop (+ horizontal flip) for a whole batch in one `grid_sample`: x (N, C, H, W) float ->
    (N, C, size, size). Each image gets its own crop of area fraction in `scale`, aspect ratio in `ratio`
    (log-uniform), resampled bicubically. Unlike torchvision, a crop that does not fit is clipped to the image
    rather than drawn again. `theta` (N, 2, 3) gives the crops (see `crop_params`) instead of drawing them
    from the global RNG.

    antialias: where a crop is shrunk (more input pixels than output ones, e.g. a 256 px photo to 64 px), each
    output pixel is the mean of k x k bicubic samples over its footprint (k = the batch's largest shrink, at
    most `MAX_SUPERSAMPLING`), as PIL's and torchvision's antialiased resize average the pixels they cover,
    instead of one sample that aliases fine detail. Batches that are not shrunk (Fashion-MNIST's 28 px crops
    to 28 px) are sampled once, as before."""
    n, c, h, w = x.shape
    if theta is None:
        theta = crop_params(n, h, w, scale, ratio, flip)
    k = 1
    if antialias:  # the crop spans |theta_00| * w by theta_11 * h input pixels
        shrink = max((theta[:, 0, 0].abs() * w).max().item(), (theta[:, 1, 1].abs() * h).max().item()) / size
        k = max(1, min(MAX_SUPERSAMPLING, math.ceil(shrink - 1e-6)))
    grid = F.affine_grid(theta.to(x), [n, c, size * k, size * k], align_corners=False)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return F.avg_pool2d(out, k) if k > 1 else out


class BatchTransform:
    """The in-memory datasets' transform, vectorised: uint8 (N, C, H, W) -> normalised float (N, in_chans, S, S).

    augment: "mae" (random resized crop + flip, `random_resized_crop`), "mae_color" (then `color_jitter` with
    strengths `jitter`), "flip" (resize + random flip) or "none" (resize the short side + centre crop, the eval
    transform). Same meaning as `train_transform`.
    With a `BatchKey` the random parameters of the whole global batch are drawn from the key's generator and
    this process's rows are kept: row i of global batch t is augmented the same on 1 or N processes, and
    after a resume. Without a key they come from the global RNG.
    """

    def __init__(self, *, img_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float],
                 augment: str = "none", crop_scale: tuple[float, float] = (0.2, 1.0),
                 jitter: tuple[float, float, float, float] = JITTER, crop_pct: float = 1.0) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        if augment == "finetune":
            raise ValueError("augment='finetune' (timm's RandAugment and random erasing) transforms PIL images one "
                             "by one: use it on an image folder read from disk (dataset='imagefolder')")
        self.img_size, self.augment, self.crop_scale = img_size, augment, tuple(crop_scale)
        self.jitter, self.crop_pct = tuple(jitter), crop_pct
        self.to_input = ToModelInput(in_chans, mean, std)

    def __call__(self, imgs: torch.Tensor, key: BatchKey | None = None) -> torch.Tensor:
        x = self.to_input(imgs)  # (N, in_chans, H, W) normalised
        if key is not None and key.batch_size != len(x):
            raise ValueError(f"the batch key is for {key.batch_size} images per process, got {len(x)}")
        g = key.generator(AUGMENT) if key is not None else None
        n, rows = (key.global_size, key.rows) if key is not None else (len(x), slice(None))
        if self.augment in ("mae", "mae_color"):
            theta = crop_params(n, *x.shape[-2:], self.crop_scale, flip=True, generator=g)[rows]
            x = random_resized_crop(x, self.img_size, theta=theta)
            if self.augment == "mae_color":  # in pixel space [0, 1], then normalised again
                mean, std = self.to_input.mean.to(x), self.to_input.std.to(x)
                jittered = color_jitter(x * std + mean, jitter_params(n, self.jitter, generator=g)[rows])
                x = (jittered - mean) / std
            return x
        if x.shape[-2:] != (self.img_size, self.img_size) or self.crop_pct != 1.0:  # as `eval_transform`
            x = v2.functional.center_crop(v2.functional.resize(x, int(self.img_size / self.crop_pct),
                                          interpolation=v2.InterpolationMode.BICUBIC, antialias=True), self.img_size)
        if self.augment == "flip":
            flip = (torch.rand(n, generator=g) < 0.5)[rows]
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x

    def __repr__(self) -> str:
        return f"BatchTransform(img_size={self.img_size}, augment={self.augment!r}, {self.to_input})"


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float], *,
                clamp: bool = True) -> torch.Tensor:
    """Undo the normalisation: images (..., C, H, W) -> pixels (..., C, H, W), in [0, 1] when `clamp`."""
    mean, std = channel_stats(mean, std, images.shape[-3])
    shape = (-1, 1, 1)
    out = images * torch.tensor(std, dtype=images.dtype, device=images.device).view(shape)
    out = out + torch.tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    return out.clamp(0, 1) if clamp else out


