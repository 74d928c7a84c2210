"""Data for MAE pretraining and evaluation: Fashion-MNIST (the offline default), CIFAR-10, STL-10, image folders,
and the colour photos that ship inside installed packages (`maelib.data.photos`).

    dm = MAEDataModule(dataset="fashion_mnist", img_size=28, in_chans=1, batch_size=256)
    dm.setup("fit")
    imgs, labels = next(iter(dm.train_dataloader()))  # (256, 1, 28, 28) float32 normalised, (256,) int64
    pixels = denormalize(imgs, dm.mean, dm.std)        # back to [0, 1] for plots

Every dataset yields (image (in_chans, img_size, img_size) float32, normalised with the dataset's mean/std,
label int). Fashion-MNIST, CIFAR-10 and STL-10 are held in memory as uint8 tensors; image folders are read
from disk. Fashion-MNIST is found offline when possible (see `find_fashion_mnist`); the others are downloaded
by torchvision into `data_dir()` (``$MAELIB_DATA`` or ``~/.cache/maelib``) unless `root` is given.

The package has one job per file: `sources` (finding, downloading and reading the data), `datasets`, `transforms`,
`sampling` (the resumable training order) and `datamodule` (`MAEDataModule`). Everything is importable from
`maelib.data` itself.
"""

from .datamodule import MAEDataModule
from .datasets import (
    ImageFileDataset,
    TensorImageDataset,
    cached_scan,
    decode_images,
    fits_in_memory,
    scan_image_folder,
)
from .sampling import (
    EpochOrder,
    KeyedBatch,
    ResumableBatchSampler,
    ResumableDataLoader,
    ShardSampler,
    random_subset_loader,
)
from .sources import (
    CLASS_NAMES,
    DATASETS,
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_FILES,
    PHOTO_REPEATS,
    PHOTO_SCALE,
    STATS,
    data_dir,
    find_fashion_mnist,
    load_fashion_mnist,
    load_torchvision,
    read_idx,
)
from .transforms import (
    AUGMENTS,
    BatchTransform,
    ToModelInput,
    channel_stats,
    crop_params,
    denormalize,
    eval_transform,
    finetune_transform,
    random_resized_crop,
    train_transform,
)

__all__ = [
    "AUGMENTS", "CLASS_NAMES", "DATASETS", "DEBIAN_FASHION_MNIST", "FASHION_MNIST_FILES", "PHOTO_REPEATS",
    "PHOTO_SCALE", "STATS", "BatchTransform", "EpochOrder", "ImageFileDataset", "KeyedBatch", "MAEDataModule",
    "ResumableBatchSampler", "ResumableDataLoader", "ShardSampler", "TensorImageDataset", "ToModelInput", "cached_scan", "channel_stats",
    "crop_params", "data_dir", "decode_images", "denormalize", "eval_transform", "finetune_transform", "find_fashion_mnist", "fits_in_memory", "load_fashion_mnist",
    "load_torchvision", "random_resized_crop", "random_subset_loader", "read_idx", "scan_image_folder", "train_transform",
]
