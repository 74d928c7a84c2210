"""The benchmark script runs (a smoke run at tiny CPU sizes; no timing assertions: speed lives in benchmarks/)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_run_writes_its_report(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--smoke", "--device", "cpu",
                             "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"date", "device", "torch", "transformers", "precision"} <= set(report["env"])
    impls = {(row["impl"], round(row["mask_ratio"], 3)) for row in report["rows"]}
    assert impls == {("transformers", 0.75), ("maelib", 0.75), ("transformers", 0.02), ("maelib", 0.02)}
    for row in report["rows"]:
        assert row["images_per_second"] > 0 and row["gflop_per_image"] > 0
    # the same architecture in both: FLOPs per image agree (within the loss/masking bookkeeping)
    flops = {(r["impl"], round(r["mask_ratio"], 3)): r["gflop_per_image"] for r in report["rows"]}
    assert abs(flops[("maelib", 0.75)] / flops[("transformers", 0.75)] - 1) < 0.05
    assert flops[("maelib", 0.02)] > 1.5 * flops[("maelib", 0.75)]  # the encoder sees ~4x the tokens
    assert "| model |" in result.stdout


def test_loop_throughput_smoke_run_reports_loop_loader_and_bare_step(tmp_path):
    out = tmp_path / "loop.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "loop_throughput.py"), "--smoke",
                             "--root", str(tmp_path / "images"), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("bare_step_images_per_second", "loader_images_per_second", "loop_images_per_second"):
        assert report[key] > 0
    assert report["loop_over_bare"] == round(report["loop_images_per_second"] / report["bare_step_images_per_second"], 3)
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 64  # the synthetic folder it trained on


def test_profile_step_smoke_run_splits_the_step_by_kind(tmp_path):
    out = tmp_path / "profile.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--device", "cpu",
                             "--arch", "mae_vit_mini_patch4_28", "--batch", "8", "--impl", "maelib", "--warmup", "1",
                             "--steps", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["step_ms"] > 0
    assert abs(sum(report["by_kind_ms"].values()) - report["step_ms"]) < 1e-6 * report["step_ms"] + 1e-9
    assert report["by_kind_ms"]["matmul"] > 0 and report["by_kind_ms"]["optimizer"] > 0
    assert "| kind | ms per step | share |" in result.stdout


def test_masking_and_sweep_benchmarks_run(tmp_path):
    out = tmp_path / "masking.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "masking_speed.py"), "--batch", "64",
                             "--grid", "7", "--repeats", "2", "--out", str(out)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["masking"] for r in json.loads(out.read_text())["rows"]] == ["random", "block", "grid"]
    out = tmp_path / "sweep.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep_parallel.py"), "--runs", "2",
                             "--steps", "2", "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [(lay["workers"], lay["threads"]) for lay in report["layouts"]][0][0] == 1 and report["speedup"] > 0


def test_folder_in_memory_benchmark_runs(tmp_path):
    out = tmp_path / "folder.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "folder_in_memory.py"), "--smoke", "--out",
                             str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["images"] == 512 and report["in_memory_speedup"] > 0
    assert all(report[f"{name}_images_per_second"] > 0
               for name in ("folder_from_disk", "folder_in_memory", "fashion_mnist_in_memory"))
