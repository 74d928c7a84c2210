"""A small image folder trains at in-memory speed: pretraining images/s on a folder of 28 px PNGs read from disk
(per-image PIL transforms) against the same folder decoded once into memory (the vectorised batch transform), and
Fashion-MNIST held in memory as the reference.

    python benchmarks/folder_in_memory.py --out benchmarks/results/2026-12-01_cpu_folder_in_memory.json
    python benchmarks/folder_in_memory.py --smoke      # 512 images, 3 timed steps: it runs

The folder is `--images` Fashion-MNIST training images saved as PNGs in root/<class>/ (class-ordered, as an
image folder is). Each setting trains the mini MAE (`mae_vit_mini_patch4_28`) at batch 256 with the paper's
crop + flip; the timer runs between two optimiser steps after warm-up, so set-up and decoding are not counted
(the one-off decode is reported on its own).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import finish  # noqa: E402  (benchmarks/report.py)

import maelib  # noqa: E402
from maelib.data import CLASS_NAMES, MAEDataModule, load_fashion_mnist  # noqa: E402
from maelib.train.modules import MAEPretrainModule  # noqa: E402


class StepTimer(L.Callback):
    """Seconds between the end of step `start` and the end of step `start + steps`."""

    def __init__(self, start: int, steps: int) -> None:
        self.start, self.steps, self.t0, self.seconds = start, steps, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.start:
            self.t0 = time.perf_counter()
        elif trainer.global_step == self.start + self.steps:
            self.seconds = time.perf_counter() - self.t0
            trainer.should_stop = True


def write_folder(root: Path, count: int) -> Path:
    images, labels = load_fashion_mnist("train")
    for i in range(count):
        folder = root / CLASS_NAMES["fashion_mnist"][int(labels[i])].replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].numpy(), mode="L").save(folder / f"{i:05d}.png")
    return root


def rate(dm: MAEDataModule, warmup: int, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    timer = StepTimer(warmup, steps)
    trainer = L.Trainer(max_steps=warmup + steps + 1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[timer])
    trainer.fit(MAEPretrainModule("mae_vit_mini_patch4_28", base_lr=1.5e-4), datamodule=dm)
    return batch * steps / timer.seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--smoke", action="store_true", help="512 images, 3 timed steps")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.batch, args.warmup, args.steps = 512, 64, 1, 3
    report = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
              "versions": {"torch": torch.__version__, "lightning": L.__version__, "maelib": maelib.__version__,
                           "python": platform.python_version()},
              "command": "python benchmarks/folder_in_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "images": args.images, "batch": args.batch, "timed_steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_folder(Path(tmp) / "fmnist_png", args.images)
        common = dict(img_size=28, in_chans=1, batch_size=args.batch, augment="mae")
        for name, kw in (("folder_from_disk", dict(dataset="imagefolder", root=str(root), in_memory=False)),
                         ("folder_in_memory", dict(dataset="imagefolder", root=str(root), in_memory=None)),
                         ("fashion_mnist_in_memory", dict(train_subset=args.images))):
            dm = MAEDataModule(**common, **kw)
            start = time.perf_counter()
            dm.setup()
            report[f"{name}_setup_seconds"] = round(time.perf_counter() - start, 2)
            if kw.get("dataset") == "imagefolder":
                assert dm.in_memory == (kw["in_memory"] is None), name
            report[f"{name}_images_per_second"] = round(rate(dm, args.warmup, args.steps, args.batch), 1)
            print(f"{name}: {report[f'{name}_images_per_second']} img/s (setup {report[f'{name}_setup_seconds']} s)",
                  flush=True)
    report["in_memory_speedup"] = round(report["folder_in_memory_images_per_second"]
                                        / report["folder_from_disk_images_per_second"], 2)
    return finish(report, args.out)


if __name__ == "__main__":
    main()
