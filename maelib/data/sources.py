"""Where the data comes from: Fashion-MNIST found offline (or downloaded), CIFAR-10 and STL-10 through torchvision,
read into memory as uint8 tensors; the per-dataset statistics and class names."""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
import torchvision

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

