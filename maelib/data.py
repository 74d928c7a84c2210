"""Data for MAE pretraining and evaluation: Fashion-MNIST (the offline default), CIFAR-10, STL-10, image folders,
and the colour photos that ship inside installed packages (`maelib.photos`).

    dm = MAEDataModule(dataset="fashion_mnist", img_size=28, in_chans=1, batch_size=256)
    dm.setup("fit")
    imgs, labels = next(iter(dm.train_dataloader()))  # (256, 1, 28, 28) float32 normalised, (256,) int64
    pixels = denormalize(imgs, dm.mean, dm.std)        # back to [0, 1] for plots

Every dataset yields (image (in_chans, img_size, img_size) float32, normalised with the dataset's mean/std,
label int). Fashion-MNIST, CIFAR-10 and STL-10 are held in memory as uint8 tensors; image folders are read
from disk. Fashion-MNIST is found offline when possible (see `find_fashion_mnist`); the others are downloaded
by torchvision into `data_dir()` (``$MAELIB_DATA`` or ``~/.cache/maelib``) unless `root` is given.
"""

from __future__ import annotations

import copy
import functools
import gzip
import logging
import math
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import v2

from .color import JITTER, color_jitter, jitter_params
from .rng import AUGMENT, ORDER, BatchKey, keyed_generator

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASS_NAMES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "stl10": ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"],
}
# Per-channel (mean, std) of the training pixels in [0, 1]; image folders use ImageNet's.
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "photos": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# dataset="photos": each training photo appears this often per epoch (as a new random crop each time), and each
# held-out photo this often in the val/test split. Training photos are stored at 4x the model's img_size, so that
# small crops still hold new detail (more distinct views of few photos), held-out ones at 2x.
PHOTO_REPEATS = {"train": 256, "test": 32}
PHOTO_SCALE = {"train": 4, "test": 2}
DATASETS = tuple(STATS)
AUGMENTS = ("mae", "mae_color", "flip", "none")
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL and torchvision convert RGB to grey
_LAYOUT = "root/class_name/image.jpg (one sub-folder per class, e.g. photos/cat/001.jpg, photos/dog/002.png)"


def data_dir() -> Path:
    """Where downloads go and earlier downloads are looked for: ``$MAELIB_DATA`` or ``~/.cache/maelib``."""
    return Path(os.environ.get("MAELIB_DATA") or "~/.cache/maelib").expanduser()


# ---------------------------------------------------------------------------------------------- Fashion-MNIST
def _idx_path(directory: Path, name: str) -> Path | None:
    """The file `name` in `directory`, gzipped or not; None if neither exists."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _fashion_mnist_in(directory: Path) -> Path | None:
    """`directory` itself or torchvision's `directory/FashionMNIST/raw`, whichever holds all four IDX files."""
    for d in (directory, directory / "FashionMNIST" / "raw"):
        if all(_idx_path(d, name) for names in FASHION_MNIST_FILES.values() for name in names):
            return d
    return None


