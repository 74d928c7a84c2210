"""What one epoch of each pretraining method costs on this machine: MAE vs MoCo v3 vs supervised, the same ViT.

    python benchmarks/pretraining_cost.py                 # the three presets, 30 timed steps each
    python benchmarks/pretraining_cost.py --steps 10 --out runs/cost.json

Each method runs its own preset (configs/pretrain_fmnist.yaml, contrastive_fmnist.yaml, supervised_fmnist.yaml:
model and data sections as they are, batch size included) in the real Lightning loop on Fashion-MNIST; a callback
times the steps after `--warmup` steps. Reported per method: seconds per optimiser step, per epoch of the 60,000
training images, images per second, and the epochs that fit the MAE zoo model's budget (its 24 epochs, timed here).
Why they differ: MAE's encoder sees a quarter of the patches of one view; MoCo v3 runs the full encoder forward
and backward on two views, plus the momentum encoder's forward on both; supervised learning one full view.
Run it on a quiet machine: timings from a busy one mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maelib.experiments.compare import RECIPES, TRAIN_IMAGES, step_seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"{dt.date.today()}_cpu_pretraining_cost.json"))
    args = parser.parse_args()
    zoo_epochs = 24  # the MAE zoo model's (mae_vit_mini_patch4_28.fmnist_normpix): its budget, timed on this machine
    rows = {}
    for name, (_, preset, _, _) in RECIPES.items():
        seconds, batch = step_seconds(name, steps=args.steps, warmup=args.warmup)
        epoch = seconds * math.ceil(TRAIN_IMAGES / batch)
        rows[name] = dict(preset=preset, batch_size=batch, step_seconds=round(seconds, 4), epoch_seconds=round(epoch, 1),
                          images_per_second=round(batch / seconds, 1))
        print(f"{name:10s} batch {batch:3d}: {seconds:.3f} s/step, {epoch:6.0f} s/epoch, {batch / seconds:6.0f} img/s",
              flush=True)
    budget = zoo_epochs * rows["MAE"]["epoch_seconds"]
    print(f"the MAE zoo model's {zoo_epochs} epochs take {budget:.0f} s here; in that time:")
    for name, row in rows.items():
        row["epoch_cost_vs_mae"] = round(row["epoch_seconds"] / rows["MAE"]["epoch_seconds"], 2)
        row["epochs_in_mae_budget"] = round(budget / row["epoch_seconds"], 2)
        print(f"  {name:10s} {row['epochs_in_mae_budget']:5.2f} epochs ({row['epoch_cost_vs_mae']:.2f}x MAE's cost per epoch)")
    out = dict(date=str(dt.date.today()), machine=f"{torch.get_num_threads()} threads, {platform.machine()}, "
               f"torch {torch.__version__}", command="python benchmarks/pretraining_cost.py " + " ".join(sys.argv[1:]),
               mae_zoo_epochs=zoo_epochs, mae_budget_seconds=round(budget, 1), methods=rows)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
