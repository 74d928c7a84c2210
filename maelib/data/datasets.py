"""Datasets: in-memory uint8 images transformed a batch at a time, and image folders read from disk."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from ..rng import AUGMENT, BatchKey
from .transforms import BatchTransform

log = logging.getLogger("maelib.data")

_LAYOUT = "root/class_name/image.jpg (one sub-folder per class, e.g. photos/cat/001.jpg, photos/dog/002.png)"


class TensorImageDataset(Dataset):
    """In-memory images uint8 (N, H, W) or (N, C, H, W) with labels (N,) -> (image float (C, H', W'), label int).

    `transform` works on whole batches: uint8 (B, C, H, W) -> float (B, C', H', W') (see `BatchTransform`);
    the DataLoader fetches a batch of indices at once (`__getitems__`), so augmentation costs one vectorised
    call per batch instead of one call per image. Without a transform images come back as float in [0, 1].
    A batch of indices from `ResumableBatchSampler` carries its `BatchKey`, and the transform draws its
    augmentation from it (see `BatchTransform`) rather than from the global RNG.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int],
                 transform: Callable | None = None) -> None:
        if images.ndim not in (3, 4) or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, H, W) or (N, C, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images = images.unsqueeze(1) if images.ndim == 3 else images  # (N, C, H, W)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        if len(self.labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C', H', W') float and labels (B,) for a list of indices, transformed together."""
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        imgs = self.images[idx]
        if not self.transform:
            return imgs.float() / 255, self.labels[idx]
        key = getattr(indices, "key", None)
        if key is not None and isinstance(self.transform, BatchTransform):
            return self.transform(imgs, key=key), self.labels[idx]
        return self.transform(imgs), self.labels[idx]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        imgs, labels = self.batch(indices)
        return list(zip(imgs, labels.tolist()))  # the default collate stacks them back

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        imgs, labels = self.batch([i])
        return imgs[0], int(labels[0])


def scan_image_folder(root: str | Path) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """Find root/class_name/image files -> (samples [(path, class index)], class names, skipped paths).

    Each file is checked once with PIL's `verify()` (header and, for PNG, chunk checksums); unreadable ones
    are skipped and counted. A truncated JPEG can pass this check and only fail when it is decoded.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; expected the layout {_LAYOUT}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"no class sub-folders in {root}; expected the layout {_LAYOUT}")
    found = make_dataset(str(root), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not found:
        raise FileNotFoundError(f"no image files ({' '.join(IMG_EXTENSIONS)}) in the class folders of {root}; "
                                f"expected the layout {_LAYOUT}")
    samples, skipped = [], []
    for path, label in found:
        try:
            with Image.open(path) as im:
                im.verify()
            samples.append((path, label))
        except Exception:  # PIL raises OSError, SyntaxError, ValueError... for broken files
            skipped.append(path)
    if skipped:
        log.warning("skipped %d unreadable image file(s) of %d under %s, e.g. %s",
                    len(skipped), len(found), root, skipped[0])
    if not samples:
        raise FileNotFoundError(f"none of the {len(found)} image files under {root} could be read")
    return samples, classes, skipped


class ImageFileDataset(Dataset):
    """Image files [(path, label)] of any size, RGB or grey -> (transform(PIL image), label).

    Files are opened as grey ("L") when in_chans == 1, else as RGB (palettes and alpha are dropped).
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable, in_chans: int = 3) -> None:
        self.samples, self.transform, self.mode = list(samples), transform, "L" if in_chans == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert(self.mode)
        except (OSError, SyntaxError, ValueError) as e:
            raise RuntimeError(f"cannot decode image {path}: {e}; remove or replace the file") from e
        return self.transform(img), label

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """A batch. With a `BatchKey` (from `ResumableBatchSampler`) each image's random transform is seeded
        from (key, its row in the global batch): the same on any number of processes or workers, and after a
        resume. The per-image transforms draw from torch's global RNG, so it is seeded inside a fork."""
        key: BatchKey | None = getattr(indices, "key", None)
        if key is None:
            return [self[i] for i in indices]
        out = []
        for row, i in enumerate(indices, start=key.rows.start):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(key.seed_for(AUGMENT, row))
                out.append(self[i])
        return out