def find_fashion_mnist(root: str | Path | None = None, *, download: bool = True) -> Path:
    """The folder holding Fashion-MNIST's four IDX files (``train-images-idx3-ubyte.gz``, ...; gzipped or not).

    Search order: `root`, else ``$MAELIB_FASHION_MNIST`` (either one, when given, must hold the files), then
    the Debian package's /usr/share/datasets/fashion-mnist, then an earlier download under `data_dir()`, and
    last (if `download`) a torchvision download into `data_dir()`.
    """
    fix = ("Install the Debian package (apt-get install dataset-fashion-mnist), set MAELIB_FASHION_MNIST to a "
           "folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
           "t10k-labels-idx1-ubyte.gz, or connect to the internet so that torchvision can download them.")
    explicit = [(root, "the root argument"), (os.environ.get("MAELIB_FASHION_MNIST"), "$MAELIB_FASHION_MNIST")]
    for where, what in explicit:
        if where:
            found = _fashion_mnist_in(Path(where).expanduser())
            if found is None:
                raise FileNotFoundError(f"Fashion-MNIST not found in {where} (given by {what}), nor in its "
                                        f"FashionMNIST/raw sub-folder. {fix}")
            return found
    tried = [f"{DEBIAN_FASHION_MNIST} (Debian package)", f"{data_dir()} (cache: $MAELIB_DATA or ~/.cache/maelib)"]
    for directory in (DEBIAN_FASHION_MNIST, data_dir()):
        if (found := _fashion_mnist_in(directory)) is not None:
            return found
    reason = "download=False"
    if download:
        try:
            torchvision.datasets.FashionMNIST(str(data_dir()), train=True, download=True)
            if (found := _fashion_mnist_in(data_dir())) is not None:
                return found
            reason = "the download finished but the files are not where expected"
        except Exception as e:  # no network, proxy, disk full...: all end in the same advice
            reason = f"the download failed: {type(e).__name__}: {e}"
    places = "\n".join(f"  - {t}" for t in tried)
    raise FileNotFoundError(f"Fashion-MNIST not found. Looked in:\n{places}\nand {reason}.\n{fix}")


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or not) with `ndim` dimensions -> uint8 array of that shape.

    The header is a magic number (0x0800 + ndim, big-endian) then `ndim` big-endian int32 sizes.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; EOFError: truncated gzip stream
        raise ValueError(f"cannot read {path}: {e}. The file is truncated or corrupt: delete it and get it "
                         "again") from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte IDX header")
    magic = struct.unpack(">i", raw[:4])[0]
    if magic != 0x0800 + ndim:
        raise ValueError(f"{path} is not a {ndim}-d IDX file of bytes: magic number {magic}, expected "
                         f"{0x0800 + ndim} ({'images' if ndim == 3 else 'labels' if ndim == 1 else f'{ndim}-d'})")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated or corrupt: its header promises {shape} = {int(np.prod(shape))} "
                         f"bytes of data but it holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


@functools.lru_cache(maxsize=4)
def _read_fashion_mnist(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"{images_path} and {labels_path} do not match: images {images.shape}, labels {labels.shape}")
    if labels.max(initial=0) >= 10:
        raise ValueError(f"{labels_path} holds label {labels.max()}; Fashion-MNIST labels are 0..9")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def load_fashion_mnist(split: str = "train", root: str | Path | None = None, *,
                       download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST `split` ("train": 60k, "test": 10k) -> images uint8 (N, 28, 28), labels int64 (N,).

    Read once per process and cached: the tensors are shared, so do not modify them in place.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = find_fashion_mnist(root, download=download)
    images_name, labels_name = FASHION_MNIST_FILES[split]
    return _read_fashion_mnist(_idx_path(directory, images_name), _idx_path(directory, labels_name))


# ------------------------------------------------------------------------------------------- CIFAR-10, STL-10
def load_torchvision(name: str, split: str = "train", root: str | Path | None = None, *,
                     download: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """CIFAR-10 ("train" | "test") or STL-10 ("train" | "test" | "unlabeled") through torchvision, into memory.

    Returns images uint8 (N, 3, H, W) (32 px CIFAR-10, 96 px STL-10), labels int64 (N,) (-1 = unlabelled)
    and the class names. `root` (default `data_dir()`) holds torchvision's cifar-10-batches-py/stl10_binary.
    """
    root = Path(root).expanduser() if root is not None else data_dir()
    splits = {"cifar10": ("train", "test"), "stl10": ("train", "test", "unlabeled")}
    if split not in splits.get(name, ()):
        raise ValueError(f"{name!r} split {split!r} is not one of {splits.get(name, 'cifar10/stl10 splits')}")
    try:
        if name == "cifar10":
            ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=download)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32), a view
            labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        else:
            ds = torchvision.datasets.STL10(str(root), split=split, download=download)
            images, labels = torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64))
    except Exception as e:  # torchvision raises RuntimeError for missing/corrupt files, URLError etc. offline
        folder = "cifar-10-batches-py" if name == "cifar10" else "stl10_binary"
        raise RuntimeError(f"could not load {name} ({split}) from {root}: {e}\nWith internet access pass "
                           f"download=True; otherwise put the extracted {folder}/ folder in {root}") from e
    return images, labels, list(getattr(ds, "classes", None) or CLASS_NAMES[name])


# ---------------------------------------------------------------------------------------------- datasets
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


