"""`pip install` gives the presets and the notebooks too (issue 19): the wheel is built, installed into a fresh
virtual environment outside the repository, and used from a folder that has no clone in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from maelib.course.presets import NOTEBOOK_FILES

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "maelib", "configs", "notebooks")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh environment's bin folder, the wheel). The dependencies (torch, lightning, ...) come from the
    test environment's site-packages through a .pth line; maelib itself only from the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # a copy, so the build leaves nothing in the repository
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")}
                                        if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, timeout=600)
    wheel = next((tmp / "dist").glob("maelib-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True, timeout=600)
    bin_dir = tmp / "venv" / "bin"
    site = next((tmp / "venv" / "lib").glob("python*/site-packages"))
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, timeout=600)  # this pip, into that environment
    return bin_dir, wheel


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_carries_the_presets_notebooks_and_weights(installed):
    names = zipfile.ZipFile(installed[1]).namelist()
    for preset in (ROOT / "configs").glob("*.yaml"):
        assert f"maelib/_bundled/configs/{preset.name}" in names
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert f"maelib/_bundled/notebooks/{nb.name}" in names
    assert "maelib/_bundled/notebooks/sweeps/ablation_run.ipynb" in names
    assert any(n.startswith("maelib/_bundled/notebooks/solutions/") for n in names)
    assert "maelib/weights/mae_vit_mini_patch4_28.fmnist_normpix.safetensors" in names


SCRIPT = """
import contextlib, io, json, sys
import maelib
from maelib.train.cli import console
out = {"file": maelib.__file__}
for name, argv in {"presets": ["presets"], "copy": ["notebooks", "course"], "again": ["notebooks", "course"],
                   "wrong": ["pretrain", "--config", "fmnsit"]}.items():
    sys.argv = ["maelib", *argv]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = console()
    out[name] = {"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
print(json.dumps(out))
"""


def test_the_installed_package_lists_its_presets_and_copies_its_notebooks(installed, tmp_path):
    """One process (an import of torch costs seconds): maelib comes from the wheel, `maelib presets` lists the
    presets, `maelib notebooks` copies every notebook file once and then refuses to overwrite, and a misspelt
    preset gets the list of the real ones."""
    bin_dir, _ = installed
    done = run(bin_dir, tmp_path, str(bin_dir / "python"), "-c", SCRIPT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["file"].startswith(str(bin_dir.parent))  # not the repository's copy
    assert out["presets"]["rc"] == 0 and "maelib pretrain --config fmnist" in out["presets"]["stdout"]
    assert "maelib linprobe --config vit_base" in out["presets"]["stdout"]
    copied = sorted(p.relative_to(tmp_path / "course").as_posix() for p in (tmp_path / "course").rglob("*")
                    if p.is_file())
    repo = sorted(p.relative_to(ROOT / "notebooks").as_posix() for pattern in NOTEBOOK_FILES
                  for p in (ROOT / "notebooks").glob(pattern))
    assert out["copy"]["rc"] == 0 and copied == repo and len(repo) > 16
    assert (tmp_path / "course" / "01_patches_and_masking.ipynb").read_bytes() == \
        (ROOT / "notebooks" / "01_patches_and_masking.ipynb").read_bytes()
    assert out["again"]["rc"] == 1 and "nothing was copied" in out["again"]["stderr"]  # nothing overwritten
    assert out["wrong"]["rc"] == 1
    assert "no preset of that name. The presets of maelib pretrain: fmnist, folder, photos" in out["wrong"]["stderr"]


def test_a_preset_by_name_trains_from_the_installed_command(installed, tmp_path):
    bin_dir, _ = installed
    out = run(bin_dir, tmp_path, "maelib", "pretrain", "--config", "fmnist", "--trainer.max_epochs", "1",
              "--data.train_subset", "128", "--data.test_subset", "64", "--data.batch_size", "64",
              "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", "run")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2
