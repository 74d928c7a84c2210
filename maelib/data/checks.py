"""Whether a datamodule's images and labels fit a model: checked by the Lightning modules at `setup`, before any
training, with the flag to change in the message."""

from __future__ import annotations

import torch

from .datasets import ImageFileDataset, TensorImageDataset


def data_hparam(datamodule, name: str):
    value = getattr(datamodule, name, None)
    if value is None:
        value = (getattr(datamodule, "hparams", None) or {}).get(name)
    return value


def check_input_fits(img_size: int, in_chans: int, datamodule, model_fix: str) -> None:
    """Raise if `datamodule` makes images of another size or channel count than the model takes."""
    d_size, d_chans = data_hparam(datamodule, "img_size"), data_hparam(datamodule, "in_chans")
    if d_size is None or d_chans is None or (d_size, d_chans) == (img_size, in_chans):
        return
    raise ValueError(
        f"the data are {d_size}x{d_size} images with {d_chans} channel(s) but the model takes {img_size}x{img_size} "
        f"images with {in_chans}: set --data.img_size {img_size} --data.in_chans {in_chans} (MAEDataModule(img_size="
        f"{img_size}, in_chans={in_chans})) to resize/convert the images, or {model_fix}"
    )


def train_labels(datamodule) -> torch.Tensor | None:
    """The labels of a datamodule's training set (MAEDataModule, FeatureDataModule), or None if unknown."""
    if getattr(datamodule, "on_the_fly", False):  # FeatureDataModule(augment="mae"): its image datamodule's
        return train_labels(datamodule.images)
    ds = getattr(datamodule, "train_set", None)
    if isinstance(ds, TensorImageDataset):
        return ds.labels
    if isinstance(ds, ImageFileDataset):
        return torch.tensor([label for _, label in ds.samples], dtype=torch.int64)
    features = getattr(datamodule, "features", None)
    if isinstance(features, dict) and "train" in features:
        return features["train"][1]
    return None


def check_labelled(datamodule, what: str) -> None:
    """Raise if the datamodule's images have no labels (an image folder without class sub-folders), naming `what`
    needs them (k-NN, the probe, fine-tuning) and the layout that gives them."""
    if getattr(datamodule, "num_classes", None) == 0:
        root = data_hparam(getattr(datamodule, "images", datamodule), "root")  # FeatureDataModule: its images' root
        raise ValueError(f"{what} needs labelled images, and {root or 'this dataset'} is an unlabelled folder (images, "
                         "no class sub-folders). Pretraining works on it as it is; to evaluate, lay out labelled images "
                         "as root/<class>/<image> (e.g. a held-out set) and give that folder as --data.root")


def check_classes_fit(datamodule, num_classes: int, module: str, labels: bool = True) -> None:
    """Raise if a classifier with `num_classes` outputs (of class `module`) does not fit the datamodule's classes,
    or, with `labels`, its training labels: one class, another number of classes, unlabelled or too large labels."""
    check_labelled(datamodule, module)
    data_classes = getattr(datamodule, "num_classes", None)
    if (data_classes is not None and data_classes < 2) or num_classes < 2:
        few = data_classes is not None and data_classes < 2
        raise ValueError(
            f"{f'the dataset has {data_classes}' if few else f'num_classes={num_classes}: the head has {num_classes}'}"
            " class: classification needs 2 or more (with one, every answer is right and an accuracy of 1.0 means "
            "nothing). An image folder needs one sub-folder per class: root/<class>/<image>")
    if data_classes is not None and data_classes != num_classes:
        raise ValueError(
            f"the head has num_classes={num_classes} outputs but the dataset has {data_classes} classes: build "
            f"{module}(num_classes={data_classes}) (the CLI sizes the head to the data), or use a dataset with "
            f"{num_classes} classes")
    found = train_labels(datamodule) if labels else None
    if found is not None and len(found):
        low, high = int(found.min()), int(found.max())
        if low < 0:
            raise ValueError(f"the training set holds unlabelled images (label {low}), e.g. STL-10's unlabeled split: "
                             "classification needs labels: set --data.stl10_unlabeled false")
        if high >= num_classes:
            raise ValueError(f"the training labels go up to {high} but the head has num_classes={num_classes} outputs "
                             f"(labels 0..{num_classes - 1}): build it with num_classes={high + 1}, or fix the labels")
