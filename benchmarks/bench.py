"""Training-step throughput of maelib against Hugging Face's ViTMAEForPreTraining: same architecture, same
weights, same inputs, measured side by side in one run.

    python benchmarks/bench.py --device cuda                    # ViT-B/16 and ViT-L/16, sweeps, on a GPU
    python benchmarks/bench.py --device cpu --preset teaching   # the teaching sizes on a laptop CPU
    python benchmarks/bench.py --device cpu --preset teaching --max-batch 256   # leave out the batch-1024 case
    python benchmarks/bench.py --smoke                          # a few tiny steps: checks the script runs

One step = forward, loss, backward, AdamW step (fused on CUDA). Reported per case: images/s (median over timed
steps after warm-up, with the 10-90% spread), peak memory, FLOPs per image (torch's FlopCounterMode on one
step), achieved TFLOP/s, and the fraction of the device's matrix rate measured by a large matmul in the same run.
Writes benchmarks/results/<date>_<device>.json and prints a Markdown table to paste into RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import maelib

RESULTS = Path(__file__).resolve().parent / "results"

# (arch, overrides, batch, mask ratios, impls or None for --impls); "~0" is one masked patch, so both losses stay
# defined. Compiled variants only where they answer a target: each costs about a minute of compilation on a GPU.
EAGER = ("transformers", "maelib")
COMPILED = (*EAGER, "maelib+compile")
PRESETS = {
    "paper": [
        ("mae_vit_base_patch16", {}, 256, (0.75,), COMPILED),
        ("mae_vit_base_patch16", {}, 256, ("~0",), EAGER),
        ("mae_vit_large_patch16", {}, 256, (0.75,), COMPILED),
        ("mae_vit_large_patch16", {}, 256, ("~0",), EAGER),
        ("mae_vit_base_patch16", {}, 512, (0.75,), EAGER),
        ("mae_vit_base_patch16", {"img_size": 448}, 64, (0.75,), EAGER),
    ],
    "teaching": [  # the GPU teaching target first; --max-batch 256 leaves it out on a CPU
        ("mae_vit_tiny_patch4_32", {"depth": 12, "decoder_depth": 4}, 1024, (0.75,), None),
        ("mae_vit_mini_patch4_28", {}, 256, (0.75,), COMPILED),
        ("mae_vit_tiny_patch4_32", {}, 256, (0.75,), COMPILED),
    ],
    "smoke": [("mae_vit_mini_patch4_28", {"depth": 1}, 8, (0.75, "~0"), None)],
    # the fast-path candidates at ViT-B, each against transformers in the same run: torch.compile with each
    # attention kernel that SDPA offers ("maelib+compile": PyTorch picks; on an H200 with torch 2.11, cuDNN)
    "fastpath": [("mae_vit_base_patch16", {}, 256, (0.75,), ("transformers", "maelib", "maelib+compile",
                  "maelib+compile+flash", "maelib+compile+efficient", "maelib+compile+math"))],
}
ATTENTION = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
# torch.compile mode of each compiled variant; "maelib+compile+<kernel>" is the default mode with one attention kernel
COMPILE_MODES = {"maelib+compile": None, "maelib+cudagraphs": "reduce-overhead",
                 "maelib+max-autotune": "max-autotune-no-cudagraphs", **{f"maelib+compile+{k}": None for k in ATTENTION}}
IMPLS = ("transformers", "maelib", *COMPILE_MODES)


def ratio_value(ratio, num_patches: int) -> float:
    return 1.0 / num_patches if ratio == "~0" else float(ratio)


def build(arch: str, overrides: dict, device: str):
    """maelib's model and the same weights as a transformers ViTMAEForPreTraining."""
    torch.manual_seed(0)
    ours = maelib.create_model(arch, **overrides)
    theirs = maelib.to_hf(ours)
    theirs.config._attn_implementation = "sdpa"
    return ours.to(device).train(), theirs.to(device).train()


