"""`maelib ablate`: run (or resume) a preset's ablation sweep on this machine or on SLURM, then summarise it.

    maelib ablate --preset quick                      # 3 seeds, a few minutes on 2 cores: what noise looks like
    maelib ablate --preset study --export benchmarks/results/ablation_study_cpu.json   # the CPU study, hours
    maelib ablate --preset full --executor slurm --partition gpu --gpus 1 --workers 32

The presets and the paper's numbers: `maelib.experiments.ablation_design`; one run: `maelib.experiments.ablation`;
the findings: `maelib.experiments.verdicts`.
"""

from __future__ import annotations

from ..files import write_text_atomic
from .ablation import score_pixels
from .ablation_design import FACTORS, PRESETS, STUDY_EPOCH, settings_for
from .stats import factor_table, format_table
from .sweep import EXECUTORS, collect, run_sweep
from .verdicts import summarise


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
               notebook: str | None = None, slurm: dict | None = None, collect_only: bool = False,
               first_seed: int = 0, **budget) -> dict:
    """Run (or resume) a preset's sweep and summarise it: settings_for -> run_sweep -> summarise.
    collect_only: run nothing; summarise the runs already in out_dir (a study still in progress), the missing
    ones listed in "failed" as "no result"."""

    settings = settings_for(preset, seeds=seeds, factors=factors, first_seed=first_seed, **budget)
    result = (collect(settings, out_dir) if collect_only else
              run_sweep(settings, out_dir, executor=executor, workers=workers, threads=threads, notebook=notebook,
                        slurm=slurm))
    baseline = {**PRESETS[preset]["baseline"], **budget}
    epoch_images = 128 * STUDY_EPOCH if preset == "study" else baseline.get("train_images") or 60000
    summary = summarise(result.rows, result.failed, baseline, epoch_images=epoch_images)
    summary["pixels"] = score_pixels(eval_train_images=baseline["eval_train_images"],
                                     eval_test_images=baseline["eval_test_images"], holdout=baseline.get("holdout"))
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
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: summarise (and export) the runs already in --out, e.g. a study in progress")
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
                         seeds=cfg.seeds, factors=cfg.factors, notebook=cfg.notebook, slurm=slurm,
                         collect_only=cfg.collect, **budget)
    summary["command"] = "maelib ablate " + " ".join(a for a in args if a != "--collect")
    shown = ["knn_acc_mean", "probe_acc_mean", "finetune_acc", "loss_ratio"]
    print(format_table(factor_table(summary["rows"], shown, summary["baseline"]), shown))
    for claim in summary["claims"]:
        print(f"{claim['metric']:14s} {claim['text']}: {claim['diff']:+.3f} ± {claim['se']:.3f} "
              f"(Holm p {claim['p_holm']:.3f}) -> {claim['verdict']}")
    if summary["bars"]["seeds"]:
        print(f"the baseline clears the bars {summary['bars']['bars']} in every seed: {summary['bars']['all_meet']}")
    if summary["unlearned"]:
        print(f"runs that did not learn past predicting zero: {', '.join(summary['unlearned'])}")
    for path in [Path(out) / "summary.json"] + ([Path(cfg.export)] if cfg.export else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(summary, indent=1, default=str) + "\n")
        print(f"summary written to {path}")
    return summary
