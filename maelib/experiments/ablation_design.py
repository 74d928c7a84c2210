"""The ablation study's design: the baseline, the factors of the paper's Table 1, two presets, the paper's numbers
and its claims, checked against a sweep's statistics.

    from maelib.experiments.ablation_design import PRESETS, settings_for, check_claims
    settings = settings_for("quick")                       # -> [maelib.experiments.sweep.Setting], 3 seeds each
    result = maelib.experiments.sweep.run_sweep(settings, out_dir)
    table = maelib.experiments.stats.factor_table(result.rows, ["knn_acc", "probe_acc"], PRESETS["quick"]["baseline"])
    for claim in check_claims(table, "probe_acc"): print(claim["text"], claim["verdict"])

Presets (Fashion-MNIST; `maelib.experiments.ablation.run_ablation` runs one setting):

    quick  the CPU default inside `make run`: the three factors of the paper's main lessons (mask ratio 25 / 75%,
           target, mask tokens in the encoder), 3 seeds, 400 steps of 64 images, on the mini ViT at half width
           (64, decoder 48: 2.5x faster per step): 5-8 minutes on 2 cores, by host
    full   what a researcher runs on GPUs or a cluster: every factor, 3 seeds, the mini ViT
           (`mae_vit_mini_patch4_28`), 12,000 steps of 128 images (26 epochs, as long as the zoo's norm-pix model,
           whose features clearly beat a random encoder's) and a larger evaluation (10,000 / 2,000 images).
           On 2 CPU cores that is about a day; `--steps 600` (1.3 epochs) takes about 90 minutes and shows the
           early-training regime (benchmarks/results/ablations_full_cpu.json)
"""

from __future__ import annotations

from ..files import write_text_atomic
from .stats import compare, factor_table, format_table
from .sweep import EXECUTORS, Setting, one_at_a_time, run_sweep

BASELINE = dict(mask_ratio=0.75, decoder_depth=1, decoder_embed_dim=96, norm_pix_loss=True, masking="random",
                encoder_mask_tokens=False, augmentation="crop")

FACTORS = {  # run_ablation argument -> the values the full preset tries (Table 1 and Figure 5)
    "mask_ratio": [0.25, 0.5, 0.75, 0.9],
    "decoder_depth": [1, 2, 4],
    "decoder_embed_dim": [48, 96, 192],
    "norm_pix_loss": [False, True],
    "masking": ["random", "block", "grid"],
    "encoder_mask_tokens": [False, True],
    "augmentation": ["none", "crop", "crop+jitter"],
}

QUICK_MODEL = dict(decoder_embed_dim=48, arch_overrides={"embed_dim": 64, "num_heads": 2, "decoder_num_heads": 2})

PRESETS = {  # baseline: the settings every run shares unless its factor changes them; factors: what varies
    "quick": dict(baseline={**BASELINE, **QUICK_MODEL, "steps": 400, "batch_size": 64, "base_lr": 4e-3,
                            "train_images": 20000, "eval_train_images": 2000, "eval_test_images": 1000},
                  factors={"mask_ratio": [0.25, 0.75], "norm_pix_loss": [False, True],
                           "encoder_mask_tokens": [False, True]}, seeds=3),
    "full": dict(baseline={**BASELINE, "steps": 12000, "batch_size": 128, "base_lr": 4e-3, "train_images": 60000,
                           "eval_train_images": 10000, "eval_test_images": 2000},
                 factors=FACTORS, seeds=3),
}

# The paper's ViT-L, 800 epochs on ImageNet: (linear probe, fine-tuning) top-1 %. Table 1's default row is
# 73.5 / 84.9 (decoder depth 8, width 512, raw pixels, random 75%, no [M], crop). Figure 5's mask-ratio curve is
# read off the plot (about ±1 point) except at 75%.
PAPER = {
    "mask_ratio": {0.1: (55.0, 83.0), 0.2: (59.5, 83.5), 0.25: (61.5, 83.7), 0.3: (63.0, 84.0), 0.4: (66.0, 84.6),
                   0.5: (69.0, 84.8), 0.6: (71.5, 84.9), 0.7: (73.0, 84.9), 0.75: (73.5, 84.9), 0.8: (72.5, 84.8),
                   0.9: (67.0, 84.0)},
    "decoder_depth": {1: (65.5, 84.8), 2: (70.0, 84.9), 4: (71.9, 84.9), 8: (73.5, 84.9), 12: (73.3, 84.4)},
    "decoder_embed_dim": {128: (69.1, 84.9), 256: (71.3, 84.8), 512: (73.5, 84.9), 768: (73.1, 84.4),
                          1024: (73.1, 84.3)},
    "norm_pix_loss": {False: (73.5, 84.9), True: (73.9, 85.4)},
    "masking": {"random": (73.5, 84.9), "block": (63.9, 82.8), "grid": (66.0, 84.0)},
    "encoder_mask_tokens": {False: (73.5, 84.9), True: (59.6, 84.2)},  # with [M]: 3.3x the pretraining FLOPs
    "augmentation": {"none": (65.7, 84.0), "crop": (73.5, 84.9), "crop+jitter": (71.9, 84.3)},
}