def make_step(impl: str, model, imgs: torch.Tensor, ratio: float, amp: bool):
    """A closure running one training step of `model`."""
    graphs = impl.endswith("cudagraphs")
    backend = ATTENTION.get(impl.split("+")[-1])  # None: SDPA picks
    fused = imgs.device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=fused)
    autocast = torch.autocast(imgs.device.type, dtype=torch.bfloat16) if amp else nullcontext()
    if impl == "transformers":
        model.config.mask_ratio = ratio  # read by ViTMAEEmbeddings at every call

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new training step: earlier graph outputs may be reused
        with autocast, sdpa_kernel(backend) if backend else nullcontext():
            loss = model(imgs, mask_ratio=ratio)[0] if impl.startswith("maelib") else model(pixel_values=imgs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(step, device: str, warmup: int, steps: int) -> tuple[list[float], float]:
    """Seconds of each timed step, and the seconds the warm-up took (includes any compilation).

    On CUDA each step is timed by device events with no synchronisation in between, so the host runs ahead
    as it does in training and launch overhead shows only where the GPU waits for it."""
    sync(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warmup_seconds = time.perf_counter() - start
    if device == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        events[0].record()
        for i in range(steps):
            step()
            events[i + 1].record()
        torch.cuda.synchronize()
        return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(steps)], warmup_seconds
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times, warmup_seconds


def step_flops(step) -> int:
    """FLOPs of one step. Counted with the math attention kernel: FlopCounterMode does not see the fused CPU kernel,
    and the count does not depend on which kernel runs."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        step()
    return counter.get_total_flops()


def matmul_rate(device: str, amp: bool) -> float:
    """Measured dense matrix rate in TFLOP/s (bf16 on GPU, fp32 on CPU)."""
    n = 8192 if device == "cuda" else 1024
    dtype = torch.bfloat16 if (amp and device == "cuda") else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device == "cuda" else 5
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def run_case(impl: str, model, arch: str, overrides: dict, batch: int, ratio, args) -> dict:
    c = model.config if impl.startswith("maelib") else maelib.model_config(arch, **overrides)
    r = ratio_value(ratio, c.num_patches)
    imgs = torch.randn(batch, c.in_chans, c.img_size, c.img_size, device=args.device)
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    step = make_step(impl, model, imgs, r, args.amp)
    compiled = "+" in impl
    flops = None if compiled else step_flops(make_step(impl, model, imgs, r, args.amp))
    if compiled:  # the same weights; "cudagraphs" also replays each step as one CUDA graph (fewer launches)
        torch._dynamo.reset()  # compile afresh: the warm-up then counts this variant's whole compilation
        step = make_step(impl, torch.compile(model, mode=COMPILE_MODES[impl]), imgs, r, args.amp)
    times, warmup_seconds = time_steps(step, args.device, args.warmup, args.steps)
    med, ordered = statistics.median(times), sorted(times)
    p10, p90 = ordered[int(0.1 * (len(times) - 1))], ordered[round(0.9 * (len(times) - 1))]
    row = {
        "impl": impl, "arch": arch, "overrides": overrides, "img_size": c.img_size, "batch": batch,
        "mask_ratio": r, "images_per_second": batch / med,
        "images_per_second_p10_p90": [batch / p90, batch / p10],  # slowest 10% and fastest 10% of steps
        "warmup_seconds": round(warmup_seconds, 2),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
    }
    if flops:
        row["gflop_per_image"] = flops / batch / 1e9
        row["achieved_tflops"] = flops / med / 1e12
    return row


def environment(args) -> dict:
    import timm
    import transformers

    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "transformers": transformers.__version__, "timm": timm.__version__,
        "maelib": maelib.__version__, "precision": "bf16 autocast" if args.amp else "fp32",
    }


def table(report: dict) -> str:
    peak = report["matmul_tflops"]
    lines = [f"{report['env']['device']}, {report['env']['precision']}, torch {report['env']['torch']}, "
             f"transformers {report['env']['transformers']}, {report['env']['date']}; measured matmul rate "
             f"{peak:.3g} TFLOP/s", "",
             "| model | img | batch | mask | impl | img/s (p10-p90) | vs HF | GFLOP/img | TFLOP/s | % of matmul | peak GiB "
             "| warm-up s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {}
    for row in report["rows"]:
        key = (row["arch"], row["img_size"], row["batch"], row["mask_ratio"])
        if row["impl"] == "transformers":
            base[key] = row["images_per_second"]
    for row in report["rows"]:
        key = (row["arch"], row["img_size"], row["batch"], row["mask_ratio"])
        lo, hi = row["images_per_second_p10_p90"]
        ratio = f"{row['images_per_second'] / base[key]:.2f}x" if key in base else ""
        tflops = row.get("achieved_tflops")
        model = row["arch"] + "".join(f", {k}={v}" for k, v in row["overrides"].items() if k != "img_size")
        lines.append(
            f"| {model} | {row['img_size']} | {row['batch']} | {row['mask_ratio']:.3g} | {row['impl']} | "
            f"{row['images_per_second']:,.0f} ({lo:,.0f}-{hi:,.0f}) | {ratio} | {row.get('gflop_per_image', float('nan')):.2f} | "
            f"{tflops if tflops is None else round(tflops, 2)} | "
            f"{'' if tflops is None else f'{100 * tflops / peak:.1f}%'} | "
            f"{'' if row['peak_memory_gib'] is None else round(row['peak_memory_gib'], 1)} | {row['warmup_seconds']} |"
        )
    lines += [f"\nFAILED: {f['arch']} batch {f['batch']} mask {f['mask_ratio']} {f['impl']}: {f['error']}"
              for f in report.get("failed", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: paper on GPU, teaching on CPU")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=None,
                        help="default: each case's own list, else transformers, maelib, maelib+compile and (CUDA) "
                        "maelib+cudagraphs")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default on GPU)")
    parser.add_argument("--smoke", action="store_true", help="tiny and quick: checks that everything runs")
    parser.add_argument("--max-batch", type=int, default=None, help="skip the preset's cases above this batch size")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset, args.warmup, args.steps = "smoke", 1, 2
        args.impls = list(EAGER)
    args.preset = args.preset or ("paper" if args.device == "cuda" else "teaching")
    args.amp = (args.device == "cuda") if args.amp is None else args.amp
    # No compilation caches: each compiled variant's warm-up is its whole compilation, and a variant that differs
    # only in its attention kernel (not in its graph) is really compiled anew instead of found in the cache.
    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    out = args.out or RESULTS / f"{dt.date.today().isoformat()}_{args.device}_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"env": environment(args), "matmul_tflops": matmul_rate(args.device, args.amp), "rows": [], "failed": []}
    for arch, overrides, batch, ratios, case_impls in PRESETS[args.preset]:
        if args.max_batch is not None and batch > args.max_batch:
            continue
        ours, theirs = build(arch, overrides, args.device)
        for ratio in ratios:
            eager_flops = None
            impls = args.impls or case_impls or [*COMPILED, *(["maelib+cudagraphs"] if args.device == "cuda" else [])]
            for impl in impls:
                model = theirs if impl == "transformers" else ours
                try:
                    row = run_case(impl, model, arch, overrides, batch, ratio, args)
                except (RuntimeError, torch.OutOfMemoryError) as err:  # e.g. out of memory: report it, go on
                    report["failed"].append({"impl": impl, "arch": arch, "overrides": overrides, "batch": batch,
                                             "mask_ratio": str(ratio), "error": f"{type(err).__name__}: {err}"[:500]})
                    print(f"{arch} batch {batch} mask {ratio} {impl}: FAILED {report['failed'][-1]['error']}",
                          flush=True)
                    continue
                if "+" in impl and eager_flops is not None:  # a compiled step does the same arithmetic
                    row["gflop_per_image"] = eager_flops / 1e9
                    row["achieved_tflops"] = eager_flops * row["images_per_second"] / 1e12
                elif impl == "maelib":
                    eager_flops = row.get("gflop_per_image", 0) * 1e9 or None
                report["rows"].append(row)
                print(f"{arch} {overrides or ''} batch {batch} mask {row['mask_ratio']:.3g} {impl}: "
                      f"{row['images_per_second']:,.0f} img/s (warm-up {row['warmup_seconds']} s)", flush=True)
                out.write_text(json.dumps(report, indent=2) + "\n")  # after every case: a cut-off run keeps its rows
        del ours, theirs
        if args.device == "cuda":
            torch.cuda.empty_cache()
    print("\n" + table(report) + f"\n\nwritten to {out}")
    return report


if __name__ == "__main__":
    main()
