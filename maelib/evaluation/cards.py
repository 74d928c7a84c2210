"""The measurements behind the zoo's cards, on seeded subsets: quick enough for a test to repeat them.

    acc = knn_check("mae_vit_mini_patch4_28.fmnist_normpix", pool="mean", bank=10000, test=2000)
    errs = reconstruction_check(maelib.load_pretrained("mae_vit_mini_patch4_28.fmnist_pixel"), fmnist_test_images(500))
    value = run_check(card)      # the card's own quick protocol (card.check), as tests/test_zoo.py runs it

The full figures on a card (60k bank, 10k test images, probes) come from the CLI in `scripts/zoo_export.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..analysis.baselines import reconstruction_baselines
from ..data import STATS, MAEDataModule, crop_params, random_resized_crop
from ..rng import seeded_noise
from .features import FeatureDataModule
from .knn import knn_accuracy


def knn_check(checkpoint: str | None = None, *, arch: str | None = None, pixels: bool = False, pool: str = "mean",
              bank: int | None = 10000, test: int | None = 2000, seed: int = 0) -> float:
    """Weighted k-NN (k=20, T=0.07) accuracy on a seeded `test` of Fashion-MNIST's test images with a seeded
    `bank` of its training images; the MAE of `checkpoint` (a path or zoo name), `arch` at random init, or the
    raw pixels (`pixels=True`)."""
    dm = FeatureDataModule(checkpoint=checkpoint, arch=arch, pixels=pixels, pool=pool, train_subset=bank,
                           test_subset=test, seed=seed)
    dm.setup()
    return knn_accuracy(*dm.features["train"], *dm.features["test"])


def fmnist_test_images(n: int | None = 500, *, seed: int = 0, img_size: int = 28, in_chans: int = 1) -> torch.Tensor:
    """A seeded n of Fashion-MNIST's test images, normalised model inputs (n, in_chans, img_size, img_size)."""
    dm = MAEDataModule(img_size=img_size, in_chans=in_chans, test_subset=n, seed=seed, augment="none")
    dm.setup()
    return dm.test_set.batch(range(len(dm.test_set)))[0]


def photo_test_crops(n: int = 96, *, img_size: int = 64, seed: int = 0,
                     names: Sequence[str] | None = None) -> torch.Tensor:
    """n seeded random crops (30-100% of the area, flipped at random) of the held-out photos (or of `names`),
    normalised with the ImageNet statistics: (n, 3, img_size, img_size). No model of the zoo has seen the
    held-out photos. The crops are drawn with one bicubic sample per pixel (antialias=False), as when the zoo's
    cards were measured on them: a fixed test set, kept as it was."""
    from ..data.photos import HELD_OUT_PHOTOS, load_photos

    photos = load_photos(HELD_OUT_PHOTOS if names is None else names, size=2 * img_size).float() / 255
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(photos), (n,), generator=g)
    theta = crop_params(n, 2 * img_size, 2 * img_size, (0.3, 1.0), generator=g)
    crops = random_resized_crop(photos[pick], img_size, theta=theta, antialias=False)
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in STATS["photos"])
    return (crops - mean) / std


def reconstruction_check(model, imgs: torch.Tensor, mask_ratio: float = 0.75, seed: int = 0) -> dict[str, float]:
    """`reconstruction_baselines` under a seeded mask: the model's hidden-patch MSE and its baselines'."""
    return reconstruction_baselines(model, imgs, mask_ratio, seeded_noise(model, len(imgs), mask_ratio, seed))


@torch.no_grad()
def classifier_accuracy(net: torch.nn.Module, *, test: int | None = 2000, seed: int = 0, img_size: int = 28,
                        in_chans: int = 1, batch_size: int = 500) -> float:
    """Top-1 accuracy of a Fashion-MNIST classifier on a seeded `test` of the test images (None: all 10k)."""
    dm = MAEDataModule(img_size=img_size, in_chans=in_chans, test_subset=test, seed=seed, augment="none",
                       batch_size=batch_size)
    was_training = net.training
    net.eval()
    correct = total = 0
    for imgs, labels in dm.test_dataloader():
        correct += (net(imgs).argmax(1) == labels).sum().item()
        total += len(labels)
    net.train(was_training)
    return correct / total


def run_check(card) -> float:
    """Repeat a zoo card's quick check (card.check["what"]): "knn", "reconstruction" or "classifier"."""
    from ..weights.zoo import load_pretrained

    c = card.check
    if c["what"] == "knn":
        return knn_check(card.name, pool=c["pool"], bank=c["bank"], test=c["test"])
    model = load_pretrained(card.name)
    if c["what"] == "classifier":
        return classifier_accuracy(model, test=c["test"])
    if c["what"] == "reconstruction":
        cfg = model.config
        imgs = (photo_test_crops(c["images"], img_size=cfg.img_size) if c["data"] == "photos" else
                fmnist_test_images(c["images"], img_size=cfg.img_size, in_chans=cfg.in_chans))
        return reconstruction_check(model, imgs, c["mask_ratio"])["model"]
    raise ValueError(f"unknown check {c['what']!r} on the card of {card.name}")
