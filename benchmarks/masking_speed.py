"""How long does drawing a batch's masks take? Block masking (BEiT's algorithm, vectorised) against random.

    python benchmarks/masking_speed.py                        # batch 4096, ViT-B's 14 x 14 grid, 75%
    python benchmarks/masking_speed.py --batch 256 --grid 7   # the mini model's grid

Each strategy's noise for one global batch is drawn `--repeats` times with a seeded generator, as the training
module does once per step; reported: the median and the fastest wall time, after one warm-up call.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import finish  # noqa: E402

from maelib.masking import MASKING


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--grid", type=int, default=14)
    parser.add_argument("--ratio", type=float, default=0.75)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for name in ("random", "block", "grid"):
        times = []
        for i in range(args.repeats + 1):
            g = torch.Generator().manual_seed(i)
            start = time.perf_counter()
            MASKING[name](args.batch, args.grid, args.ratio, generator=g)
            times.append(time.perf_counter() - start)
        times = times[1:]  # the first call warms up
        rows.append(dict(masking=name, median_ms=round(1000 * statistics.median(times), 2),
                         min_ms=round(1000 * min(times), 2)))
    report = dict(env=dict(date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                           device=f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
                           torch=torch.__version__),
                  batch=args.batch, grid=args.grid, ratio=args.ratio, repeats=args.repeats, rows=rows)
    return finish(report, args.out)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