# The paper's direction for each factor, as (factor, better value, worse value): the first should score higher
# on the probe. Our decoder widths are the mini model's 48 / 96 / 192 against the paper's 128 / 256 / 512.
CLAIMS = [
    ("mask_ratio", 0.75, 0.25, "a high mask ratio (75%) beats a low one (25%)"),
    ("decoder_depth", 4, 1, "a deeper decoder (4 blocks) beats a 1-block one"),
    ("decoder_embed_dim", 96, 48, "a wider decoder (96) beats the narrowest (48)"),
    ("norm_pix_loss", True, False, "normalised pixels beat raw pixels as the target"),
    ("masking", "random", "block", "random masking beats block masking"),
    ("masking", "random", "grid", "random masking beats grid masking"),
    ("encoder_mask_tokens", False, True, "an encoder without [M] tokens beats one with them"),
    ("augmentation", "crop", "none", "random crops beat no augmentation"),
    ("augmentation", "crop", "crop+jitter", "adding colour jitter to the crops does not help"),
]


def settings_for(preset: str = "quick", *, seeds: int | None = None, factors: list[str] | None = None,
                 first_seed: int = 0, reference: bool = True, **budget) -> list[Setting]:
    """The sweep's settings: the preset's baseline and factors (or only `factors`, with the full preset's
    values), each for `seeds` seeds (first_seed, first_seed + 1, ...), plus the randomly initialised encoder
    (steps=0) as the reference. budget overrides the preset's baseline (steps, batch_size, ...)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    design = PRESETS[preset]
    chosen = design["factors"] if factors is None else {f: FACTORS[f] for f in factors if _known(f)}
    seeds = design["seeds"] if seeds is None else seeds
    return one_at_a_time({**design["baseline"], **budget}, chosen, seeds=list(range(first_seed, first_seed + seeds)),
                         reference={"steps": 0} if reference else None)


def _known(factor: str) -> bool:
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; the factors are {sorted(FACTORS)}")
    return True


def check_claims(table: list[dict], metric: str = "probe_acc") -> list[dict]:
    """Each of the paper's directions (`CLAIMS`) that the table can test: our difference (better - worse) on
    `metric`, mean ± pooled s.e. of the seeds, and a verdict: "holds" (same sign, 95% interval excludes zero),
    "reversed" (opposite sign, resolved) or "not resolved" (the interval includes zero)."""

    runs = {}  # (factor, value) -> the row of the factor table
    for row in table:
        runs[(row["factor"], repr(row["value"]))] = row
    out = []
    for factor, better, worse, text in CLAIMS:
        hi, lo = runs.get((factor, repr(better))), runs.get((factor, repr(worse)))
        if hi is None or lo is None or hi.get(metric) is None or lo.get(metric) is None:
            continue
        c = compare(hi[metric + "_values"], lo[metric + "_values"])
        verdict = "not resolved" if not c.resolved else ("holds" if c.diff > 0 else "reversed")
        out.append(dict(factor=factor, text=text, better=better, worse=worse, metric=metric, diff=c.diff, se=c.se,
                        low=c.low, high=c.high, verdict=verdict))
    return out


METRICS = ("knn_acc", "probe_acc", "knn_acc_mean", "probe_acc_mean", "finetune_acc", "val_loss", "target_predict_zero",
           "train_seconds")


def summarise(rows: list[dict], failed: list[dict] | None = None, baseline: dict = BASELINE, metrics=METRICS) -> dict:
    """A sweep's rows -> a JSON-ready summary: the factor table (mean ± s.e., vs baseline) and the claims on the
    probe, on k-NN and, where the runs fine-tuned, on fine-tuning. The same summary `maelib ablate` exports."""

    table = factor_table(rows, list(metrics), baseline)
    claims = [c for metric in ("probe_acc", "knn_acc", "finetune_acc") for c in check_claims(table, metric)]

    def plain(row: dict) -> dict:
        out = {}
        for key, value in row.items():
            out[key] = (dict(diff=value.diff, se=value.se, low=value.low, high=value.high, resolved=value.resolved)
                        if hasattr(value, "resolved") else value)
        return out

    return dict(table=[plain(r) for r in table], claims=claims, rows=rows, failed=failed or [],
                unlearned=[r["name"] for r in rows if r.get("learned") is False], runs_span_seconds=_span(rows))


def _span(rows: list[dict]) -> float | None:
    """Wall seconds from the first run's start to the last run's end (the sweep's own time, even when the
    summary is made later by a resumed sweep that had nothing left to run)."""
    import datetime as dt

    times = [(dt.datetime.strptime(r["started"], "%Y-%m-%d %H:%M:%S"), r["seconds"]) for r in rows
             if r.get("started") and r.get("seconds") is not None]
    if not times:
        return None
    end = max(start + dt.timedelta(seconds=s) for start, s in times)
    return round((end - min(start for start, _ in times)).total_seconds(), 1)


def environment() -> dict:
    """Where and when a sweep ran: machine, date (UTC) and versions, for its exported summary."""
    import datetime as dt
    import os
    import platform

    import lightning
    import torch

    cores = os.cpu_count() or 1
    gpu = f", {torch.cuda.device_count()} x {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return dict(machine=f"{cores}-core {platform.machine()} CPU{gpu}; Python {platform.python_version()}, "
                        f"torch {torch.__version__}, lightning {lightning.__version__}",
                date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def run_preset(preset: str, out_dir: str, *, executor: str = "processes", workers: int = 2,
               threads: int | None = None, seeds: int | None = None, factors: list[str] | None = None,
               notebook: str | None = None, slurm: dict | None = None, **budget) -> dict:
    """Run (or resume) a preset's sweep and summarise it: settings_for -> run_sweep -> summarise."""

    settings = settings_for(preset, seeds=seeds, factors=factors, **budget)
    result = run_sweep(settings, out_dir, executor=executor, workers=workers, threads=threads, notebook=notebook,
                       slurm=slurm)
    baseline = {**PRESETS[preset]["baseline"], **budget}
    summary = summarise(result.rows, result.failed, baseline)
    summary.update(**environment(), preset=preset, baseline=baseline, seeds=seeds or PRESETS[preset]["seeds"],
                   executor=executor, workers=workers, threads=threads, sweep_seconds=result.seconds,
                   skipped=result.skipped, settings=len(settings))
    return summary


