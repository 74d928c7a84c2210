"""Scenes for a transfer task no encoder was trained on: semantic segmentation of Fashion-MNIST items.

Each scene is a canvas with 2 to 4 items from Fashion-MNIST's *test* split (so no pretraining image appears in
it), pasted at random places; later items cover earlier ones. Its mask gives every pixel a class: 0 for the
background, 1 + the Fashion-MNIST label for a pixel of an item (where the item is brighter than `threshold`).

    images, masks = make_scenes(1000, size=56, seed=0)   # uint8 (N, 1, 56, 56), int64 (N, 56, 56) in 0..10
    (train_images, train_masks), (test_images, test_masks) = split_scenes(train=1000, test=200)

The same seed gives the same scenes. Items are drawn from the first `pool` test images for the training scenes
and from the rest for the test scenes (`split_scenes` keeps them apart), so a segmenter is scored on items it
never saw.
"""

from __future__ import annotations

import torch

from .sources import CLASS_NAMES, load_fashion_mnist

SCENE_CLASSES = ["background"] + list(CLASS_NAMES["fashion_mnist"])  # mask value -> name


def compose(items: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor, size: int,
            threshold: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """One scene from k items: uint8 (k, h, w) with labels (k,) at top-left `positions` (k, 2) -> image uint8
    (1, size, size) and mask int64 (size, size). Later items cover earlier ones where they are brighter than
    `threshold` (a fraction of 255); the background stays 0 in both."""
    image = torch.zeros(size, size, dtype=torch.uint8)
    mask = torch.zeros(size, size, dtype=torch.int64)
    h, w = items.shape[-2:]
    for item, label, (top, left) in zip(items, labels.tolist(), positions.tolist()):
        if top + h > size or left + w > size or top < 0 or left < 0:
            raise ValueError(f"an item of {h}x{w} at ({top}, {left}) does not fit a {size}-pixel canvas")
        solid = item > threshold * 255
        region = (slice(top, top + h), slice(left, left + w))
        image[region] = torch.where(solid, item, image[region])
        mask[region] = torch.where(solid, torch.full_like(mask[region], 1 + label), mask[region])
    return image.unsqueeze(0), mask


def make_scenes(n: int, *, size: int = 56, items: tuple[int, int] = (2, 4), seed: int = 0, first: int = 0,
                pool: int | None = None, root=None, threshold: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """n scenes of items[0] to items[1] Fashion-MNIST test items on a size x size canvas -> images uint8
    (n, 1, size, size), masks int64 (n, size, size) (0 background, 1 + label). The items are drawn from test
    images first .. first + pool - 1 (default: all from `first`)."""
    if size < 28:
        raise ValueError(f"a scene holds 28-pixel Fashion-MNIST items: size must be at least 28, got {size}")
    if not 1 <= items[0] <= items[1]:
        raise ValueError(f"items must be (fewest, most) with 1 <= fewest <= most, got {items}")
    images, labels = load_fashion_mnist("test", root)
    pool = len(images) - first if pool is None else pool
    if not 0 < pool <= len(images) - first:
        raise ValueError(f"pool={pool} test images from {first}: only {len(images) - first} are there")
    g = torch.Generator().manual_seed(seed)
    out_images, out_masks = [], []
    for _ in range(n):
        k = int(torch.randint(items[0], items[1] + 1, (1,), generator=g))
        idx = first + torch.randint(pool, (k,), generator=g)
        positions = torch.randint(size - 28 + 1, (k, 2), generator=g)
        image, mask = compose(images[idx], labels[idx], positions, size, threshold)
        out_images.append(image)
        out_masks.append(mask)
    return torch.stack(out_images), torch.stack(out_masks)


def split_scenes(*, train: int, test: int, size: int = 56, seed: int = 0, root=None):
    """Training and test scenes whose items come from disjoint halves of Fashion-MNIST's test split (the first
    5,000 images for training scenes, the last 5,000 for test scenes). -> ((images, masks), (images, masks))"""
    return (make_scenes(train, size=size, seed=seed, first=0, pool=5000, root=root),
            make_scenes(test, size=size, seed=seed + 1, first=5000, pool=5000, root=root))
