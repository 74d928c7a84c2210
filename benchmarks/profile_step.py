"""Where one MAE training step spends its GPU time: kernels grouped by kind, from torch.profiler.

    python benchmarks/profile_step.py --arch mae_vit_base_patch16 --batch 256 --impl maelib+compile

Prints the share of GPU time of matrix products, attention, fused elementwise/normalisation kernels (Triton
when compiled), the optimiser and the rest, then the 25 costliest kernels; writes the same as JSON with --out.
The step is bench.py's (bf16 autocast, fused AdamW); profiled after warm-up, over a few steps. On a CPU it
groups operators by their own CPU time instead (a quick look; the GPU breakdown is what it is for).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import torch
from bench import COMPILE_MODES, make_step, sync
from torch.profiler import ProfilerActivity, profile

import maelib

KINDS = [  # (kind, pattern on the kernel name), first match wins
    ("attention", r"flash|fmha|attention|sdpa|cudnn::fusion"),
    ("convolution", r"conv|fprop|dgrad|wgrad|nchwToNhwc|nhwcToNchw"),
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("matmul", r"gemm|sm90_xmma|cutlass|nvjet|matmul|triton_tem|wgmma|^aten::(mm|addmm|bmm)$"),
    ("fused (triton)", r"^triton_"),
    ("elementwise / reduction (eager)", r"elementwise|reduce|vectorized|unrolled|layer_norm|softmax|gelu"),
    ("copy / gather / index", r"copy|gather|scatter|index|cat|memcpy|memset"),
]


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="mae_vit_base_patch16")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--impl", default="maelib+compile", choices=["maelib", *COMPILE_MODES])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    torch.manual_seed(0)
    model = maelib.create_model(args.arch).to(args.device).train()
    c = model.config
    imgs = torch.randn(args.batch, c.in_chans, c.img_size, c.img_size, device=args.device)
    if args.impl != "maelib":
        model = torch.compile(model, mode=COMPILE_MODES[args.impl])
    step = make_step(args.impl, model, imgs, args.mask_ratio, amp=cuda)
    for _ in range(args.warmup):
        step()
    sync(args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        sync(args.device)
    per_kernel: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])  # name -> [microseconds, calls]
    if cuda:  # every kernel the GPU ran
        for e in prof.events():
            if e.device_type.name == "CUDA" and not getattr(e, "is_user_annotation", False):  # not ranges
                per_kernel[e.name][0] += e.device_time
                per_kernel[e.name][1] += 1
    else:  # on a CPU, each operator's own time (without the operators it calls)
        for e in prof.key_averages():
            if e.self_cpu_time_total > 0:
                per_kernel[e.key] = [e.self_cpu_time_total, e.count]
    total = sum(t for t, _ in per_kernel.values())
    by_kind: dict[str, float] = defaultdict(float)
    for name, (t, _) in per_kernel.items():
        by_kind[kind_of(name)] += t
    step_ms = total / args.steps / 1e3
    print(f"{args.arch} batch {args.batch} mask {args.mask_ratio} {args.impl} on {args.device}: "
          f"{step_ms:.2f} ms of {'GPU' if cuda else 'CPU'} time per step, {len(per_kernel)} distinct kernels, "
          f"{sum(n for _, n in per_kernel.values()) / args.steps:.0f} launches per step")
    print("\n| kind | ms per step | share |\n|---|---|---|")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {t / args.steps / 1e3:.2f} | {100 * t / total:.1f}% |")
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[: args.top]
    print("\n| kernel | kind | calls per step | ms per step | share |\n|---|---|---|---|---|")
    for name, (t, n) in top:
        print(f"| {name[:90]} | {kind_of(name)} | {n / args.steps:.0f} | {t / args.steps / 1e3:.3f} | {100 * t / total:.1f}% |")
    result = {"arch": args.arch, "batch": args.batch, "mask_ratio": args.mask_ratio, "impl": args.impl,
              "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "step_ms": step_ms, "by_kind_ms": {k: v / args.steps / 1e3 for k, v in by_kind.items()},
              "top": [{"kernel": k, "calls": n / args.steps, "ms": t / args.steps / 1e3} for k, (t, n) in top]}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
