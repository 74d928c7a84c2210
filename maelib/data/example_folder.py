"""An offline stand-in for "your own images": a folder of small colour pictures in classes, written from data that
maelib's dependencies ship, so that the own-images path (pretrain on a folder, evaluate, fine-tune) can be tried
and tested without a download.

    python -m maelib.data.example_folder runs/my_images                 # root/class_name/*.png, 9 classes
    python -m maelib.data.example_folder runs/my_images_flat --flat     # the same pictures, no classes
    maelib pretrain --data.dataset imagefolder --data.root runs/my_images --model.arch mae_vit_tiny_patch8_64

Each picture is a Fashion-MNIST training item (9 of its classes: all but "ankle boot"), scaled to 36-52 pixels,
tinted with a random colour, and laid over a random crop of one of the offline photos (`maelib.data.photos`,
held-out photos excluded) at a random place on a 64-pixel canvas. The class is the item's. The photo backgrounds
make the raw pixels a poor feature (the item is a small part of the picture, the background varies most), so an
encoder has something to learn; the tints make it a colour folder.
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


def example_pictures(per_class: int = 170, *, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """per_class pictures of each of the 9 classes -> uint8 (N, 3, size, size), labels int64 (N,), seeded."""
    items, labels = load_fashion_mnist("train")
    photos = load_photos(training_photos(), size=2 * size)  # (P, 3, 2 size, 2 size)
    g = torch.Generator().manual_seed(seed)
    pictures, out_labels = [], []
    for label in range(len(EXAMPLE_CLASSES)):
        pool = (labels == label).nonzero().flatten()
        for index in pool[torch.randperm(len(pool), generator=g)[:per_class]].tolist():
            photo = photos[int(torch.randint(len(photos), (1,), generator=g))].float()
            top, left = torch.randint(size + 1, (2,), generator=g).tolist()
            canvas = photo[:, top:top + size, left:left + size] * 0.8  # a background crop, a little darker
            side = int(torch.randint(36, 53, (1,), generator=g))
            item = F.interpolate(items[index][None, None].float() / 255, size=side, mode="bilinear",
                                 align_corners=False)[0]  # (1, side, side) in [0, 1]: how much item covers a pixel
            tint = 60 + 195 * torch.rand(3, 1, 1, generator=g)  # a random colour, not too dark
            y, x = torch.randint(size - side + 1, (2,), generator=g).tolist()
            region = canvas[:, y:y + side, x:x + side]
            canvas[:, y:y + side, x:x + side] = region * (1 - item) + tint * item
            pictures.append(canvas.round().clamp(0, 255).to(torch.uint8))
            out_labels.append(label)
    return torch.stack(pictures), torch.tensor(out_labels)


def write_example_folder(root: str | Path, per_class: int = 170, *, size: int = 64, flat: bool = False,
                         seed: int = 0) -> Path:
    """Write `example_pictures` as PNGs: root/class_name/NNNNN.png, or all in root with flat=True (unlabelled).
    Refuses a root that already holds files (nothing already written is overwritten)."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty: give a new folder for the example pictures (nothing was written)")
    pictures, labels = example_pictures(per_class, size=size, seed=seed)
    for i, (picture, label) in enumerate(zip(pictures, labels.tolist())):
        folder = root if flat else root / EXAMPLE_CLASSES[label].lower().replace("/", "-").replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="a new folder to write the pictures into")
    parser.add_argument("--per-class", type=int, default=170, help="pictures per class (9 classes)")
    parser.add_argument("--flat", action="store_true", help="no class folders: an unlabelled folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = write_example_folder(args.root, args.per_class, flat=args.flat, seed=args.seed)
    print(f"{9 * args.per_class} pictures of 64 px written to {root}" + (" (unlabelled)" if args.flat else
                                                                         f", one folder per class: {', '.join(EXAMPLE_CLASSES)}"))


if __name__ == "__main__":
    main()