# ---------------------------------------------------------------------------------------------- transforms
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


def _resize_crop(img_size: int) -> list:
    return [v2.Resize(img_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(img_size)]


def eval_transform(*, img_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """PIL image or uint8 tensor (C, H, W) -> float (in_chans, img_size, img_size): resize the short side
    (bicubic), center crop, match channels, normalise. An image already img_size square is left as it is."""
    return v2.Compose([v2.ToImage(), *_resize_crop(img_size), ToModelInput(in_chans, mean, std)])


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


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True, *,
                        theta: torch.Tensor | None = None) -> torch.Tensor:
    """RandomResizedCrop (+ horizontal flip) for a whole batch in one `grid_sample`: x (N, C, H, W) float ->
    (N, C, size, size). Each image gets its own crop of area fraction in `scale`, aspect ratio in `ratio`
    (log-uniform), resampled bicubically. Unlike torchvision, a crop that does not fit is clipped to the image
    rather than drawn again. `theta` (N, 2, 3) gives the crops (see `crop_params`) instead of drawing them
    from the global RNG."""
    n, c, h, w = x.shape
    if theta is None:
        theta = crop_params(n, h, w, scale, ratio, flip)
    grid = F.affine_grid(theta.to(x), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)


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
                 jitter: tuple[float, float, float, float] = JITTER) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        self.img_size, self.augment, self.crop_scale = img_size, augment, tuple(crop_scale)
        self.jitter = tuple(jitter)
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
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = v2.functional.center_crop(v2.functional.resize(
                x, self.img_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), self.img_size)
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


# ---------------------------------------------------------------------------------------------- sampling
class KeyedBatch(list):
    """A list of dataset indices that knows which batch it is: `key`, a `BatchKey`."""

    def __init__(self, indices: Sequence[int], key: BatchKey) -> None:
        super().__init__(indices)
        self.key = key


