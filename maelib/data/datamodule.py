"""`MAEDataModule`: the Lightning data module that builds every split and its loaders."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from . import sources
from .color import JITTER
from .datasets import _LAYOUT, ImageFileDataset, TensorImageDataset, cached_scan, decode_images, fits_in_memory
from .sampling import ResumableBatchSampler, ResumableDataLoader, ShardSampler, _seeded_indices, _subset_indices
from .sources import DATASETS, STATS, data_dir, find_fashion_mnist, load_fashion_mnist, load_torchvision
from .transforms import (
    AUGMENTS,
    FINETUNE_AUTO_AUGMENT,
    BatchTransform,
    ToModelInput,
    channel_stats,
    eval_transform,
    finetune_transform,
    train_transform,
)

log = logging.getLogger("maelib.data")

class MAEDataModule(L.LightningDataModule):
    """Train/val/test loaders of normalised images (B, in_chans, img_size, img_size) and int64 labels (B,).

    dataset: "fashion_mnist" (offline default), "cifar10", "stl10", "imagefolder" or "photos" (random crops of
        the photos in `maelib.data.photos`, unlabelled: the training photos for training, the held-out ones for val/test).
    root: for fashion_mnist the folder with the IDX files (default: searched, see `find_fashion_mnist`); for
        cifar10/stl10 torchvision's root (default `data_dir()`); for imagefolder the folder root/class/image.
    img_size, in_chans: the model's input; images are resized/cropped and grey<->RGB converted to match.
    num_workers: 0 by default: the in-memory datasets transform a batch in a few ms, and on a 2-core machine a
        worker process competes with training. For image folders (decoding files) use 2..os.cpu_count().
    augment: "mae" (the paper's crop + flip), "mae_color" (crop + flip + colour jitter of strengths `jitter`,
        the paper's Table 1e), "flip", "none", or "finetune" (see auto_augment); crop_scale: RandomResizedCrop's scale range; jitter: the
        brightness, contrast, saturation and hue strengths of "mae_color" (`maelib.data.color.JITTER`).
    val_fraction: imagefolder only, the seeded held-out share used for val and test. The other datasets
        validate and test on their test split.
    holdout: datasets with their own test split: a seeded `holdout` of the training images leave training and
        become the val and test split, so that settings are chosen without looking at the test set (imagefolder
        has val_fraction for this).
    val_root: imagefolder only, a separate folder of validation images with the same class folders (ImageNet's
        val): it is the val and test split, and all of `root` trains (val_fraction is not used).
    eval_crop_pct: the eval transform resizes the short side to img_size / eval_crop_pct and takes the centre
        img_size square: 1.0 (default) keeps the whole image; 0.875 is the paper's ImageNet evaluation (256 -> 224).
    auto_augment, reprob: augment="finetune" (RGB image folders): the paper's fine-tuning augmentation built by
        timm (`finetune_transform`): crop (crop_scale; the paper's 0.08-1) + flip, RandAugment `auto_augment`,
        random erasing with probability `reprob`.
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
    got. Validation and test loaders are not sharded (each process evaluates all of them) unless
    `distributed_eval`: then each process scores its share (`ShardSampler`, no image repeated), for the
    classifiers, whose accuracy is summed over processes exactly; pretraining's val loss is then the mean of the
    processes' means.

    in_memory: imagefolder only. None (default): a folder of at most 50,000 images of one size (and 2 GiB of
        pixels) is decoded once into uint8 tensors and then trains like Fashion-MNIST, with the vectorised batch
        transform (a 6,000-image folder of 28 px PNGs: see benchmarks/RESULTS.md); others are read from disk
        with per-image PIL transforms. True forces the first (or says why not), False the second.

    Image folders: the file list is made once by `prepare_data` and cached (`cached_scan`); files are not opened
    until they are read. A file that cannot be decoded (e.g. a truncated JPEG) is then skipped with a warning and
    counted (`ImageFileDataset.skipped`, or `skipped_files` for a folder decoded into memory); the run stops only
    when more than 1% of the files are broken.
    """

    def __init__(self, *, dataset: str = "fashion_mnist", root: str | Path | None = None, img_size: int = 28,
                 in_chans: int = 1, batch_size: int = 256, num_workers: int = 0, augment: str = "mae",
                 crop_scale: tuple[float, float] = (0.2, 1.0), val_fraction: float = 0.1,
                 train_subset: int | None = None, test_subset: int | None = None, stl10_unlabeled: bool = False,
                 min_classes: int | None = None, seed: int = 0, download: bool = True,
                 normalize_on_device: bool | None = None,
                 jitter: tuple[float, float, float, float] = JITTER, in_memory: bool | None = None,
                 val_root: str | Path | None = None, eval_crop_pct: float = 1.0,
                 auto_augment: str | None = FINETUNE_AUTO_AUGMENT, reprob: float = 0.25,
                 distributed_eval: bool = False, holdout: int | None = None) -> None:
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
        if holdout is not None and dataset == "imagefolder":
            raise ValueError("holdout is for datasets with a test split; an image folder holds out val_fraction of "
                             "its images already (or give val_root)")
        if val_root is not None and dataset != "imagefolder":
            raise ValueError(f"val_root is for dataset='imagefolder' (e.g. ImageNet's val folder); {dataset} has its "
                             "own test split")
        if augment == "finetune" and (dataset != "imagefolder" or in_chans != 3):
            raise ValueError("augment='finetune' (timm's RandAugment and random erasing, the paper's fine-tuning) "
                             f"works on RGB image folders: dataset='imagefolder', in_chans=3 (got {dataset!r}, "
                             f"{in_chans}). Use augment='mae' here")
        if not 0.0 < eval_crop_pct <= 1.0:
            raise ValueError(f"eval_crop_pct must be in (0, 1] (0.875: resize 256, centre crop 224), got {eval_crop_pct}")
        self.save_hyperparameters()
        self.train_set: Dataset | None = None  # augmented, for pretraining
        self.train_set_uint8: Dataset | None = None  # the same, not yet normalised (imagefolder only)
        self._input_on: dict[torch.device, ToModelInput] = {}  # normalisation statistics per device
        self.labelled_train_set: Dataset | None = None  # same labelled images, eval transform (probing, k-NN)
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.skipped_files: list[str] = []  # imagefolder files that could not be read
        self.in_memory = False  # imagefolder: decoded once into uint8 tensors (see in_memory)
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
        """Download once, on one process, only what is missing (nothing for fashion_mnist found offline); list an
        image folder's files once."""
        h = self.hparams
        if h.dataset == "imagefolder":  # list the files once, for every process and later runs (`cached_scan`)
            for root in (h.root, h.val_root):
                if root is not None:
                    cached_scan(root, data_dir() / "folder_index")
        elif h.dataset == "fashion_mnist":
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
        if h.dataset == "imagefolder":
            samples, self._class_names, self.skipped_files = cached_scan(h.root, data_dir() / "folder_index")
            if h.val_root is not None:  # a separate validation folder (ImageNet's val): every training image trains
                train, val = samples, self._val_folder()
            else:  # a seeded val_fraction of the folder is held out and scored as val and test
                if len(samples) < 2:
                    raise ValueError(f"{h.root} has {len(samples)} image; need at least 2 to hold one out")
                order = _seeded_indices(len(samples), h.seed).tolist()
                n_val = min(max(1, round(len(samples) * h.val_fraction)), len(samples) - 1)
                train = [samples[i] for i in sorted(order[n_val:])]
                val = [samples[i] for i in sorted(order[:n_val])]
            train = self._take(train, h.train_subset, "train_subset")
            val = self._take(val, h.test_subset, "test_subset")
            self.in_memory = self._decides_in_memory(train + val)
        if h.dataset == "imagefolder" and not self.in_memory:  # files of any size: per-image transforms on PIL
            eval_tf = eval_transform(**kw, crop_pct=h.eval_crop_pct)
            if h.augment == "finetune":  # timm's, normalised inside: no uint8 copy to normalise on the device
                self.train_set = ImageFileDataset(train, finetune_transform(
                    img_size=h.img_size, mean=self.mean, std=self.std, auto_augment=h.auto_augment, reprob=h.reprob,
                    crop_scale=tuple(h.crop_scale)), h.in_chans)
            else:
                train_tf = train_transform(**kw, augment=h.augment, crop_scale=tuple(h.crop_scale),
                                           jitter=tuple(h.jitter))
                self.train_set = ImageFileDataset(train, train_tf, h.in_chans)
                self.train_set_uint8 = ImageFileDataset(train, train_transform(
                    **kw, augment=h.augment, crop_scale=tuple(h.crop_scale), normalize=False, jitter=tuple(h.jitter)),
                    h.in_chans)
            self.labelled_train_set = ImageFileDataset(train, eval_tf, h.in_chans)
            self.val_set = self.test_set = ImageFileDataset(val, eval_tf, h.in_chans)
            train_labels = [label for _, label in train]
        elif h.dataset == "imagefolder":  # small folder of one image size: decoded once, then as Fashion-MNIST
            train_tf = BatchTransform(**kw, augment=h.augment, crop_scale=tuple(h.crop_scale), jitter=tuple(h.jitter))
            eval_tf = BatchTransform(**kw, augment="none", crop_pct=h.eval_crop_pct)
            images, labels, skipped = decode_images(train, h.in_chans)
            self.train_set = TensorImageDataset(images, labels, train_tf)
            self.labelled_train_set = TensorImageDataset(images, labels, eval_tf)
            val_images, val_labels, val_skipped = decode_images(val, h.in_chans)
            self.val_set = self.test_set = TensorImageDataset(val_images, val_labels, eval_tf)
            self.skipped_files += skipped + val_skipped
            train_labels = labels.tolist()
        else:  # in-memory uint8 tensors: one vectorised transform per batch
            train_tf = BatchTransform(**kw, augment=h.augment, crop_scale=tuple(h.crop_scale), jitter=tuple(h.jitter))
            eval_tf = BatchTransform(**kw, augment="none", crop_pct=h.eval_crop_pct)
            images, labels, self._class_names = self._load("train")
            if h.holdout is not None:  # a seeded share of the training images replaces the test split
                images, labels, held = self._hold_out(images, labels, h.holdout)
            images, labels = self._take((images, labels), h.train_subset, "train_subset")
            self.labelled_train_set = TensorImageDataset(images, labels, eval_tf)
            if h.dataset == "stl10" and h.stl10_unlabeled:
                extra, extra_labels, _ = self._load("unlabeled")
                extra, extra_labels = self._take((extra, extra_labels), h.train_subset, "train_subset")
                images, labels_all = torch.cat([images, extra]), torch.cat([labels, extra_labels])
                self.train_set = TensorImageDataset(images, labels_all, train_tf)
            else:
                self.train_set = TensorImageDataset(images, labels, train_tf)
            test_images, test_labels, _ = self._load("test") if h.holdout is None else (*held, None)
            test_images, test_labels = self._take((test_images, test_labels), h.test_subset, "test_subset")
            self.val_set = self.test_set = TensorImageDataset(test_images, test_labels, eval_tf)
            train_labels = labels.tolist()
        self._check(train_labels)
        self._built = True  # only now: a setup that raised is redone (and raises again) on the next call

    def _hold_out(self, images: torch.Tensor, labels: torch.Tensor, n: int):
        """-> the training images and labels without a seeded `n` of them, and those n (images, labels)."""
        if not 0 < n < len(images):
            raise ValueError(f"holdout={n} must be between 1 and the {len(images)} training images - 1")
        order = _seeded_indices(len(images), self.hparams.seed + 1)  # not the order train_subset draws from
        held, kept = order[:n].sort().values, order[n:].sort().values
        return images[kept], labels[kept], (images[held], labels[held])

    def _val_folder(self) -> list[tuple[str, int]]:
        """The samples of `val_root`, labelled with the training folder's class indices (the same class names)."""
        val, val_classes, skipped = cached_scan(self.hparams.val_root, data_dir() / "folder_index")
        if val_classes != self._class_names:
            extra = sorted(set(val_classes) - set(self._class_names))
            raise ValueError(f"val_root {self.hparams.val_root} has {len(val_classes)} class folders and root "
                             f"{self.hparams.root} {len(self._class_names)}; they must be the same names (e.g. "
                             f"ImageNet's n01440764, ...). Only in val_root: {extra[:5]}. Lay the validation images "
                             "out as val_root/class_name/image.jpg with the training folder's class names")
        self.skipped_files += skipped
        return val

    def _decides_in_memory(self, samples: list[tuple[str, int]]) -> bool:
        """in_memory=None: decode the folder once when it is small and of one image size (`fits_in_memory`)."""
        wanted = self.hparams.in_memory
        if wanted is False or (wanted is None and self.hparams.augment == "finetune"):
            return False  # timm's fine-tuning transform works on PIL images, one by one
        fits, why = fits_in_memory(samples, self.hparams.in_chans)
        if wanted and not fits:
            raise ValueError(f"in_memory=True needs a folder of images of one size that fits in memory, but it has "
                             f"{why}: resize the images once to one size, or leave in_memory unset (None) to read "
                             "the files as they are")
        log.info("image folder %s: %s", self.hparams.root, f"decoded once into memory ({why})" if fits else
                 f"read from disk ({why})")
        return fits

    @property
    def has_class_labels(self) -> bool:
        """False for "photos", whose labels only name the photo, and for data of a single class: no k-NN or probe
        can be scored on them (with one class every answer is right)."""
        return self.hparams.dataset != "photos" and self.num_classes >= 2

    def _load(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        h = self.hparams
        if h.dataset == "photos":
            from .photos import HELD_OUT_PHOTOS, load_photos, training_photos

            names = training_photos() if split == "train" else list(HELD_OUT_PHOTOS)
            which = "train" if split == "train" else "test"
            images = load_photos(names, size=sources.PHOTO_SCALE[which] * h.img_size)
            images = images.repeat_interleave(sources.PHOTO_REPEATS[which], dim=0)
            return images, torch.arange(len(names)).repeat_interleave(sources.PHOTO_REPEATS[which]), names
        if h.dataset == "fashion_mnist":
            return (*load_fashion_mnist(split, h.root, download=h.download), sources.CLASS_NAMES["fashion_mnist"])
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
    def _loader(self, name: str, shard: bool = False) -> DataLoader:
        """An evaluation loader, in order: every image, or with `shard` and distributed_eval this process's share
        (`ShardSampler`)."""
        self.setup()  # a no-op once built; lets notebooks skip the Trainer
        n, dataset = self.hparams.num_workers, getattr(self, name)
        rank, world = self._process()
        sampler = ShardSampler(len(dataset), rank, world) if shard and self.hparams.distributed_eval else None
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=False, sampler=sampler,
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
        return self._loader("val_set", shard=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test_set", shard=True)

    def labelled_train_dataloader(self) -> DataLoader:
        """The training images with the eval transform, in order, with labels: for linear probes and k-NN."""
        return self._loader("labelled_train_set")
