"""Datasets: in-memory uint8 images transformed a batch at a time, and image folders read from disk."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from ..files import write_text_atomic
from ..rng import AUGMENT, BatchKey
from .transforms import BatchTransform

log = logging.getLogger("maelib.data")

UNLABELLED = -1  # the label of every image of a folder without class sub-folders
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


def scan_image_folder(root: str | Path, *, verify: bool = False) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """Find root/class_name/image files -> (samples [(path, class index)], class names, skipped paths).

    A folder without class sub-folders is **unlabelled**: its images (directly in root) are all samples, with the
    label `UNLABELLED` (-1) and no class names. Self-supervised pretraining needs nothing more; k-NN, the probe and
    fine-tuning refuse it with a message that asks for the class layout.

    Lists the files by their extension without opening them, so that a folder of a million images is listed in
    seconds; a file that cannot be decoded is skipped, with a warning and a count, when it is first read
    (`ImageFileDataset`). verify=True also opens each file now with PIL's `verify()` (header and, for PNG,
    chunk checksums) and returns the unreadable ones as skipped: slow on large folders.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; expected the layout {_LAYOUT}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:  # an unlabelled folder: the images in root itself
        found = sorted((str(p), UNLABELLED) for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.name.lower().endswith(IMG_EXTENSIONS))
        if not found:
            raise FileNotFoundError(f"no image files ({' '.join(IMG_EXTENSIONS)}) in {root}, and no class sub-folders; "
                                    f"give a folder of images, or of class folders laid out as {_LAYOUT}")
    else:
        found = make_dataset(str(root), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS,
                             allow_empty=True)
    if not found:
        raise FileNotFoundError(f"no image files ({' '.join(IMG_EXTENSIONS)}) in the class folders of {root}; "
                                f"expected the layout {_LAYOUT}")
    if not verify:
        return list(found), classes, []
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


def _folder_signature(root: Path) -> list:
    """What changes when files are added to, removed from or renamed in a folder root/class/: the modification
    times of root and of each class folder."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [root.stat().st_mtime_ns, *[[p.name, p.stat().st_mtime_ns] for p in subdirs]]


def cached_scan(root: str | Path, cache_dir: str | Path) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """`scan_image_folder(root)`, done once: the list is kept in `cache_dir` (one JSON file per folder) and read
    back while no class folder has changed, so the processes of a DDP run, and later runs, do not list it again.
    `MAEDataModule.prepare_data` writes it on one process; `setup` reads it on all."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        return scan_image_folder(root)  # raises the layout error
    cache = Path(cache_dir) / f"{hashlib.sha1(str(root).encode()).hexdigest()[:16]}.json"
    signature = _folder_signature(root)
    try:
        saved = json.loads(cache.read_text())
        if saved["root"] == str(root) and saved["signature"] == signature and saved["version"] == 1:
            return [tuple(s) for s in saved["samples"]], saved["classes"], []
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or one from another version: scan
    samples, classes, skipped = scan_image_folder(root)
    try:
        # atomic: another process reads the old file or the new one, never half of one
        write_text_atomic(cache, json.dumps({"version": 1, "root": str(root), "signature": signature,
                                             "classes": classes, "samples": samples}))
    except OSError as e:  # a read-only cache folder only costs the next run a new scan
        log.warning("could not cache the file list of %s in %s: %s", root, cache.parent, e)
    return samples, classes, skipped


class ImageFileDataset(Dataset):
    """Image files [(path, label)] of any size, RGB or grey -> (transform(PIL image), label).

    Files are opened as grey ("L") when in_chans == 1, else as RGB (palettes and alpha are dropped). A file that
    cannot be decoded (a truncated JPEG, a file that is not an image) is skipped with a warning and listed in
    `skipped` (this process's count): the next file of the list stands in for it, so batches stay full and
    alike from run to run. The run stops with an error only when more than `max_skipped` of the files (a
    fraction; at least 10 files) are broken: then the folder itself is at fault, e.g. a copy cut short.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable, in_chans: int = 3,
                 max_skipped: float = 0.01) -> None:
        self.samples, self.transform, self.mode = list(samples), transform, "L" if in_chans == 1 else "RGB"
        self.max_skipped = max_skipped
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        for offset in range(len(self.samples)):
            path, label = self.samples[(i + offset) % len(self.samples)]
            img = self.decode(path)
            if img is not None:
                return self.transform(img), label
        raise RuntimeError(f"none of the {len(self.samples)} image files could be decoded, e.g. "
                           f"{self.samples[i][0]}: remove or replace the files")

    def decode(self, path: str) -> Image.Image | None:
        """The image at `path` in this dataset's mode, or None (counted, with a warning) if it cannot be read."""
        try:
            with Image.open(path) as im:
                return to_8bit(im, self.mode)
        except (OSError, SyntaxError, ValueError) as e:  # what PIL raises for broken or truncated files
            if path not in self.skipped:
                self.skipped.append(path)
                log.warning("skipped an image that cannot be decoded: %s (%s); %d skipped so far", path, e,
                            len(self.skipped))
            limit = max(10, self.max_skipped * len(self.samples))
            if len(self.skipped) > limit:
                raise RuntimeError(
                    f"{len(self.skipped)} of the {len(self.samples)} image files cannot be decoded, more than the "
                    f"{limit:g} allowed (max_skipped={self.max_skipped}), e.g. {self.skipped[:3]}: the folder looks "
                    "damaged (a copy cut short?). Copy it again, or remove or replace the broken files") from e
            return None

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



