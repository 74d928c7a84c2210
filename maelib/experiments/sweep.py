"""A sweep: one function (or one papermill child notebook) run once per setting, on this machine or on SLURM.

    from maelib.experiments import sweep
    settings = sweep.one_at_a_time(baseline, factors, seeds=[0, 1, 2])
    result = sweep.run_sweep(settings, "runs/ablations", executor="processes", workers=2)
    result.rows, result.failed            # every setting's results; the ones that failed, with their error

Executors (each an existing engine; the sweep itself only decides what still has to run):

    "inline"     in this process, one after another (debugging, Colab)
    "processes"  `concurrent.futures.ProcessPoolExecutor`: `workers` processes on this machine, each with
                 `threads` torch threads (two runs of one thread each on two cores)
    "local"      submitit's LocalExecutor: every setting a separate job, as on a cluster (this is what the tests
                 use to exercise the SLURM path here); submitted `workers` at a time
    "slurm"      submitit's SlurmExecutor: one job array, `workers` jobs at a time (`%` array parallelism),
                 with `slurm` parameters such as {"slurm_partition": "gpu", "gpus_per_node": 1,
                 "timeout_min": 60}

Each setting writes `<out_dir>/<setting.name>/results.json` when it succeeds, atomically, and `failed.json`
(the error and traceback) when it raises. Rerunning a sweep skips every setting with results made with the
same parameters, so an interrupted sweep resumes where it stopped; failed settings are tried again and, if
they fail again, listed.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Sequence

from ..files import write_text_atomic

EXECUTORS = ("inline", "processes", "local", "slurm")
RESULTS, FAILED = "results.json", "failed.json"


@dataclass(frozen=True)
class Setting:
    """One run of a sweep: which factor it varies (or "baseline", "reference"), to what value, and the seed."""

    factor: str
    value: Any
    seed: int
    params: dict = field(hash=False)  # the run function's keyword arguments, the seed included

    @property
    def name(self) -> str:
        """Directory of this run under the sweep's out_dir, e.g. "mask_ratio=0.25/seed1", "reference/seed0"."""
        value = "" if self.factor == "baseline" or self.value is None else f"={self.value}"
        return f"{self.factor}{value}/seed{self.seed}".replace(" ", "")


def one_at_a_time(baseline: dict, factors: dict[str, Sequence], seeds: Sequence[int],
                  reference: dict | None = None) -> list[Setting]:
    """The paper's design (Table 1): the baseline, and each factor's other values with everything else fixed.

    baseline: the run function's keyword arguments; factors: {argument: values to try} (a value equal to the
    baseline's is the baseline itself, run once); reference: overrides for a reference run (e.g. {"steps": 0},
    the randomly initialised encoder). Every setting runs once per seed.
    """
    for name in factors:
        if name not in baseline:
            raise ValueError(f"factor {name!r} is not a baseline setting; the baseline has {sorted(baseline)}")
    settings = [Setting("baseline", None, s, {**baseline, "seed": s}) for s in seeds]
    for name, values in factors.items():
        for value in values:
            if value != baseline[name]:
                settings += [Setting(name, value, s, {**baseline, name: value, "seed": s}) for s in seeds]
    if reference is not None:
        settings += [Setting("reference", None, s, {**baseline, **reference, "seed": s}) for s in seeds]
    return settings


def resolve(fn: str | Callable) -> Callable:
    """"module:function" -> the function (how worker processes and cluster jobs find it)."""
    if callable(fn):
        return fn
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")  # a killed run leaves no half-written results


