"""What attention capture costs: a training step with `capture_attention` never used, after it was used (off
again), and inside it (on, every encoder block recorded).

    python benchmarks/attention_overhead.py                      # teaching model on this machine's CPU
    python benchmarks/attention_overhead.py --device cuda --arch mae_vit_base_patch16 --batch 64

"Off" should equal "never": the hooks exist only inside the `with`. The on and off conditions alternate
in rounds so that drift in the machine's speed hits both alike. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import make_step, time_steps  # noqa: E402  (the same step and timer as the main benchmark)

import maelib  # noqa: E402
from maelib.analysis.attention import capture_attention  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="mae_vit_mini_patch4_28")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per condition per round")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = maelib.create_model(args.arch).to(args.device).train()
    c = model.config
    imgs = torch.randn(args.batch, c.in_chans, c.img_size, c.img_size, device=args.device)
    step = make_step("maelib", model, imgs, 0.75, amp=args.device == "cuda")

    times: dict[str, list[float]] = {}
    time_steps(step, args.device, warmup=3, steps=0)
    # "never": before any capture, so no hook was ever registered on this model
    times["never"] = time_steps(step, args.device, 1, args.steps * args.rounds)[0]
    times["on"], times["off"] = [], []
    for _ in range(args.rounds):
        with capture_attention(model) as attn:
            times["on"] += time_steps(step, args.device, 1, args.steps)[0]
        assert len(attn) == len(model.blocks)  # every encoder block was recorded
        times["off"] += time_steps(step, args.device, 1, args.steps)[0]

    report = {
        "date": dt.date.today().isoformat(), "device": torch.cuda.get_device_name() if args.device == "cuda"
        else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "arch": args.arch, "batch": args.batch,
        "ms_per_step": {k: round(1e3 * statistics.median(v), 2) for k, v in times.items()},
        "steps_timed": {k: len(v) for k, v in times.items()},
    }
    report["on_over_off"] = round(report["ms_per_step"]["on"] / report["ms_per_step"]["off"], 3)
    report["off_over_never"] = round(report["ms_per_step"]["off"] / report["ms_per_step"]["never"], 3)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
