"""maelib.experiments.sweep: settings, parallel local runs, submitit's local executor, failures listed, resume after a kill."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from maelib.experiments.sweep import Setting, collect, one_at_a_time, run_sweep

TOY = '''
import os, time

def toy(x, seed, fail=False, threads=None):
    """A stand-in for a training run: logs that it ran, optionally sleeps or fails, returns numbers."""
    if fail:
        raise RuntimeError("toy failure")
    with open(os.environ["TOY_LOG"], "a") as f:
        f.write(f"{x} {seed} {os.getpid()}\\n")
    time.sleep(float(os.environ.get("TOY_SLEEP", "0")) * (seed > 0))
    return dict(knn_acc=0.5 + x + 0.001 * seed, threads=threads, pid=os.getpid())
'''


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    """A module `toy_run` importable by this process, its worker processes and submitit's jobs."""
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "toy_run.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "mod"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TOY_LOG", str(tmp_path / "log.txt"))
    return tmp_path


def ran(tmp_path) -> list[str]:
    log = tmp_path / "log.txt"
    return log.read_text().splitlines() if log.exists() else []


def test_one_at_a_time_design():
    settings = one_at_a_time(dict(x=0.0, fail=False), {"x": [0.0, 0.1, 0.2]}, seeds=[0, 1], reference={"x": -1.0})
    assert [s.name for s in settings] == ["baseline/seed0", "baseline/seed1", "x=0.1/seed0", "x=0.1/seed1",
                                          "x=0.2/seed0", "x=0.2/seed1", "reference/seed0", "reference/seed1"]
    assert settings[2].params == dict(x=0.1, fail=False, seed=0) and settings[-1].params["x"] == -1.0
    with pytest.raises(ValueError, match="not a baseline setting"):
        one_at_a_time(dict(x=0.0), {"y": [1]}, seeds=[0])


def test_processes_run_in_parallel_list_failures_and_skip_finished(toy):
    settings = one_at_a_time(dict(x=0.0, fail=False), {"x": [0.1], "fail": [True]}, seeds=[0, 1, 2])
    result = run_sweep(settings, toy / "out", fn="toy_run:toy", executor="processes", workers=2, threads=1,
                       progress=None)
    assert len(result.rows) == 6 and [f["name"] for f in result.failed] == [f"fail=True/seed{s}" for s in range(3)]
    assert all("RuntimeError: toy failure" in f["error"] for f in result.failed)
    assert len({r["pid"] for r in result.rows}) == 2 and {r["threads"] for r in result.rows} == {1}
    row = next(r for r in result.rows if r["name"] == "x=0.1/seed2")
    assert row["factor"] == "x" and row["value"] == 0.1 and row["knn_acc"] == pytest.approx(0.602)
    assert len(ran(toy)) == 6
    again = run_sweep(settings, toy / "out", fn="toy_run:toy", executor="inline", progress=None)
    assert again.skipped == 6 and len(ran(toy)) == 6 and len(again.failed) == 3  # only the failed were retried


def test_submitit_local_executor(toy):
    settings = one_at_a_time(dict(x=0.0), {"x": [0.3]}, seeds=[0, 1])
    lines = []
    result = run_sweep(settings, toy / "out", fn="toy_run:toy", executor="local", workers=2, progress=lines.append)
    assert not result.failed and sorted(r["knn_acc"] for r in result.rows) == pytest.approx([0.5, 0.501, 0.8, 0.801])
    assert (toy / "out" / "submitit").is_dir() and len({r["pid"] for r in result.rows}) == 4  # a process per job
    assert any(line.startswith("[4/4] ") and "knn_acc" in line for line in lines)


def test_an_interrupted_sweep_resumes_without_rerunning_finished_settings(toy):
    script = textwrap.dedent(f"""
        from maelib.experiments.sweep import one_at_a_time, run_sweep
        settings = one_at_a_time(dict(x=0.0), {{"x": [0.1, 0.2]}}, seeds=[0, 1])
        run_sweep(settings, {str(toy / 'out')!r}, fn="toy_run:toy", executor="processes", workers=1, threads=1)
    """)
    env = dict(os.environ, TOY_SLEEP="30")  # seed-0 runs (which go first) finish at once, seed-1 runs hang
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(line.split()[1] == "1" for line in ran(toy)):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker, mid-run
        proc.wait()
    finished = sorted(str(p.parent.relative_to(toy / "out")) for p in (toy / "out").glob("*/*/results.json"))
    assert finished == ["baseline/seed0", "x=0.1/seed0", "x=0.2/seed0"] and len(ran(toy)) == 4
    settings = one_at_a_time(dict(x=0.0), {"x": [0.1, 0.2]}, seeds=[0, 1])
    before = ran(toy)
    result = run_sweep(settings, toy / "out", fn="toy_run:toy", executor="processes", workers=2, progress=None)
    rerun = [" ".join(line.split()[:2]) for line in ran(toy)[len(before):]]
    assert result.skipped == 3 and not result.failed and len(result.rows) == 6
    assert sorted(rerun) == ["0.0 1", "0.1 1", "0.2 1"]  # only the unfinished settings ran again


def test_a_setting_can_run_as_a_papermill_child_notebook(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    parameters = "x = 1.0\nseed = 0\nthreads = 0\nout_dir = ''"
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from maelib.course.notebook import record\nrecord(out_dir, knn_acc=x / 2, seed=seed)")]
    child = tmp_path / "child.ipynb"
    nbformat.write(nb, child)
    settings = [Setting("x", 3.0, 1, dict(x=3.0, seed=1))]
    result = run_sweep(settings, tmp_path / "out", executor="inline", notebook=str(child), progress=None)
    assert result.rows[0]["knn_acc"] == 1.5 and result.rows[0]["seed"] == 1
    assert (tmp_path / "out" / "x=3.0" / "seed1" / "child.ipynb").exists()  # the executed notebook stays


def test_collect_lists_settings_that_never_ran(tmp_path):
    result = collect([Setting("baseline", None, 0, {})], tmp_path)
    assert result.rows == [] and "no result" in result.failed[0]["error"]


def test_the_slurm_executor_asks_for_the_partition_gpus_time_and_array_parallelism(tmp_path, monkeypatch):
    """On a login node submitit finds `srun`; here a stand-in on PATH lets the SLURM executor be built, and its
    job-array script is checked line by line (no job is submitted)."""
    from maelib.experiments.sweep import submitit_executor

    (tmp_path / "bin").mkdir()
    for tool in ("srun", "sbatch"):
        (tmp_path / "bin" / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "bin" / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    ex = submitit_executor("slurm", tmp_path / "jobs", workers=8,
                           slurm={"slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 90, "cpus_per_task": 6})
    ex._executor.parameters["map_count"] = 40  # what map_array sets for 40 settings
    script = ex._executor._make_submission_file_text("python -m submitit.core._submit ...", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --array=0-39%8", "#SBATCH --job-name=maelib-sweep"):
        assert line in script, f"{line!r} not in the sbatch script:\n{script}"