class EpochOrder(Sampler[int]):
    """The order of the images in each epoch: a permutation of range(num_samples) drawn from (seed, epoch), or
    range(num_samples) itself without `shuffle`. `set_epoch` picks the epoch (Lightning calls it on
    `loader.batch_sampler.sampler` at the start of every epoch)."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples, self.seed, self.shuffle, self.epoch = num_samples, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self, epoch: int | None = None) -> torch.Tensor:
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=keyed_generator(self.seed, epoch, ORDER))

    def __iter__(self):
        return iter(self.permutation().tolist())

    def __len__(self) -> int:
        return self.num_samples


class ResumableBatchSampler:
    """The training order: a seeded permutation per epoch (`EpochOrder`), cut into global batches shared out over
    processes, resumable in the middle of an epoch.

    Epoch e visits the images in the order of a permutation drawn from (seed, e). Global batch t is positions
    [t * G, (t + 1) * G) of it, G = batch_size * world_size, and process `rank` takes positions
    [rank * batch_size, (rank + 1) * batch_size) of each, so the union over processes of step t is the
    single-process batch t of size G. The incomplete last global batch is dropped. Each batch is a `KeyedBatch`
    whose `BatchKey` the dataset draws the augmentation from (and the training module the masks).

    Resume: `state_dict()` says how many batches of which epoch are done; after `load_state_dict()` the next
    pass over that epoch starts after them. The count comes from `progress`, a callable returning (epoch,
    batches done) -- `MAEDataModule` reads Lightning's loop counters, which count batches *trained*, not the
    ones that DataLoader workers fetched ahead -- or, without it, from the batches this sampler yielded.
    Under Lightning use `Trainer(use_distributed_sampler=False)` with several processes (the maelib CLI's
    default): this sampler does the sharding, and Lightning cannot put a DistributedSampler inside it.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, progress: Callable[[], tuple[int, int]] | None = None) -> None:
        if num_samples < 0 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need num_samples >= 0, batch_size >= 1 and 0 <= rank < world_size; got "
                             f"{num_samples}, {batch_size}, rank {rank} of {world_size}")
        self.sampler = EpochOrder(num_samples, seed, shuffle)
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.progress = rank, world_size, progress
        self._resume: tuple[int, int] | None = None  # (epoch, batches done): where the next pass over it starts
        self._yielded = 0

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        """Batches per epoch (for each process)."""
        return self.num_samples // self.global_batch_size

    def key(self, epoch: int, index: int) -> BatchKey:
        """The key of global batch `index` of `epoch`, as this process sees it."""
        return BatchKey(self.seed, epoch, index, self.batch_size, self.rank, self.world_size)

    def __iter__(self):
        epoch = self.epoch  # read when iteration starts, after set_epoch / load_state_dict
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        order, g, b = self.sampler.permutation(epoch), self.global_batch_size, self.batch_size
        self._yielded = start
        for t in range(start, len(self)):
            first = t * g + self.rank * b
            self._yielded = t + 1
            yield KeyedBatch(order[first : first + b].tolist(), self.key(epoch, t))
        if self._resume is not None and self._resume[0] == epoch:
            self._resume = None  # that epoch is done: another pass over it is a whole one

    def state_dict(self) -> dict:
        epoch, done = self.progress() if self.progress is not None else (self.epoch, self._yielded)
        return {"epoch": int(epoch), "batches_done": int(done), "seed": self.seed, "num_samples": self.num_samples,
                "global_batch_size": self.global_batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (see `state_dict`): the next pass over its epoch skips the batches done."""
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        saved = (state.get("seed"), state.get("num_samples"), state.get("global_batch_size"))
        now = (self.seed, self.num_samples, self.global_batch_size)
        if done and saved != now:
            raise ValueError(
                f"the checkpoint was written {done} batches into epoch {epoch} of a run with seed={saved[0]}, "
                f"{saved[1]} training images and a global batch of {saved[2]} (batch_size x processes); this run "
                f"has seed={now[0]}, {now[1]} images and {now[2]}, so it cannot continue that epoch. Resume with "
                "the same --data.seed, --data.train_subset, --data.batch_size and number of devices, or from a "
                "checkpoint written at the end of an epoch.")
        if done >= len(self):  # written at the end of an epoch: go on with the next one
            epoch, done = epoch + 1, 0
        self.set_epoch(epoch)  # Lightning sets it again before the epoch starts; this covers loaders iterated earlier
        self._resume, self._yielded = (epoch, done), done


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `ResumableBatchSampler`. Its `state_dict`/`load_state_dict` (the sampler's) tell
    Lightning that it can resume in the middle of an epoch."""

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


# ---------------------------------------------------------------------------------------------- Lightning
def _seeded_indices(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _subset_indices(n: int, size: int | None, seed: int, what: str) -> torch.Tensor | None:
    """A seeded random `size` of range(n), in order; None for all."""
    if size is None:
        return None
    if not 0 < size <= n:
        raise ValueError(f"{what}={size} must be between 1 and the {n} images available")
    return _seeded_indices(n, seed)[:size].sort().values


class MAEDataModule(L.LightningDataModule):
    """Train/val/test loaders of normalised images (B, in_chans, img_size, img_size) and int64 labels (B,).

    dataset: "fashion_mnist" (offline default), "cifar10", "stl10", "imagefolder" or "photos" (random crops of
        the photos in `maelib.photos`, unlabelled: the training photos for training, the held-out ones for val/test).
    root: for fashion_mnist the folder with the IDX files (default: searched, see `find_fashion_mnist`); for
        cifar10/stl10 torchvision's root (default `data_dir()`); for imagefolder the folder root/class/image.
    img_size, in_chans: the model's input; images are resized/cropped and grey<->RGB converted to match.
    num_workers: 0 by default: the in-memory datasets transform a batch in a few ms, and on a 2-core machine a
        worker process competes with training. For image folders (decoding files) use 2..os.cpu_count().
    augment: "mae" (the paper's crop + flip), "mae_color" (crop + flip + colour jitter of strengths `jitter`,
        the paper's Table 1e), "flip" or "none"; crop_scale: RandomResizedCrop's scale range; jitter: the
        brightness, contrast, saturation and hue strengths of "mae_color" (`maelib.color.JITTER`).
    val_fraction: imagefolder only, the seeded held-out share used for val and test. The other datasets
        validate and test on their test split.
    train_subset, test_subset: a seeded random N of the train / test (val) images, for quick runs (with
        stl10_unlabeled, N of the labelled and N of the unlabelled images).
    stl10_unlabeled: pretrain on STL-10's train + 100k unlabelled images (the labelled loader keeps the 5k).
    normalize_on_device: imagefolder only: training batches leave the loader as uint8 and are normalised after
        the copy to the device (4x fewer bytes through worker memory, pinning and the bus; same values). None
        (default) = when the Trainer runs on CUDA; False/True force it.
    min_classes: raise if the dataset (or the labelled train subset) has fewer classes, e.g. for probing.
    seed: picks the subsets and the held-out images, and keys the training randomness: the order of the images
        in each epoch, their augmentation, and the masks that `MAEPretrainModule` draws (see `maelib.rng`).

    Training batches come from a `ResumableBatchSampler`: the same seed gives the same batches, augmentations
    and masks whether the run is resumed mid-epoch or not, and on 1 or N processes with the same global batch
    (batch_size x processes). With several processes give the Trainer `use_distributed_sampler=False` (the
    maelib CLI does). The datamodule's `state_dict` (saved in Lightning checkpoints) records how far the epoch
    got. Validation and test loaders are not sharded: each process evaluates all of them.

    Image folders: files that PIL cannot read are skipped with a warning naming how many (they are listed in
    `skipped_files`); a file that passes the check but fails to decode (e.g. a truncated JPEG) stops the run with
    an error naming it.
    """

    def __init__(self, *, dataset: str = "fashion_mnist", root: str | Path | None = None, img_size: int = 28,
                 in_chans: int = 1, batch_size: int = 256, num_workers: int = 0, augment: str = "mae",
                 crop_scale: tuple[float, float] = (0.2, 1.0), val_fraction: float = 0.1,
                 train_subset: int | None = None, test_subset: int | None = None, stl10_unlabeled: bool = False,
                 min_classes: int | None = None, seed: int = 0, download: bool = True,
                 normalize_on_device: bool | None = None,
                 jitter: tuple[float, float, float, float] = JITTER) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
        if img_size < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(f"need img_size >= 1, batch_size >= 1 and num_workers >= 0; got {img_size}, "
                             f"{batch_size}, {num_workers}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        if dataset == "imagefolder" and root is None:
            raise ValueError(f"dataset='imagefolder' needs root, a folder laid out as {_LAYOUT}")
        self.save_hyperparameters()
        self.train_set: Dataset | None = None  # augmented, for pretraining
        self.train_set_uint8: Dataset | None = None  # the same, not yet normalised (imagefolder only)
        self._input_on: dict[torch.device, ToModelInput] = {}  # normalisation statistics per device
        self.labelled_train_set: Dataset | None = None  # same labelled images, eval transform (probing, k-NN)
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.skipped_files: list[str] = []  # imagefolder files that could not be read
        self._class_names: list[str] | None = None
        self._built = False
        self._train_sampler: ResumableBatchSampler | None = None
        self._resume_state: dict | None = None  # from a checkpoint, for the next train_dataloader()

    # ---------------------------------------------------------------- properties
    @property
    def mean(self) -> tuple[float, ...]:
        return channel_stats(*STATS[self.hparams.dataset], self.hparams.in_chans)[0]

    @property
    def std(self) -> tuple[float, ...]:
        return channel_stats(*STATS[self.hparams.dataset], self.hparams.in_chans)[1]

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self.setup()
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ---------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Download once, on one process, only what is missing (nothing for fashion_mnist found offline)."""
        h = self.hparams
        if h.dataset == "fashion_mnist":
            find_fashion_mnist(h.root, download=h.download)
        elif h.dataset in ("cifar10", "stl10") and h.download:
            load_torchvision(h.dataset, "train", h.root, download=True)
            if h.dataset == "stl10" and h.stl10_unlabeled:
                load_torchvision("stl10", "unlabeled", h.root, download=True)

    def setup(self, stage: str | None = None) -> None:
        """Build all splits at once (cheap: in memory, or a list of files); later calls do nothing."""
        if self._built:
            return
        h = self.hparams
        kw = dict(img_size=h.img_size, in_chans=h.in_chans, mean=self.mean, std=self.std)
        if h.dataset == "imagefolder":  # files of any size: per-image transforms on PIL images
            train_tf = train_transform(**kw, augment=h.augment, crop_scale=tuple(h.crop_scale), jitter=tuple(h.jitter))
            eval_tf = eval_transform(**kw)
            samples, self._class_names, self.skipped_files = scan_image_folder(h.root)
            if len(samples) < 2:
                raise ValueError(f"{h.root} has {len(samples)} readable image; need at least 2 to hold one out")
            order = _seeded_indices(len(samples), h.seed).tolist()
            n_val = min(max(1, round(len(samples) * h.val_fraction)), len(samples) - 1)
            train = [samples[i] for i in sorted(order[n_val:])]
            val = [samples[i] for i in sorted(order[:n_val])]
            train = self._take(train, h.train_subset, "train_subset")
            val = self._take(val, h.test_subset, "test_subset")
            self.train_set = ImageFileDataset(train, train_tf, h.in_chans)
            self.train_set_uint8 = ImageFileDataset(train, train_transform(
                **kw, augment=h.augment, crop_scale=tuple(h.crop_scale), normalize=False, jitter=tuple(h.jitter)),
                h.in_chans)
            self.labelled_train_set = ImageFileDataset(train, eval_tf, h.in_chans)
            self.val_set = self.test_set = ImageFileDataset(val, eval_tf, h.in_chans)
            train_labels = [label for _, label in train]
        else:  # in-memory uint8 tensors: one vectorised transform per batch
            train_tf = BatchTransform(**kw, augment=h.augment, crop_scale=tuple(h.crop_scale), jitter=tuple(h.jitter))
            eval_tf = BatchTransform(**kw, augment="none")
            images, labels, self._class_names = self._load("train")
            images, labels = self._take((images, labels), h.train_subset, "train_subset")
            self.labelled_train_set = TensorImageDataset(images, labels, eval_tf)
            if h.dataset == "stl10" and h.stl10_unlabeled:
                extra, extra_labels, _ = self._load("unlabeled")
                extra, extra_labels = self._take((extra, extra_labels), h.train_subset, "train_subset")
                images, labels_all = torch.cat([images, extra]), torch.cat([labels, extra_labels])
                self.train_set = TensorImageDataset(images, labels_all, train_tf)
            else:
                self.train_set = TensorImageDataset(images, labels, train_tf)
            test_images, test_labels, _ = self._load("test")
            test_images, test_labels = self._take((test_images, test_labels), h.test_subset, "test_subset")
            self.val_set = self.test_set = TensorImageDataset(test_images, test_labels, eval_tf)
            train_labels = labels.tolist()
        self._check(train_labels)
        self._built = True  # only now: a setup that raised is redone (and raises again) on the next call

    @property
    def has_class_labels(self) -> bool:
        """False for "photos", whose labels only name the photo: no k-NN or probe can be scored on them."""
        return self.hparams.dataset != "photos"

    def _load(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        h = self.hparams
        if h.dataset == "photos":
            from .photos import HELD_OUT_PHOTOS, load_photos, training_photos

            names = training_photos() if split == "train" else list(HELD_OUT_PHOTOS)
            which = "train" if split == "train" else "test"
            images = load_photos(names, size=PHOTO_SCALE[which] * h.img_size)
            images = images.repeat_interleave(PHOTO_REPEATS[which], dim=0)
            return images, torch.arange(len(names)).repeat_interleave(PHOTO_REPEATS[which]), names
        if h.dataset == "fashion_mnist":
            return (*load_fashion_mnist(split, h.root, download=h.download), CLASS_NAMES["fashion_mnist"])
        return load_torchvision(h.dataset, split, h.root, download=h.download)

    def _take(self, data: list | tuple[torch.Tensor, ...], size: int | None, what: str) -> list | tuple:
        """A seeded random `size` of a list of samples or of (images, labels) tensors."""
        n = len(data[0]) if isinstance(data, tuple) else len(data)
        idx = _subset_indices(n, size, self.hparams.seed, what)
        if idx is None:
            return data
        if isinstance(data, tuple):
            return tuple(t[idx] for t in data)
        return [data[i] for i in idx.tolist()]

    def _check(self, train_labels: list[int]) -> None:
        h = self.hparams
        if h.min_classes is not None:
            present = len({y for y in train_labels if y >= 0})
            if self.num_classes < h.min_classes:
                raise ValueError(f"{h.dataset} has {self.num_classes} classes {self.class_names}, "
                                 f"fewer than min_classes={h.min_classes}")
            if present < h.min_classes:
                raise ValueError(f"the labelled training images hold only {present} of the {self.num_classes} "
                                 f"classes (min_classes={h.min_classes}): raise train_subset (now {h.train_subset})")
        if h.batch_size > len(self.train_set):
            raise ValueError(f"batch_size={h.batch_size} is larger than the {len(self.train_set)} training images: "
                             f"the train loader drops incomplete batches and would be empty. Lower batch_size "
                             f"or raise train_subset")

    # ---------------------------------------------------------------- loaders
    def _loader(self, name: str) -> DataLoader:
        """An evaluation loader: in order, every image (not sharded over processes)."""
        self.setup()  # a no-op once built; lets notebooks skip the Trainer
        n = self.hparams.num_workers
        return DataLoader(getattr(self, name), batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=n, persistent_workers=n > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        """Augmented, shuffled by a `ResumableBatchSampler` (seeded order per epoch, shared out over processes,
        resumable mid-epoch), incomplete last global batch dropped."""
        self.setup()
        h = self.hparams
        rank, world = self._process()
        progress = self._progress if self.trainer is not None else None
        sampler = ResumableBatchSampler(len(self.train_set), h.batch_size, seed=h.seed, rank=rank, world_size=world,
                                        progress=progress)
        if len(sampler) == 0:
            raise ValueError(f"batch_size={h.batch_size} x {world} processes = {sampler.global_batch_size} images per "
                             f"step is more than the {len(self.train_set)} training images: lower batch_size or "
                             "raise train_subset")
        if self._resume_state:  # once: a later fit of this datamodule starts afresh
            sampler.load_state_dict(self._resume_state)
            self._resume_state = None
        self._train_sampler = sampler
        n = h.num_workers
        dataset = self.train_set_uint8 if self.normalizes_on_device() else self.train_set
        return ResumableDataLoader(dataset, batch_sampler=sampler, num_workers=n, persistent_workers=n > 0,
                                   pin_memory=torch.cuda.is_available())

    def normalizes_on_device(self) -> bool:
        """Whether training batches come as uint8 and are normalised in `on_after_batch_transfer`."""
        if self.train_set_uint8 is None:
            return False
        if self.hparams.normalize_on_device is not None:
            return self.hparams.normalize_on_device
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Normalise a uint8 training batch where it now is (the GPU); float batches pass unchanged."""
        imgs = batch[0]
        if imgs.dtype == torch.uint8:
            if imgs.device not in self._input_on:  # statistics copied to the device once, not every step
                self._input_on[imgs.device] = ToModelInput(self.hparams.in_chans, self.mean, self.std).to(imgs.device)
            batch = [self._input_on[imgs.device].normalize_uint8(imgs), *batch[1:]]
        return batch

    def _process(self) -> tuple[int, int]:
        """(rank, world size) of this process: the Trainer's, else torch.distributed's, else (0, 1)."""
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _progress(self) -> tuple[int, int]:
        """(epoch, training batches done in it), from the Trainer's loop counters."""
        trainer = self.trainer
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        """Saved in Lightning checkpoints: where the training order stands (see `ResumableBatchSampler`)."""
        return {"train_sampler": self._train_sampler.state_dict()} if self._train_sampler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        """Called by Lightning on resume, before the train loader is built (for DDP and single-device runs; for
        strategies that restore after setup, the loader already exists and its sampler is updated)."""
        resume = state.get("train_sampler")
        if resume and self._train_sampler is not None:
            self._train_sampler.load_state_dict(resume)
        else:
            self._resume_state = resume

    def val_dataloader(self) -> DataLoader:
        return self._loader("val_set")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test_set")

    def labelled_train_dataloader(self) -> DataLoader:
        """The training images with the eval transform, in order, with labels: for linear probes and k-NN."""
        return self._loader("labelled_train_set")
