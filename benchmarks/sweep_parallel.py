"""Is a sweep faster as two runs of one thread each, or as one run of two threads at a time?

    python benchmarks/sweep_parallel.py                       # 4 runs of the quick preset's baseline, both ways
    python benchmarks/sweep_parallel.py --runs 6 --steps 400  # closer to a real sweep
    python benchmarks/sweep_parallel.py --runs 2 --steps 2 --smoke   # does it run? (the test; measures nothing)

The same settings (the quick preset's baseline with seeds 0..runs-1, `--steps` steps each) run through
`maelib.experiments.sweep.run_sweep` twice into fresh folders: `workers=1, threads=<cores>` and `workers=<cores>,
threads=1`. Reported: each layout's wall time for the whole sweep, its runs' mean training images/s, and the
speed-up. Run it on a quiet machine: anything else CPU-bound changes both numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import finish  # noqa: E402

import maelib
from maelib.experiments.ablation_design import settings_for
from maelib.experiments.sweep import run_sweep


def layout(settings, workers: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = run_sweep(settings, out, executor="processes", workers=workers, threads=threads, progress=None)
        seconds = time.perf_counter() - start
    if result.failed:
        raise SystemExit(f"runs failed: {result.failed}")
    rates = [r["images_per_second"] for r in result.rows]
    return dict(workers=workers, threads=threads, sweep_seconds=round(seconds, 1),
                run_images_per_second=round(sum(rates) / len(rates), 1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data and evaluation (1,000 training, 200 + 100 evaluation images): tests the "
                             "script, measures nothing")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    smoke = dict(train_images=1000, eval_train_images=200, eval_test_images=100) if args.smoke else {}
    settings = settings_for("quick", seeds=args.runs, factors=[], reference=False, steps=args.steps, **smoke)
    one_at_a_time = layout(settings, workers=1, threads=cores)
    in_parallel = layout(settings, workers=cores, threads=1)
    report = dict(
        env=dict(date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 device=f"CPU ({platform.processor() or platform.machine()}, {cores} cores)",
                 torch=torch.__version__, maelib=maelib.__version__, python=platform.python_version()),
        runs=args.runs, steps=args.steps, smoke=args.smoke, setting="quick preset baseline (mini ViT at half width, batch 64)",
        layouts=[one_at_a_time, in_parallel],
        speedup=round(one_at_a_time["sweep_seconds"] / in_parallel["sweep_seconds"], 2),
    )
    return finish(report, args.out)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
