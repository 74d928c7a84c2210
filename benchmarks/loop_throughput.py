"""Is the Lightning pretraining loop input-bound? Images/s of the real loop against the bare model step.

    python benchmarks/loop_throughput.py --device cuda                 # ViT-B/16, 224 px, batch 256, JPEG folder
    python benchmarks/loop_throughput.py --smoke                       # tiny, on this machine's CPU: it runs

Three numbers, one model and batch size:
- bare step: forward, loss, backward, fused AdamW step on one batch already on the device (bench.py's step);
- loader alone: `MAEDataModule(dataset="imagefolder")` batches per second (decode, the paper's random resized
  crop + flip, collate; normalised in the loader or, the default on CUDA, left uint8 for the device) with
  `--workers` loader processes, no model;
- real loop: `Trainer.fit` of `MAEPretrainModule` on that datamodule (bf16-mixed and fused AdamW on a GPU, the
  module's default compilation), timed between two steps after warm-up by a callback. `--normalize both` runs
  it twice: batches normalised on the device (uint8 through the loader) and in the loader (float32).
The loop is not input-bound when its images/s is within 15% of the bare step's (issue 3's check).

The images are synthetic photos at `--source-size` px (smooth random colour fields with edges, saved as JPEG
quality 90 in root/class/img.jpg), written once into --root (default a temporary folder).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import make_step, time_steps  # noqa: E402  (the same step and timer as the main benchmark)

import maelib  # noqa: E402
from maelib.data import MAEDataModule  # noqa: E402
from maelib.train.modules import MAEPretrainModule  # noqa: E402


def write_image_folder(root: Path, count: int, size: int, unique: int = 256, classes: int = 4) -> Path:
    """`count` JPEGs in root/class_k/, `unique` distinct ones repeated as hard links (decoding costs the same)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    originals = []
    for i in range(min(unique, count)):
        coarse = rng.random((size // 16 + 1, size // 16 + 1, 3))  # a smooth field, upsampled, plus a sharp edge
        img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        arr = np.asarray(img).copy()
        arr[:, : int(rng.integers(size // 4, 3 * size // 4))] //= 2
        path = root / f"class_{i % classes}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(path, quality=90)
        originals.append(path)
    for i in range(len(originals), count):
        link = root / f"class_{i % classes}" / f"img_{i:06d}.jpg"
        if not link.exists():
            os.link(originals[i % len(originals)], link)
    return root


class StepTimer(L.Callback):
    """Wall time between the end of step `start` and the end of step `start + steps` (device synchronised)."""

    def __init__(self, start: int, steps: int) -> None:
        self.start, self.steps, self.t0, self.seconds = start, steps, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step in (self.start, self.start + self.steps) and torch.cuda.is_available():
            torch.cuda.synchronize()
        if step == self.start:
            self.t0 = time.perf_counter()
        elif step == self.start + self.steps:
            self.seconds = time.perf_counter() - self.t0
            trainer.should_stop = True


def loader_rate(dm: MAEDataModule, batches: int, warmup: int = 3) -> float:
    """Images/s from the training loader alone (after `warmup` batches: worker start-up is not counted)."""
    it = iter(dm.train_dataloader())
    for _ in range(warmup):
        next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)[0])
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="mae_vit_base_patch16")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--images", type=int, default=8192, help="images in the synthetic folder")
    parser.add_argument("--source-size", type=int, default=320, help="side of the synthetic JPEGs in px")
    parser.add_argument("--warmup", type=int, default=5, help="steps before timing (compilation happens here)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the model in both the bare step and the loop (default: on CUDA)")
    parser.add_argument("--normalize", choices=["device", "loader", "both"], default=None,
                        help="where training batches are normalised (default: device on CUDA, loader on CPU)")
    parser.add_argument("--root", type=Path, default=None, help="where to write the image folder (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    parser.add_argument("--smoke", action="store_true", help="tiny model and images on the CPU: checks it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.arch, args.batch, args.workers = "cpu", "mae_vit_mini_patch4_28", 8, 0
        args.images, args.source_size, args.warmup, args.steps = 64, 40, 1, 2
    cuda = args.device == "cuda"
    args.normalize = args.normalize or ("device" if cuda else "loader")
    places = ["device", "loader"] if args.normalize == "both" else [args.normalize]
    args.compile = cuda if args.compile is None else args.compile
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    tmp = tempfile.TemporaryDirectory() if args.root is None else None
    root = write_image_folder(Path(tmp.name if tmp else args.root), args.images, args.source_size)
    c = maelib.model_config(args.arch)
    report = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "device": torch.cuda.get_device_name() if cuda else "CPU", "cpus": os.cpu_count(),
              "torch": torch.__version__, "lightning": L.__version__, "arch": args.arch, "batch": args.batch,
              "img_size": c.img_size, "workers": args.workers, "compile": args.compile,
              "source_images": f"{args.images} JPEG, {args.source_size} px"}

    # 1. bare step on a batch already on the device
    torch.manual_seed(0)
    model = maelib.create_model(args.arch).to(args.device).train()
    imgs = torch.randn(args.batch, c.in_chans, c.img_size, c.img_size, device=args.device)
    step = make_step("maelib", torch.compile(model) if args.compile else model, imgs, c.mask_ratio, amp=cuda)
    times, warm = time_steps(step, args.device, args.warmup, args.steps)
    report["bare_step_images_per_second"] = args.batch / statistics.median(times)
    report["bare_step_warmup_seconds"] = round(warm, 1)
    print(f"bare step: {report['bare_step_images_per_second']:,.0f} img/s", flush=True)
    del model, step, imgs
    if cuda:
        torch.cuda.empty_cache()

    # 2. the loader alone, and 3. the real loop, for each place of normalisation
    def datamodule(place: str) -> MAEDataModule:
        return MAEDataModule(dataset="imagefolder", root=root, img_size=c.img_size, in_chans=c.in_chans,
                             batch_size=args.batch, num_workers=args.workers, augment="mae", val_fraction=0.01,
                             normalize_on_device=place == "device")

    bare = report["bare_step_images_per_second"]
    for place in places:
        dm = datamodule(place)
        dm.setup()
        rate = report[f"loader_images_per_second_normalize_{place}"] = loader_rate(dm, batches=args.steps)
        print(f"loader alone ({args.workers} workers, normalised on the {place}): {rate:,.0f} img/s", flush=True)
        del dm

        timer = StepTimer(args.warmup, args.steps)
        trainer = L.Trainer(accelerator="gpu" if cuda else "cpu", devices=1,
                            precision="bf16-mixed" if cuda else "32-true", max_epochs=1000, limit_val_batches=0,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[timer])
        module = MAEPretrainModule(arch=args.arch, compile=args.compile, warmup_epochs=0.1)
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule(place))
        report[f"loop_wall_seconds_normalize_{place}"] = round(time.perf_counter() - start, 1)
        if timer.seconds is None:
            raise RuntimeError(f"the loop stopped before step {args.warmup + args.steps}: use more --images")
        loop = report[f"loop_images_per_second_normalize_{place}"] = args.steps * args.batch / timer.seconds
        report[f"loop_over_bare_normalize_{place}"] = round(loop / bare, 3)
        print(f"loop (normalised on the {place}): {loop:,.0f} img/s = {loop / bare:.3f} x bare step", flush=True)
        del trainer, module  # and with them the loader's persistent workers, before the next loop
        gc.collect()
    first = places[0]  # the headline: the default place
    report["loader_images_per_second"] = report[f"loader_images_per_second_normalize_{first}"]
    report["loop_images_per_second"] = report[f"loop_images_per_second_normalize_{first}"]
    report["loop_over_bare"] = report[f"loop_over_bare_normalize_{first}"]
    report["input_bound"] = report["loop_over_bare"] < 0.85
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if tmp:
        tmp.cleanup()
    return report


if __name__ == "__main__":
    main()