def run_setting(setting: Setting, out_dir: str, fn: str | Callable, threads: int | None = None,
                notebook: str | None = None) -> dict:
    """Run one setting and write its results.json (or failed.json). Runs inside the worker or the cluster job.

    With `notebook`, the setting's params go to that papermill child notebook instead of `fn`; the child
    writes its numbers with `maelib.course.notebook.record` into its out_dir, <run dir>/notebook.
    """
    run_dir = Path(out_dir) / setting.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED).unlink(missing_ok=True)
    meta = dict(setting=dict(factor=setting.factor, value=setting.value, seed=setting.seed, name=setting.name),
                params=setting.params, host=socket.gethostname(), threads=threads,
                started=time.strftime("%Y-%m-%d %H:%M:%S"))
    start = time.perf_counter()
    try:
        if notebook is not None:
            import papermill as pm

            child = run_dir / "notebook"
            (child / RESULTS).unlink(missing_ok=True)  # `record` adds to it: never read an earlier attempt's
            params = {**setting.params, "out_dir": str(child.resolve()), "threads": threads or 0}
            pm.execute_notebook(notebook, str(run_dir / Path(notebook).name), parameters=params,
                                cwd=str(Path(notebook).parent), progress_bar=False, kernel_name="python3")
            result = json.loads((child / RESULTS).read_text())
        else:
            result = resolve(fn)(**setting.params, **({"threads": threads} if threads else {}))
    except Exception as error:  # recorded, so the sweep lists it instead of losing it
        failure = dict(meta, error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        _write_json(run_dir / FAILED, failure)
        return dict(failure, status="failed")
    meta["seconds"] = round(time.perf_counter() - start, 2)
    _write_json(run_dir / RESULTS, dict(meta, result=result))
    return dict(meta, result=result, status="ok")


def has_results(setting: Setting, out_dir: str | os.PathLike) -> bool:
    """True when the setting's results.json exists and was made with the same parameters (a run of another
    budget under the same name is run again, not reused)."""
    path = Path(out_dir) / setting.name / RESULTS
    if not path.exists():
        return False
    saved = json.loads(path.read_text()).get("params")
    return saved == json.loads(json.dumps(setting.params))


@dataclass
class SweepResult:
    """What a sweep left in out_dir: one row per finished setting, and the settings that failed or never ran."""

    rows: list[dict]
    failed: list[dict]
    skipped: int = 0  # settings that already had results when the sweep started
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def collect(settings: Sequence[Setting], out_dir: str | os.PathLike) -> SweepResult:
    """Gather every setting's results into rows (the setting's factor, value and seed + the run's numbers);
    settings without results are listed in `failed` with their error, or "no result" if the job died."""
    rows, failed = [], []
    for s in settings:
        run_dir = Path(out_dir) / s.name
        head = dict(name=s.name, factor=s.factor, value=s.value, seed=s.seed)
        if has_results(s, out_dir):
            saved = json.loads((run_dir / RESULTS).read_text())
            rows.append(dict(head, started=saved.get("started"), seconds=saved.get("seconds"), **saved["result"]))
        elif (run_dir / FAILED).exists():
            failed.append(dict(head, error=json.loads((run_dir / FAILED).read_text())["error"]))
        else:
            failed.append(dict(head, error="no result: the run was interrupted or its job died (see its logs)"))
    return SweepResult(rows=rows, failed=failed)


def _print_now(line: str) -> None:
    print(line, flush=True)


def _report(progress: Callable[[str], None] | None, done: int, total: int, setting: Setting, out: dict) -> None:
    if progress is None:
        return
    if out.get("status") == "ok":
        result = out["result"]
        numbers = "  ".join(f"{k} {v:.4g}" for k, v in result.items() if k in ("knn_acc", "probe_acc", "val_loss")
                            and isinstance(v, float))
        progress(f"[{done}/{total}] {setting.name}: {numbers} ({out['seconds']:.0f} s)")
    else:
        progress(f"[{done}/{total}] {setting.name}: FAILED {out.get('error')}")


def run_sweep(settings: Sequence[Setting], out_dir: str | os.PathLike, *,
              fn: str | Callable = "maelib.experiments.ablation:run_ablation", executor: str = "processes", workers: int = 2, threads: int | None = None,
              notebook: str | None = None, slurm: dict | None = None,
              progress: Callable[[str], None] | str | None = "print") -> SweepResult:
    """Run the settings that have no results yet, then gather all of them (see the module docstring).

    threads: torch threads per run; default: this machine's cores / workers for "processes" and "local", the
    job's own for "slurm" and "inline". fn must be importable by the workers: a "module:function" string, or a
    module-level function. progress: called with one line per finished run (default: printed at once;
    None: silent).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if progress == "print":  # flushed, so that a log file shows each run as it ends
        progress = _print_now
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise ValueError("two settings share a name (factor, value and seed): each must be unique")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # every setting's first seed first, so that a sweep cut short still has each setting
    pending = sorted((s for s in settings if not has_results(s, out_dir)), key=lambda s: s.seed)
    skipped = len(settings) - len(pending)
    if progress and skipped:
        progress(f"{skipped} of {len(settings)} settings already have results in {out_dir}: skipped "
                 "(delete a run's directory to run it again)")
    if threads is None and executor in ("processes", "local"):
        threads = max(1, (os.cpu_count() or 1) // min(workers, max(1, len(pending))))
    start = time.perf_counter()
    args = (str(out_dir), fn, threads, notebook)
    if executor == "inline":
        for i, s in enumerate(pending, 1):
            _report(progress, i, len(pending), s, run_setting(s, *args))
    elif executor == "processes" and pending:
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_setting, s, *args): s for s in pending}
            for i, future in enumerate(as_completed(futures), 1):
                _report(progress, i, len(pending), futures[future], future.result())
    elif executor in ("local", "slurm") and pending:
        _run_submitit(pending, out_dir, args, executor, workers, slurm or {}, progress)
    result = collect(settings, out_dir)
    result.skipped, result.seconds = skipped, round(time.perf_counter() - start, 1)
    if progress and result.failed:
        progress(f"{len(result.failed)} setting(s) without results: " + ", ".join(f["name"] for f in result.failed))
    return result


def submitit_executor(executor: str, folder: str | os.PathLike, workers: int, slurm: dict):
    """submitit's executor for "slurm" (an AutoExecutor on SLURM: `workers` array jobs at once, `slurm` its
    parameters, e.g. slurm_partition, gpus_per_node, cpus_per_task, timeout_min) or "local" (LocalExecutor)."""
    import submitit

    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(**{"slurm_array_parallelism": workers, "name": "maelib-sweep", **slurm})
    else:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=slurm.get("timeout_min", 24 * 60))
    return ex


def _run_submitit(pending: list[Setting], out_dir: Path, args: tuple, executor: str, workers: int, slurm: dict,
                  progress) -> None:
    """Submit through submitit: one SLURM job array that runs `workers` jobs at a time, or local jobs in waves
    of `workers` (submitit's LocalExecutor starts every job it is given at once)."""
    ex = submitit_executor(executor, out_dir / "submitit" / "%j", workers, slurm)
    waves = [pending] if executor == "slurm" else [pending[i : i + workers] for i in range(0, len(pending), workers)]
    done = 0
    for wave in waves:
        jobs = ex.map_array(run_setting, wave, *[[a] * len(wave) for a in args])
        for job, s in zip(jobs, wave):
            done += 1
            _report(progress, done, len(pending), s, _job_result(job))


def _job_result(job) -> dict:
    """A submitit job's return value, or a failure record if the job itself died (killed, timed out)."""
    try:
        return job.result()
    except Exception as error:
        return dict(status="failed", error=f"job {job.job_id} died: {type(error).__name__}: {error}")
