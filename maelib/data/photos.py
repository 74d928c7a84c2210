"""Colour photos that ship inside installed packages: natural images for MAE without any download.

    photos = load_photos(training_photos(), size=128)   # uint8 (P, 3, 128, 128), the centre squares
    dm = MAEDataModule(dataset="photos", img_size=64, in_chans=3)   # random resized crops of them

scikit-image's wheel carries a few photos (astronaut, chelsea the cat, coffee, ...), scikit-learn's carries two
(china, flower), matplotlib's sample data one portrait (grace_hopper) and one product photo. `HELD_OUT_PHOTOS`
are never trained on: reconstructions of them test what a model learned rather than what it memorised.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()
    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)
    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook
        import matplotlib.image

        with matplotlib.cbook.get_sample_data(filename) as f:
            img = matplotlib.image.imread(f)
        return (img * 255).round().astype(np.uint8) if img.dtype != np.uint8 else img
    return load


# name -> loader of an (H, W, 3 or 4) uint8 array; every one is inside an installed wheel (no network).
PHOTO_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
    "motorcycle_left": lambda: _skimage("stereo_motorcycle")()[0],
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
    "blue_pack": _matplotlib("Minduka_Present_Blue_Pack.png"),
}
HELD_OUT_PHOTOS = ("chelsea", "flower", "grace_hopper")  # a cat, a flower, a portrait: never trained on


def training_photos() -> list[str]:
    """The photos the zoo's colour MAE trained on: every photo of PHOTO_SOURCES but the held-out ones."""
    return [name for name in PHOTO_SOURCES if name not in HELD_OUT_PHOTOS]


@functools.lru_cache(maxsize=64)
def _photo(name: str, size: int) -> torch.Tensor:
    if name not in PHOTO_SOURCES:
        raise ValueError(f"unknown photo {name!r}; available: {', '.join(PHOTO_SOURCES)}")
    x = torch.from_numpy(np.array(PHOTO_SOURCES[name]()[..., :3])).permute(2, 0, 1).float()  # (3, H, W)
    side = min(x.shape[1:])
    top, left = (x.shape[1] - side) // 2, (x.shape[2] - side) // 2
    square = x[None, :, top:top + side, left:left + side]
    return F.interpolate(square, size=size, mode="area")[0].round().clamp(0, 255).to(torch.uint8)


def load_photos(names: Sequence[str] | None = None, size: int = 128) -> torch.Tensor:
    """The centre square of each named photo (default: all), area-downsampled -> uint8 (P, 3, size, size)."""
    names = list(PHOTO_SOURCES) if names is None else list(names)
    return torch.stack([_photo(name, size) for name in names])