# ------------------------------------------------------------------ the `maelib ablate` command
def ablate_command(args: list[str]) -> dict:
    """`maelib ablate`: a preset's ablation sweep (maelib.experiments.ablation_design), on this machine or on SLURM."""
    import argparse
    import json
    from pathlib import Path


    parser = argparse.ArgumentParser(prog="maelib ablate", description=ablate_command.__doc__ + """

    maelib ablate --preset quick                                   # 2 processes of 1 thread on 2 cores
    maelib ablate --preset full --executor slurm --partition gpu --gpus 1 --workers 32 --time 60
    maelib ablate --preset full --steps 20000 --batch_size 512     # a larger budget (GPUs)
    maelib ablate --preset full --finetune_epochs 2                # also fine-tune every run (Table 1's "ft")
Rerunning the same command resumes: settings with results are skipped.""",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--out", default=None, help="sweep directory (default runs/ablations/<preset>)")
    parser.add_argument("--executor", choices=EXECUTORS, default="processes")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (SLURM: array parallelism)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default cores / workers)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per setting (default: the preset's, 3)")
    parser.add_argument("--factors", nargs="*", choices=sorted(FACTORS), default=None, help="only these factors")
    parser.add_argument("--notebook", default=None, help="run each setting as this papermill child notebook")
    for name in ("steps", "batch_size", "train_images", "eval_train_images", "eval_test_images", "finetune_epochs",
                 "finetune_images"):
        parser.add_argument(f"--{name}", type=int, default=None, help="override the preset's budget")
    parser.add_argument("--base_lr", type=float, default=None)
    parser.add_argument("--partition", default=None, help="SLURM partition")
    parser.add_argument("--gpus", type=int, default=None, help="SLURM GPUs per job")
    parser.add_argument("--cpus", type=int, default=None, help="SLURM CPUs per job")
    parser.add_argument("--time", type=int, default=60, help="SLURM (and local job) time limit, minutes")
    parser.add_argument("--export", default=None, help="also write the summary JSON here (e.g. benchmarks/results/)")
    cfg = parser.parse_args(args)
    names = ("steps", "batch_size", "train_images", "eval_train_images", "eval_test_images", "finetune_epochs",
             "finetune_images", "base_lr")
    budget = {k: getattr(cfg, k) for k in names if getattr(cfg, k) is not None}
    slurm = {"timeout_min": cfg.time, **({"slurm_partition": cfg.partition} if cfg.partition else {}),
             **({"gpus_per_node": cfg.gpus} if cfg.gpus is not None else {}),
             **({"cpus_per_task": cfg.cpus} if cfg.cpus is not None else {})}
    out = cfg.out or f"runs/ablations/{cfg.preset}"
    summary = run_preset(cfg.preset, out, executor=cfg.executor, workers=cfg.workers, threads=cfg.threads,
                         seeds=cfg.seeds, factors=cfg.factors, notebook=cfg.notebook, slurm=slurm, **budget)
    summary["command"] = "maelib ablate " + " ".join(args)
    print(format_table(factor_table(summary["rows"], ["knn_acc", "probe_acc", "val_loss"], summary["baseline"]),
                       ["knn_acc", "probe_acc", "val_loss"]))
    for claim in summary["claims"]:
        print(f"{claim['metric']:9s} {claim['text']}: {claim['diff']:+.3f} ± {claim['se']:.3f} -> {claim['verdict']}")
    if summary["unlearned"]:
        print(f"runs that did not learn past predicting zero: {', '.join(summary['unlearned'])}")
    for path in [Path(out) / "summary.json"] + ([Path(cfg.export)] if cfg.export else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(summary, indent=1, default=str) + "\n")
        print(f"summary written to {path}")
    return summary
