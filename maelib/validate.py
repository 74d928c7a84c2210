"""Checks of what users hand to maelib: numbers, sizes, images. Each raises with the problem and the fix.

How errors are written here (and everywhere in maelib, see the README's "Bad input"): say what was given and what
was expected, then the fix (the flag, argument or call that repairs it); raise before any work starts, and
never leave a half-written file behind.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch


def _kind(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(name: str, value, *, minimum: int = 1, where: str = "") -> int:
    """An integer >= `minimum`: Python or numpy integers and 0-d integer tensors; not bools, floats or strings."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = ""
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            hint = f": write {name}={int(value)}, a number, not the text {value!r}"
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            hint = f": sizes and counts are whole numbers, e.g. {name}={max(minimum, round(float(value)))}"
        raise TypeError(f"{name} must be an integer{where}, got {_kind(value)}{hint}")
    if value < minimum:
        raise ValueError(f"{name} must be {minimum} or more{where}, got {value}: set {name} to {minimum} or more")
    return int(value)


def as_real(name: str, value, *, where: str = "") -> float:
    """A real number of any kind (int, float, numpy scalar, 0-d tensor) as a Python float; not bools or strings."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = ""
        if isinstance(value, str):
            try:
                hint = f": write {name}={float(value)}, a number, not the text {value!r}"
            except ValueError:
                pass
        raise TypeError(f"{name} must be a number{where}, got {_kind(value)}{hint}")
    return float(value)


def check_positive(name: str, value, *, flag: str | None = None) -> float:
    """A real number > 0 (a learning rate, say), or an error that names the setting (`flag`, e.g.
    "--model.base_lr", as the user wrote it) and the fix."""
    value = as_real(name, value)
    if not value > 0:
        setting = flag or name
        raise ValueError(f"{setting} must be greater than 0, got {value}: a learning rate of zero trains nothing and a "
                         f"negative one climbs the loss; set {setting} to a positive number, e.g. {setting} 1.5e-4")
    return value


def check_bool(name: str, value, *, where: str = "") -> bool:
    """True or False (numpy bools too). The text "false" is refused: as a Python truth value it is True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False{where}, got {_kind(value)}")


def as_image_batch(imgs, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Images for a model: a float tensor (N, C, H, W). numpy arrays become tensors and other float dtypes
    (float64, ...) the model's `dtype`; integer pixels are refused, since they need the data's normalisation."""
    if isinstance(imgs, np.ndarray):
        imgs = torch.from_numpy(imgs)
    if not isinstance(imgs, torch.Tensor):
        raise TypeError(f"images must be a torch tensor (N, C, H, W), got {type(imgs).__name__}: "
                        "torch.as_tensor(images), or stack a list of images with torch.stack")
    if not imgs.is_floating_point():
        raise TypeError(
            f"images are {str(imgs.dtype).removeprefix('torch.')} tensors; the model takes normalised float pixels: "
            "imgs.float() / 255 for 0..255 pixels, then normalise with the training data's mean and std "
            "((x - mean) / std, e.g. maelib.data.STATS['fashion_mnist']), as MAEDataModule's loaders do")
    if imgs.ndim == 4 and imgs.shape[0] == 0:
        raise ValueError(f"an empty batch of images {tuple(imgs.shape)}: give at least one image")
    return imgs.to(dtype) if imgs.dtype != dtype else imgs


def check_loss(loss: torch.Tensor, step: int, processes: int = 1, *, inputs: torch.Tensor | None = None,
               batch: str = "this batch") -> None:
    """Stop at once on a NaN or inf loss, before it reaches the weights (and so any later checkpoint). `loss` is
    the mean over `processes` when there are several. With the step's `inputs`, the message says whether they
    hold non-finite values, and in how many of the batch's samples."""
    if torch.isfinite(loss):
        return
    where = f" on at least one of the {processes} processes" if processes > 1 else ""
    cause = "Lower the learning rate, add gradient clipping (--trainer.gradient_clip_val 1.0) or check the data."
    if inputs is not None:
        bad = int((~torch.isfinite(inputs.detach().flatten(1))).any(dim=1).sum())
        if bad:
            cause = (f"The input is at fault: {batch} holds NaN or inf values in {bad} of its {len(inputs)} samples"
                     f"{' (on this process)' if processes > 1 else ''}. Clean those images (or drop them) and "
                     "train again.")
    raise FloatingPointError(
        f"the loss became {loss.item()} at step {step}{where}: training stopped and the last checkpoint is kept. {cause}")
