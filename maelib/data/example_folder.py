"""An offline stand-in for "your own images": a folder of small colour pictures in classes, written from data that
maelib's dependencies ship, so that the own-images path (pretrain on a folder, evaluate, fine-tune) can be tried
and tested without a download.

    python -m maelib.data.example_folder runs/my_images         # runs/my_images/{train,val}/class_name/*.png
    python -m maelib.data.example_folder runs/my_flat --flat    # the training pictures alone, no classes
    maelib pretrain --config folder --data.root runs/my_images/train --data.val_root runs/my_images/val

Each picture is a Fashion-MNIST item (9 of its classes: all but "ankle boot"), scaled to 44-60 pixels, tinted with
a random colour, and laid over a dimmed random crop of one of the offline photos (`maelib.data.photos`, held-out
photos excluded) at a random place on a 64-pixel canvas. The class is the item's. Training pictures take their
items from Fashion-MNIST's training split, validation pictures from its test split, so no item is in both.

How hard it is (measured on the default folder, seed 0: k-NN of the 900 validation pictures against the 1,530
training ones, mean pooling): raw pixels 50.0%, the tiny ViT at random initialisation 19.1%, chance 11%. As in the
folder of the issue that asked for this (pixels 58.6%), the pixels beat a random encoder, and the backgrounds and
tints leave a pretrained encoder room to do better (README, "Your own images").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .photos import load_photos, training_photos
from .sources import CLASS_NAMES, load_fashion_mnist

EXAMPLE_CLASSES = tuple(CLASS_NAMES["fashion_mnist"][:9])  # "ankle boot" left out: 9 classes
BACKGROUND = 0.35  # the photo crop's brightness, so the item stands out (0.8: k-NN on pixels near chance)
ITEM_SIDES = (44, 61)  # an item's side in pixels, drawn from [44, 61)


def example_pictures(per_class: int = 170, *, size: int = 64, seed: int = 0,
                     split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """per_class pictures of each of the 9 classes, items from Fashion-MNIST's `split` -> uint8 (N, 3, size, size),
    labels int64 (N,), seeded."""
    items, labels = load_fashion_mnist(split)
    photos = load_photos(training_photos(), size=2 * size)  # (P, 3, 2 size, 2 size)
    g = torch.Generator().manual_seed(seed)
    pictures, out_labels = [], []
    for label in range(len(EXAMPLE_CLASSES)):
        pool = (labels == label).nonzero().flatten()
        for index in pool[torch.randperm(len(pool), generator=g)[:per_class]].tolist():
            photo = photos[int(torch.randint(len(photos), (1,), generator=g))].float()
            top, left = torch.randint(size + 1, (2,), generator=g).tolist()
            canvas = photo[:, top:top + size, left:left + size] * BACKGROUND  # a dimmed background crop
            side = int(torch.randint(*ITEM_SIDES, (1,), generator=g))
            item = F.interpolate(items[index][None, None].float() / 255, size=side, mode="bilinear",
                                 align_corners=False)[0]  # (1, side, side) in [0, 1]: how much item covers a pixel
            tint = 60 + 195 * torch.rand(3, 1, 1, generator=g)  # a random colour, not too dark
            y, x = torch.randint(size - side + 1, (2,), generator=g).tolist()
            region = canvas[:, y:y + side, x:x + side]
            canvas[:, y:y + side, x:x + side] = region * (1 - item) + tint * item
            pictures.append(canvas.round().clamp(0, 255).to(torch.uint8))
            out_labels.append(label)
    return torch.stack(pictures), torch.tensor(out_labels)


def _write(folder: Path, pictures: torch.Tensor, labels: torch.Tensor, flat: bool) -> None:
    for i, (picture, label) in enumerate(zip(pictures, labels.tolist())):
        where = folder if flat else folder / EXAMPLE_CLASSES[label].lower().replace("/", "-").replace(" ", "_")
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(where / f"{i:05d}.png")


def write_example_folder(root: str | Path, per_class: int = 170, *, val_per_class: int = 100, size: int = 64,
                         flat: bool = False, seed: int = 0) -> Path:
    """Write `example_pictures` as PNGs: root/train/class_name/NNNNN.png and root/val/class_name/NNNNN.png (items
    from Fashion-MNIST's test split), or, with flat=True, the training pictures alone directly in root (unlabelled).
    Refuses a root that already holds files (nothing already written is overwritten)."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty: give a new folder for the example pictures (nothing was written)")
    if flat:
        _write(root, *example_pictures(per_class, size=size, seed=seed), flat=True)
        return root
    _write(root / "train", *example_pictures(per_class, size=size, seed=seed), flat=False)
    _write(root / "val", *example_pictures(val_per_class, size=size, seed=seed + 1, split="test"), flat=False)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="a new folder to write the pictures into")
    parser.add_argument("--per-class", type=int, default=170, help="training pictures per class (9 classes)")
    parser.add_argument("--val-per-class", type=int, default=100, help="validation pictures per class")
    parser.add_argument("--flat", action="store_true", help="the training pictures alone, no classes: unlabelled")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = write_example_folder(args.root, args.per_class, val_per_class=args.val_per_class, flat=args.flat,
                                seed=args.seed)
    if args.flat:
        print(f"{9 * args.per_class} unlabelled pictures of 64 px written to {root}")
    else:
        print(f"{9 * args.per_class} training pictures in {root / 'train'} and {9 * args.val_per_class} validation "
              f"pictures in {root / 'val'}, one folder per class: {', '.join(EXAMPLE_CLASSES)}")


if __name__ == "__main__":
    main()
