"""maelib.data: finding and reading Fashion-MNIST, CIFAR-10/STL-10 on disk, image folders, transforms, the datamodule.

Real Fashion-MNIST comes from the Debian package (apt-get install dataset-fashion-mnist); CIFAR-10, STL-10 and
image folders are tiny copies written by the tests in each format, so nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from maelib import data
from maelib.data import (
    MAEDataModule,
    TensorImageDataset,
    channel_stats,
    denormalize,
    eval_transform,
    find_fashion_mnist,
    load_fashion_mnist,
    read_idx,
    scan_image_folder,
    train_transform,
)

FMNIST = data.DEBIAN_FASHION_MNIST
needs_fmnist = pytest.mark.skipif(
    data.sources._fashion_mnist_in(FMNIST) is None,
    reason=f"real Fashion-MNIST is not installed at {FMNIST} (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test reads the user's settings or writes to ~/.cache."""
    monkeypatch.delenv("MAELIB_FASHION_MNIST", raising=False)
    monkeypatch.setenv("MAELIB_DATA", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------ writers
def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    raw = struct.pack(">i", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_fake_fashion_mnist(directory: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> Path:
    """Fake Fashion-MNIST: pixel [i, row, col] = i + row (so orientation is testable), label i % 10."""
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = np.broadcast_to(np.arange(n)[:, None, None] + np.arange(28)[None, :, None], (n, 28, 28))
        images = images.astype(np.uint8)
        write_idx(directory / f"{split}-images-idx3-ubyte{ext}", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte{ext}", (np.arange(n) % 10).astype(np.uint8))
    return directory


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_tiny_cifar10(root: Path, monkeypatch, per_batch: int = 8, n_test: int = 10) -> np.ndarray:
    """torchvision's cifar-10-batches-py/ with 5 x per_batch train images; its md5 table is pointed at these
    files, so torchvision's real integrity check runs and passes. Returns the train images (N, 3, 32, 32)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    all_train = []
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        images = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G plane, B plane
        (folder / name).write_bytes(pickle.dumps({"data": images, "labels": [i % 10 for i in range(n)]}))
        if name != "test_batch":
            all_train.append(images.reshape(n, 3, 32, 32))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": data.CLASS_NAMES["cifar10"]}))
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5(folder / n)] for n in names[:5]])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / "batches.meta")})
    return np.concatenate(all_train)


def write_tiny_stl10(root: Path, monkeypatch, n_train: int = 10, n_test: int = 10, n_unlabeled: int = 6) -> np.ndarray:
    """torchvision's stl10_binary/: (N, 3, 96, 96) images stored column-major, labels 1..10, md5s patched.
    Returns the train images as they should come out, (N, 3, H, W)."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    stored = {}
    for name, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        stored[name] = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # (N, C, W, H) on disk
        (folder / f"{name}_X.bin").write_bytes(stored[name].tobytes())
        if name != "unlabeled":
            (folder / f"{name}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(data.CLASS_NAMES["stl10"]) + "\n")
    cls = torchvision.datasets.STL10
    train_files = ("train_X.bin", "train_y.bin", "unlabeled_X.bin")
    monkeypatch.setattr(cls, "train_list", [[n, md5(folder / n)] for n in train_files])
    monkeypatch.setattr(cls, "test_list", [[n, md5(folder / n)] for n in ("test_X.bin", "test_y.bin")])
    return stored["train"].transpose(0, 1, 3, 2)


def write_image_folder(root: Path) -> Path:
    """cats: 6 RGB images of assorted sizes; dogs: 6 greyscale; plus a truncated PNG and a notebook folder."""
    rng = np.random.default_rng(2)
    for i in range(6):
        (root / "cats").mkdir(parents=True, exist_ok=True)
        (root / "dogs").mkdir(parents=True, exist_ok=True)
        h, w = 20 + 7 * i, 50 - 4 * i
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "cats" / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (w, h), dtype=np.uint8), mode="L").save(root / "dogs" / f"{i}.png")
    whole = (root / "dogs" / "0.png").read_bytes()
    (root / "dogs" / "broken.png").write_bytes(whole[: len(whole) // 2])
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    (root / "cats" / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------------------------------ Fashion-MNIST
@needs_fmnist
def test_real_fashion_mnist_shapes_and_labels():
    images, labels = load_fashion_mnist("train", FMNIST)
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [6000] * 10
    test_images, test_labels = load_fashion_mnist("test", FMNIST)
    assert test_images.shape == (10000, 28, 28) and torch.bincount(test_labels).tolist() == [1000] * 10
    assert abs(images.float().mean().item() / 255 - data.STATS["fashion_mnist"][0][0]) < 1e-3
    assert load_fashion_mnist("train", FMNIST)[0] is images  # cached per process
    assert labels[:5].tolist() == [9, 0, 0, 3, 0]  # the published order: an ankle boot first
    mean_image = images.float().mean(0)
    assert mean_image[:, 3].sum() < mean_image[3, :].sum()  # garments fill the width more than the height edges


@needs_fmnist
def test_default_search_finds_debian_package():
    assert find_fashion_mnist(download=False) == FMNIST


def test_search_order_root_then_env_then_debian_then_cache(tmp_path, monkeypatch):
    env_dir = write_fake_fashion_mnist(tmp_path / "env")
    root_dir = write_fake_fashion_mnist(tmp_path / "root", gz=False)
    cache_dir = write_fake_fashion_mnist(tmp_path / "cache" / "FashionMNIST" / "raw")  # torchvision's layout
    debian_dir = write_fake_fashion_mnist(tmp_path / "debian")
    monkeypatch.setattr(data.sources, "DEBIAN_FASHION_MNIST", debian_dir)
    assert find_fashion_mnist(download=False) == debian_dir
    monkeypatch.setattr(data.sources, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    assert find_fashion_mnist(download=False) == cache_dir
    monkeypatch.setenv("MAELIB_FASHION_MNIST", str(env_dir))
    assert find_fashion_mnist(download=False) == env_dir
    assert find_fashion_mnist(root_dir, download=False) == root_dir
    images, labels = load_fashion_mnist("test", root=root_dir)  # uncompressed files read too
    assert images.shape == (10, 28, 28) and labels.tolist() == list(range(10))
    assert images[3, 5, 0] == 3 + 5 and images[3, 0, 5] == 3  # rows are rows


def test_empty_root_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="(?s)not found in .*empty.*apt-get install dataset-fashion-mnist"):
        find_fashion_mnist(tmp_path / "empty")


def test_nothing_found_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setattr(data.sources, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(FileNotFoundError) as err:
        find_fashion_mnist()
    message = str(err.value)
    for expected in ("not-installed", str(tmp_path / "cache"), "download failed", "no network",
                     "dataset-fashion-mnist", "MAELIB_FASHION_MNIST", "internet"):
        assert expected in message
    with pytest.raises(FileNotFoundError, match="download=False"):
        find_fashion_mnist(download=False)


def test_corrupt_idx_files_are_clear_errors(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    good = write_idx(tmp_path / "good.gz", images)
    assert read_idx(good, 3).shape == (4, 28, 28)
    with pytest.raises(ValueError, match="magic number 2051, expected 2049"):
        read_idx(good, 1)  # an image file where labels are expected
    raw = gzip.decompress(good.read_bytes())
    (tmp_path / "short").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r"truncated or corrupt: its header promises \(4, 28, 28\)"):
        read_idx(tmp_path / "short", 3)
    (tmp_path / "header").write_bytes(raw[:10])
    with pytest.raises(ValueError, match="shorter than its 16-byte IDX header"):
        read_idx(tmp_path / "header", 3)
    (tmp_path / "cut.gz").write_bytes(good.read_bytes()[:30])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(tmp_path / "cut.gz", 3)
    (tmp_path / "text").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ValueError, match="magic number"):
        read_idx(tmp_path / "text", 3)


def test_mismatched_fashion_mnist_files(tmp_path):
    root = write_fake_fashion_mnist(tmp_path / "fm")
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        load_fashion_mnist("test", root)


# ------------------------------------------------------------------------------------------ datasets, transforms
def test_tensor_image_dataset_without_transform():
    ds = TensorImageDataset(torch.full((5, 6, 7), 255, dtype=torch.uint8), torch.arange(5))
    img, label = ds[2]
    assert img.shape == (1, 6, 7) and img.dtype == torch.float32 and img.max() == 1.0 and label == 2
    ds = TensorImageDataset(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), [0, 1, 2])
    assert ds[0][0].shape == (3, 8, 8) and len(ds) == 3
    with pytest.raises(ValueError, match="uint8"):
        TensorImageDataset(torch.zeros(3, 8, 8), [0, 1, 2])
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        TensorImageDataset(torch.zeros(3, 8, 8, dtype=torch.uint8), [0, 1])


def test_channel_stats():
    assert channel_stats((0.5,), (0.2,), 3) == ((0.5,) * 3, (0.2,) * 3)
    mean, std = channel_stats((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), 1)
    assert mean == pytest.approx((0.299,)) and std == pytest.approx((0.114,))
    assert channel_stats((0.1, 0.2, 0.3), (1, 1, 1), 3) == ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))


def test_transforms_shapes_channels_and_modes():
    grey = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    kw = dict(mean=(0.5,), std=(0.25,))
    out = eval_transform(img_size=28, in_chans=1, **kw)(grey)
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert torch.allclose(out, (grey / 255 - 0.5) / 0.25, atol=1e-6)  # already 28 px: no resampling
    rgb = eval_transform(img_size=32, in_chans=3, **kw)(grey)
    assert rgb.shape == (3, 32, 32) and torch.equal(rgb[0], rgb[2])
    colour = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    assert eval_transform(img_size=24, in_chans=1, **kw)(colour).shape == (1, 24, 24)
    pil = Image.fromarray(colour.permute(1, 2, 0).numpy())
    assert eval_transform(img_size=24, in_chans=3, **kw)(pil).shape == (3, 24, 24)
    for augment in ("mae", "flip", "none"):
        tf = train_transform(img_size=20, in_chans=3, augment=augment, **kw)
        assert tf(colour).shape == (3, 20, 20) and tf(pil).shape == (3, 20, 20)
    torch.manual_seed(0)
    flips = {train_transform(img_size=28, in_chans=1, augment="flip", **kw)(grey)[0, 0, 0].item() for _ in range(20)}
    assert len(flips) == 2  # the left or the right edge comes first
    with pytest.raises(ValueError, match="augment must be one of"):
        train_transform(img_size=20, in_chans=3, augment="strong", **kw)


def test_denormalize_inverts_normalisation():
    x = torch.rand(4, 3, 8, 8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    normed = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(denormalize(normed, mean, std), x, atol=1e-6)
    assert torch.allclose(denormalize(normed[0], mean, std), x[0], atol=1e-6)  # one image (C, H, W)
    assert denormalize(torch.full((1, 1, 2, 2), 100.0), (0.5,), (0.5,)).max() == 1.0  # clamped for plots


# ------------------------------------------------------------------------------------------ the datamodule
@needs_fmnist
def test_datamodule_fashion_mnist_batches_and_normalisation():
    dm = MAEDataModule(root=str(FMNIST), batch_size=64, train_subset=1000, test_subset=2000)
    assert dm.num_classes == 10 and dm.class_names[0] == "T-shirt/top" and dm.mean == (0.286,)
    imgs, labels, _ = next(iter(dm.train_dataloader()))
    assert imgs.shape == (64, 1, 28, 28) and imgs.dtype == torch.float32 and labels.dtype == torch.int64
    assert len(dm.train_dataloader()) == 1000 // 64  # incomplete batch dropped
    val = torch.cat([x for x, _ in dm.val_dataloader()])
    assert val.shape == (2000, 1, 28, 28)
    assert abs(val.mean().item()) < 0.05 and abs(val.std().item() - 1) < 0.05
    # the labelled train loader: same images, eval transform, in order
    x0, y0 = next(iter(dm.labelled_train_dataloader()))
    full_images, full_labels = load_fashion_mnist("train", FMNIST)
    idx = data.sampling._subset_indices(60000, 1000, seed=0, what="train_subset")
    assert torch.equal(y0, full_labels[idx[:64]])
    assert torch.allclose(denormalize(x0, dm.mean, dm.std), full_images[idx[:64]].unsqueeze(1) / 255, atol=1e-5)
    same = MAEDataModule(root=str(FMNIST), train_subset=1000)
    same.setup()
    assert torch.equal(same.train_set.labels, dm.train_set.labels)  # the subset is seeded


@needs_fmnist
def test_datamodule_fashion_mnist_as_rgb_for_a_colour_model():
    dm = MAEDataModule(root=str(FMNIST), img_size=32, in_chans=3, batch_size=16, train_subset=64, test_subset=16)
    imgs, _, _ = next(iter(dm.train_dataloader()))
    assert imgs.shape == (16, 3, 32, 32) and torch.equal(imgs[:, 0], imgs[:, 1])
    assert dm.mean == (0.286,) * 3 and dm.std == (0.353,) * 3


def test_datamodule_errors(tmp_path):
    root = str(write_fake_fashion_mnist(tmp_path / "fm", n_train=20, n_test=10))
    too_big = MAEDataModule(root=root, batch_size=32)
    for _ in range(2):  # a failed setup is not half-remembered
        with pytest.raises(ValueError, match="batch_size=32 is larger than the 20 training images"):
            too_big.train_dataloader()
    with pytest.raises(ValueError, match="10 classes .* fewer than min_classes=12"):
        MAEDataModule(root=root, batch_size=4, min_classes=12).setup()
    with pytest.raises(ValueError, match="only .* of the 10 classes .* raise train_subset"):
        MAEDataModule(root=root, batch_size=4, train_subset=5, min_classes=10).setup()
    with pytest.raises(ValueError, match="train_subset=50 must be between 1 and the 20"):
        MAEDataModule(root=root, batch_size=4, train_subset=50).setup()
    with pytest.raises(ValueError, match="dataset must be one of"):
        MAEDataModule(dataset="imagenet")
    with pytest.raises(ValueError, match="augment must be one of"):
        MAEDataModule(augment="heavy")
    with pytest.raises(ValueError, match="in_chans must be 1"):
        MAEDataModule(in_chans=4)
    with pytest.raises(ValueError, match="needs root"):
        MAEDataModule(dataset="imagefolder")
    with pytest.raises(FileNotFoundError, match="not found in"):
        MAEDataModule(root=str(tmp_path / "nowhere")).setup()
    ok = MAEDataModule(root=root, batch_size=20, train_subset=20, min_classes=10)
    ok.setup()  # exactly as many images as the batch: one batch
    assert len(ok.train_dataloader()) == 1


def test_cifar10_through_the_datamodule(tmp_path, monkeypatch):
    train_images = write_tiny_cifar10(tmp_path / "tv", monkeypatch)
    dm = MAEDataModule(dataset="cifar10", root=str(tmp_path / "tv"), img_size=32, in_chans=3, batch_size=8,
                       download=False)
    dm.prepare_data()  # download=False: nothing to fetch
    imgs, labels, _ = next(iter(dm.train_dataloader()))
    assert imgs.shape == (8, 3, 32, 32) and labels.dtype == torch.int64
    assert dm.class_names == data.CLASS_NAMES["cifar10"] and dm.num_classes == 10
    assert len(dm.train_set) == 40 and len(dm.val_set) == 10 and dm.test_set is dm.val_set
    x, y = next(iter(dm.labelled_train_dataloader()))
    assert torch.allclose(denormalize(x, dm.mean, dm.std), torch.from_numpy(train_images[:8]) / 255, atol=1e-5)
    assert y.tolist() == [i % 10 for i in range(8)]
    grey = MAEDataModule(dataset="cifar10", root=str(tmp_path / "tv"), img_size=16, in_chans=1, batch_size=4,
                         test_subset=4, download=False)
    assert next(iter(grey.val_dataloader()))[0].shape == (4, 1, 16, 16) and len(grey.mean) == 1


def test_cifar10_missing_is_a_clear_error(tmp_path):
    dm = MAEDataModule(dataset="cifar10", root=str(tmp_path / "none"), in_chans=3, download=False)
    with pytest.raises(RuntimeError, match="(?s)could not load cifar10.*download=True.*cifar-10-batches-py"):
        dm.setup()


def test_stl10_through_the_datamodule(tmp_path, monkeypatch):
    train_images = write_tiny_stl10(tmp_path / "tv", monkeypatch)
    kw = dict(dataset="stl10", root=str(tmp_path / "tv"), img_size=64, in_chans=3, batch_size=4, download=False)
    dm = MAEDataModule(**kw)
    imgs, labels, _ = next(iter(dm.train_dataloader()))
    assert imgs.shape == (4, 3, 64, 64) and set(labels.tolist()) <= set(range(10))
    assert len(dm.train_set) == 10 and dm.class_names == data.CLASS_NAMES["stl10"]
    assert next(iter(dm.test_dataloader()))[1].tolist() == [0, 1, 2, 3]  # labels 1..10 on disk
    pretrain = MAEDataModule(**kw, stl10_unlabeled=True)
    pretrain.setup()
    assert len(pretrain.train_set) == 16 and len(pretrain.labelled_train_set) == 10
    all_labels = torch.cat([y for _, y, _ in pretrain.train_dataloader()])
    assert (all_labels == -1).sum() == 6  # 16 images in 4 full batches; the 6 unlabelled ones are marked -1
    assert torch.cat([y for _, y in pretrain.labelled_train_dataloader()]).min() == 0
    full_size = MAEDataModule(**{**kw, "img_size": 96})
    x, _ = next(iter(full_size.labelled_train_dataloader()))
    assert torch.allclose(denormalize(x, full_size.mean, full_size.std), torch.from_numpy(train_images[:4]) / 255,
                          atol=1e-5)


def test_image_folder(tmp_path, caplog):
    root = write_image_folder(tmp_path / "photos")
    samples, classes, skipped = scan_image_folder(root)  # listed by extension: nothing is opened
    assert classes == ["cats", "dogs"] and len(samples) == 13 and not skipped
    with caplog.at_level(logging.WARNING, logger="maelib.data"):
        samples, classes, skipped = scan_image_folder(root, verify=True)
    assert classes == ["cats", "dogs"] and len(samples) == 12
    assert [Path(p).name for p in skipped] == ["broken.png"] and "skipped 1 unreadable" in caplog.text
    root = tmp_path / "photos"
    (root / "dogs" / "broken.png").unlink()  # the broken file's lazy skipping: test_scale.py
    for in_chans in (1, 3):
        dm = MAEDataModule(dataset="imagefolder", root=str(root), img_size=24, in_chans=in_chans, batch_size=3,
                           val_fraction=0.25, seed=1)
        imgs, labels, _ = next(iter(dm.train_dataloader()))
        assert imgs.shape == (3, in_chans, 24, 24) and labels.dtype == torch.int64
        val = next(iter(dm.val_dataloader()))[0]
        assert val.shape == (3, in_chans, 24, 24)
        assert dm.mean == channel_stats(*data.STATS["imagefolder"], in_chans)[0]
    assert dm.class_names == ["cats", "dogs"] and not dm.in_memory  # images of 12 sizes: read from disk
    assert len(dm.val_set) == 3 and len(dm.train_set) == 9
    train_files = {p for p, _ in dm.train_set.samples}
    assert train_files.isdisjoint(p for p, _ in dm.val_set.samples)

    def val_files(seed):
        m = MAEDataModule(dataset="imagefolder", root=str(root), in_chans=3, batch_size=2, val_fraction=0.25, seed=seed)
        m.setup()
        return [p for p, _ in m.val_set.samples]

    assert val_files(1) == val_files(1) == [p for p, _ in dm.val_set.samples]
    assert any(val_files(1) != val_files(s) for s in (2, 3, 4))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_image_folder_batches_normalised_on_the_device_equal_the_loaders(tmp_path, in_chans):
    """normalize_on_device: uint8 leaves the loader (4x fewer bytes), `on_after_batch_transfer` normalises it,
    and the result is the batch the normalising loader gives for the same seed, exactly."""
    root = write_image_folder(tmp_path / "photos")
    kw = dict(dataset="imagefolder", root=str(root), img_size=24, in_chans=in_chans, batch_size=3, seed=1)
    plain, deferred = MAEDataModule(**kw), MAEDataModule(**kw, normalize_on_device=True)
    assert not plain.normalizes_on_device()  # default: only when a Trainer runs on CUDA
    for (want, labels, _), (raw, raw_labels, _) in zip(plain.train_dataloader(), deferred.train_dataloader()):
        assert want.dtype == torch.float32 and raw.dtype == torch.uint8 and raw.shape == want.shape
        got, got_labels = deferred.on_after_batch_transfer([raw, raw_labels], 0)
        assert torch.equal(got, want) and torch.equal(got_labels, labels)
    val = next(iter(deferred.val_dataloader()))
    assert deferred.on_after_batch_transfer(val, 0)[0] is val[0]  # float batches pass unchanged


def test_image_folder_layout_errors(tmp_path):
    layout = "root/class_name/image.jpg"
    with pytest.raises(FileNotFoundError, match=f"does not exist.*{layout}"):
        scan_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"no image files .* and no class sub-folders.*{layout}"):
        MAEDataModule(dataset="imagefolder", root=str(tmp_path / "empty")).setup()
    (tmp_path / "noimg" / "cats").mkdir(parents=True)
    (tmp_path / "noimg" / "cats" / "x.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=f"no image files.*{layout}"):
        scan_image_folder(tmp_path / "noimg")


def test_a_folder_without_class_folders_is_unlabelled(tmp_path):
    """Images directly in root: every one is a sample, labelled UNLABELLED (-1), with no class names; pretraining
    batches come out of it, and evaluation asks for the class layout."""
    from maelib.data.checks import check_labelled
    from maelib.data.datasets import UNLABELLED

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(20):
        Image.new("RGB", (16, 16), (12 * i, 3 * i, 200)).save(flat / f"img_{i:02d}.png")
    (flat / "notes.txt").write_text("not an image")
    samples, classes, skipped = scan_image_folder(flat)
    assert len(samples) == 20 and classes == [] and skipped == [] and {label for _, label in samples} == {UNLABELLED}
    dm = MAEDataModule(dataset="imagefolder", root=str(flat), img_size=16, in_chans=3, batch_size=4, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    imgs, labels, _ = next(iter(dm.train_dataloader()))
    assert imgs.shape[1:] == (3, 16, 16) and set(labels.tolist()) == {UNLABELLED}
    assert dm.num_classes == 0 and not dm.has_class_labels
    with pytest.raises(ValueError, match="the linear probe needs labelled images.*unlabelled folder.*root/<class>/<image>"):
        check_labelled(dm, "the linear probe")


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_lightning_trainer_runs_the_hooks(tmp_path):
    import lightning as L

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)
            self.shapes = []

        def training_step(self, batch, batch_idx):
            self.shapes.append(tuple(batch[0].shape))
            return self.layer(batch[0].mean().view(1, 1)).sum()

        def validation_step(self, batch, batch_idx):
            self.shapes.append(tuple(batch[0].shape))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    root = str(write_fake_fashion_mnist(tmp_path / "fm", n_train=20, n_test=10))
    dm = MAEDataModule(root=root, img_size=32, in_chans=3, batch_size=8)
    module = Recorder()
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert module.shapes == [(8, 3, 32, 32)] * 2 + [(8, 3, 32, 32), (2, 3, 32, 32)]  # 20 // 8 train, then val
    assert dm.hparams.dataset == "fashion_mnist" and dm.hparams.img_size == 32


# ------------------------------------------------------------------------------------------ batched transforms
def test_random_resized_crop_full_view_is_identity_or_mirror():
    from maelib.data import random_resized_crop

    x = torch.rand(16, 3, 12, 12)
    same = random_resized_crop(x, 12, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(same, x, atol=1e-5)
    out = random_resized_crop(x, 12, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True)
    mirrored = torch.tensor([torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)])
    assert torch.all(mirrored | kept) and mirrored.any() and kept.any()


def test_random_resized_crop_zooms_into_the_image():
    from maelib.data import random_resized_crop

    # a ramp image: a crop of a quarter of the area spans about half the ramp
    ramp = torch.linspace(0, 1, 64).expand(64, 64).reshape(1, 1, 64, 64).repeat(32, 1, 1, 1)
    out = random_resized_crop(ramp, 32, scale=(0.25, 0.25), ratio=(1.0, 1.0), flip=False)
    span = out[:, 0, 16, -1] - out[:, 0, 16, 0]
    assert out.shape == (32, 1, 32, 32)
    assert torch.allclose(span, torch.full((32,), 0.5), atol=0.05)
    assert len(set(out[:, 0, 16, 0].round(decimals=3).tolist())) > 10  # every image its own crop


def test_batch_transform_matches_the_per_image_eval_transform():
    from maelib.data import BatchTransform

    yy, xx = torch.meshgrid(torch.linspace(0, 3, 28), torch.linspace(0, 3, 28), indexing="ij")
    smooth = 0.5 + 0.4 * torch.sin(yy[None] * torch.arange(1, 5).view(4, 1, 1) + xx)  # no clipping at 0 or 255
    imgs = (smooth * 255).round().to(torch.uint8).unsqueeze(1)  # (4, 1, 28, 28)
    kw = dict(img_size=32, in_chans=3, mean=(0.3,), std=(0.4,))
    batched = BatchTransform(**kw, augment="none")(imgs)
    single = torch.stack([eval_transform(**kw)(img) for img in imgs])
    assert batched.shape == (4, 3, 32, 32)
    # the per-image path resizes uint8 pixels (rounding to whole grey levels), the batched one floats
    assert torch.allclose(batched, single, atol=1 / 255 / 0.4)


def test_holdout_scores_on_training_images_that_never_train():
    """MAEDataModule(holdout=N): a seeded N of Fashion-MNIST's training images leave training and become the val and
    test split, so settings are chosen without the test set; the same seed holds out the same images."""
    from maelib.data import MAEDataModule

    dm = MAEDataModule(holdout=1000, augment="none", batch_size=256)
    dm.setup()
    assert len(dm.labelled_train_set) == 59000 and len(dm.test_set) == 1000
    held = {hashlib.md5(img.numpy().tobytes()).hexdigest() for img in dm.test_set.images}
    trained = {hashlib.md5(img.numpy().tobytes()).hexdigest() for img in dm.labelled_train_set.images}
    assert not held & trained  # no held-out image is also a training image
    again = MAEDataModule(holdout=1000, augment="none", batch_size=256)
    again.setup()
    assert torch.equal(again.test_set[0][0], dm.test_set[0][0])
    with pytest.raises(ValueError, match="holdout is for datasets with a test split"):
        MAEDataModule(dataset="imagefolder", root="anywhere", holdout=10)


def test_the_example_folder_is_seeded_labelled_or_flat_and_never_overwrites(tmp_path):
    from maelib.data.example_folder import EXAMPLE_CLASSES, example_pictures, write_example_folder

    pictures, labels = example_pictures(3, seed=1)
    assert pictures.shape == (27, 3, 64, 64) and pictures.dtype == torch.uint8
    assert labels.tolist() == [c for c in range(9) for _ in range(3)] and len(EXAMPLE_CLASSES) == 9
    again, _ = example_pictures(3, seed=1)
    assert torch.equal(again, pictures) and not torch.equal(example_pictures(3, seed=2)[0], pictures)
    root = write_example_folder(tmp_path / "labelled", 3, val_per_class=2, seed=1)
    for split, n in (("train", 3), ("val", 2)):
        folders = sorted(p for p in (root / split).iterdir() if p.is_dir())
        assert len(folders) == 9 and all(len(list(f.glob("*.png"))) == n for f in folders)
    flat = write_example_folder(tmp_path / "flat", 3, flat=True, seed=1)
    assert len(list(flat.glob("*.png"))) == 27 and not any(p.is_dir() for p in flat.iterdir())
    with pytest.raises(FileExistsError, match="not empty"):
        write_example_folder(flat, 3)
    dm = MAEDataModule(dataset="imagefolder", root=str(root / "train"), val_root=str(root / "val"), img_size=64,
                       in_chans=3, batch_size=4)
    dm.setup("fit")
    assert dm.num_classes == 9