def to_8bit(im: Image.Image, mode: str) -> Image.Image:
    """A PIL image in `mode` ("L" or "RGB", 8 bits per channel), with high-bit-depth images scaled, not clipped
    (PIL's own `convert` clips them: a 16-bit 0..65535 ramp would come out almost all white):
    - 16-bit ("I;16*") and 32-bit integer ("I") images: by the range of their type, 0..65535 (what a 16-bit PNG
      holds when PIL opens it as "I"), or 0..2**31 - 1 when larger values occur; negative values become 0;
    - float ("F") images: [0, 1] to 0..255 (values outside are clipped), or by their maximum when it is above 1.
    Everything else goes through `convert` (palette, CMYK, alpha...)."""
    if im.mode.startswith("I") or im.mode == "F":
        x = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            top = max(1.0, float(x.max())) if x.size else 1.0
        else:
            top = 65535.0 if im.mode.startswith("I;16") or x.max(initial=0) <= 65535 else float(2**31 - 1)
        grey = np.clip(np.rint(x / top * 255.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(grey, mode="L")
    return im.convert(mode)  # a loaded copy even in the same mode: the caller closes the file


IN_MEMORY_MAX_FILES = 50_000  # above this, a folder is read from disk (reading every header would take long)
IN_MEMORY_MAX_BYTES = 2 * 2**30  # and above this many bytes of decoded uint8 pixels


def image_sizes(samples: Sequence[tuple[str, int]]) -> set[tuple[int, int]]:
    """The distinct (width, height) of the image files, read from their headers (nothing is decoded); files whose
    header cannot be read are left out."""
    sizes = set()
    for path, _ in samples:
        try:
            with Image.open(path) as im:
                sizes.add(im.size)
        except (OSError, SyntaxError, ValueError):
            pass
    return sizes


def fits_in_memory(samples: Sequence[tuple[str, int]], in_chans: int) -> tuple[bool, str]:
    """Whether an image folder can be decoded once into memory (`decode_images`): at most `IN_MEMORY_MAX_FILES`
    files, all of one size, at most `IN_MEMORY_MAX_BYTES` of pixels. Returns (answer, the reason)."""
    if len(samples) > IN_MEMORY_MAX_FILES:
        return False, f"{len(samples)} files, more than IN_MEMORY_MAX_FILES={IN_MEMORY_MAX_FILES}"
    sizes = image_sizes(samples)
    if len(sizes) != 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
        return False, f"the images have {len(sizes)} sizes ({shown}{', ...' if len(sizes) > 4 else ''}), not one"
    (w, h), = sizes
    size = len(samples) * in_chans * w * h
    if size > IN_MEMORY_MAX_BYTES:
        return False, f"{size / 2**30:.1f} GiB of pixels, more than IN_MEMORY_MAX_BYTES"
    return True, f"{len(samples)} images of {w}x{h}"


def decode_images(samples: Sequence[tuple[str, int]], in_chans: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode image files of one size once -> uint8 (N, in_chans, H, W), labels int64 (N,), and the files that
    could not be decoded (left out, with a warning): what the in-memory datasets hold, as for Fashion-MNIST."""
    mode = "L" if in_chans == 1 else "RGB"
    arrays, labels, skipped = [], [], []
    for path, label in samples:
        try:
            with Image.open(path) as im:
                arrays.append(np.asarray(to_8bit(im, mode)))
            labels.append(label)
        except (OSError, SyntaxError, ValueError):
            skipped.append(path)
    if skipped:
        log.warning("skipped %d image file(s) that cannot be decoded, e.g. %s", len(skipped), skipped[0])
    if not arrays:
        raise FileNotFoundError(f"none of the {len(samples)} image files could be decoded")
    images = torch.from_numpy(np.stack(arrays))  # (N, H, W) or (N, H, W, 3)
    images = images.unsqueeze(1) if in_chans == 1 else images.permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64), skipped
