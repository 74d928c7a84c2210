"""What the notebooks share: their start (parameter checks, seed, output folder), self-checking exercises,
recorded results, checkpoints.

Kept here so the notebooks show ideas, not plumbing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ..data import MAEDataModule
from ..registry import model_config
from ..train.modules import MAEPretrainModule
from ..train.trainer import quiet_lightning, quiet_trainer
from ..weights.checkpoint import save_model
from ..weights.zoo import is_pretrained_name
from .parameters import check_parameters


# ------------------------------------------------------------------ parameters (papermill)
def start_notebook(notebook: str, namespace: dict) -> Path:
    """What every notebook does first, in one line after its imports:

        out = start_notebook("05_probing_and_knn", globals())

    checks the notebook's parameters (read from `namespace`, its globals) against their declarations in
    `maelib.course.parameters` (a TypeError or ValueError names the first bad one and its allowed range; a list
    or dict given as text, as `papermill -p` passes it, is parsed and written back), seeds Python, NumPy and
    torch with `seed` (Lightning's seed_everything), quiets Lightning, prints the device, and returns the output
    folder, created: `out_dir`, or runs_dir()/notebooks/<notebook> when it is empty."""
    values = check_parameters(notebook, namespace)
    namespace.update(values)
    quiet_lightning()
    if "seed" in values:
        L.seed_everything(values["seed"], verbose=False)
    out = Path(output_dir(values.get("out_dir", ""), notebook))
    print(f"device: {device()}")
    return out


# ------------------------------------------------------------------ exercises
# How strict `check` is, from the environment: "" (default) only prints, for students; "strict" (the test runs)
# raises on a wrong answer; "solutions" (the test run of the exercises with their solutions) also raises on an
# unanswered one.
CHECKS_ENV = "MAELIB_CHECKS"


class CheckFailed(AssertionError):
    """A notebook check failed while $MAELIB_CHECKS asked for failures to stop the run."""


def _verdict(ok: bool | None, message: str) -> bool:
    print(message)
    mode = os.environ.get(CHECKS_ENV, "")
    if mode not in ("", "strict", "solutions"):
        raise ValueError(f"${CHECKS_ENV} must be empty, 'strict' or 'solutions', got {mode!r}")
    if (ok is False and mode) or (ok is None and mode == "solutions"):
        raise CheckFailed(message)
    return bool(ok)


def check(answer: Any, expected: Any, what: str = "your answer", atol: float = 1e-5) -> bool:
    """Compare an answer (a learner's, or a notebook's own version of a maelib function) with the expected one and
    say what is wrong: ✓ or ✗ and why, or "not answered yet" for None. Returns whether it matched.

    Works for numbers, tensors (shape, then values) and anything comparable with ==. It only prints, unless
    $MAELIB_CHECKS is "strict" (a wrong answer raises `CheckFailed`, as in the test runs of the notebooks) or
    "solutions" (an unanswered one raises too).
    """
    if answer is None:
        return _verdict(None, f"… {what}: not answered yet")
    if isinstance(expected, torch.Tensor) or isinstance(answer, torch.Tensor):
        answer, expected = torch.as_tensor(answer), torch.as_tensor(expected)
        if answer.shape != expected.shape:
            return _verdict(False, f"✗ {what}: shape {tuple(answer.shape)}, expected {tuple(expected.shape)}")
        ok = torch.allclose(answer.float(), expected.float(), atol=atol)
        worst = (answer.float() - expected.float()).abs().max().item() if answer.numel() else 0.0
        return _verdict(ok, f"✓ {what}" if ok else f"✗ {what}: values differ (largest difference {worst:.3g})")
    if isinstance(expected, float) or isinstance(answer, float):
        ok = math.isclose(float(answer), float(expected), rel_tol=1e-4, abs_tol=atol)
    else:
        ok = answer == expected
    return _verdict(bool(ok), f"✓ {what}" if ok else f"✗ {what}: got {answer!r}, expected {expected!r}")


# ------------------------------------------------------------------ results and checkpoints
def record(out_dir: str | os.PathLike, **values: Any) -> dict:
    """Add numbers to <out_dir>/results.json (read by `make run`'s summary) and return everything recorded."""
    path = Path(out_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.exists() else {}
    for key, value in values.items():
        results[key] = value.item() if isinstance(value, torch.Tensor) else value
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results


RUNS_ENV = "MAELIB_RUNS"


def runs_dir() -> Path:
    """Where the notebooks write and look for runs: $MAELIB_RUNS when set; ../runs when the working directory is
    the notebooks/ folder of a maelib clone; ./runs anywhere else (a notebook alone in Colab, say)."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV])
    here = Path.cwd()
    if here.name == "notebooks" and (here.parent / "maelib" / "__init__.py").exists():
        return here.parent / "runs"
    return here / "runs"


def output_dir(out_dir: str, notebook: str) -> str:
    """A notebook's output folder, created: `out_dir` when given, else runs_dir()/notebooks/<notebook>."""
    path = Path(out_dir) if out_dir else runs_dir() / "notebooks" / notebook
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def find_checkpoint(explicit: str = "", search: str | Path | None = None,
                    name: str = "mae.safetensors") -> str | Path | None:
    """The checkpoint a notebook should start from: a zoo name as given (`maelib.list_pretrained()`, e.g.
    "mae_vit_mini_patch4_28.fmnist_normpix" or "official:mae_visualize_vit_large"), a path that exists, or with
    `explicit=""` the newest `name` under `search` (default `runs_dir()`; None if there is none).
    `maelib.load_model` takes all."""
    search = runs_dir() if search is None else search
    if is_pretrained_name(explicit):
        return explicit
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {explicit} is neither a file nor a zoo model (maelib.list_pretrained()); "
                                    f"give another, or '' to search {search}/")
        return path
    found = sorted(Path(search).glob(f"**/{name}"), key=lambda p: p.stat().st_mtime) if Path(search).exists() else []
    return found[-1] if found else None



def checkpoint_or_pretrain(checkpoint: str, out_dir: str | os.PathLike, *, arch: str = "mae_vit_mini_patch4_28",
                           epochs: int = 3, train_images: int = 10000, seed: int = 0) -> str | Path:
    """The MAE a notebook starts from: `find_checkpoint(checkpoint)`, or, when that finds none, a short pretraining
    run here on Fashion-MNIST (notebook 4's recipe: base lr 2e-3, half an epoch of warm-up), saved as
    out_dir/fallback_mae.safetensors (not mae.safetensors, so that a real run of notebook 4 is found first)."""
    found = find_checkpoint(checkpoint)
    if found is not None:
        return found


    print(f"no checkpoint given and no mae.safetensors under {runs_dir()}: pretraining {arch} here for {epochs} "
          f"epoch(s) on {train_images} images (run notebook 4, or give a zoo name, for a better one)")
    L.seed_everything(seed, verbose=False)
    config = model_config(arch)
    data = MAEDataModule(img_size=config.img_size, in_chans=config.in_chans, batch_size=min(256, train_images),
                         train_subset=train_images, augment="mae", seed=seed)
    module = MAEPretrainModule(arch=arch, base_lr=2e-3, warmup_epochs=0.5)
    quiet_trainer(max_epochs=epochs, progress=True).fit(module, datamodule=data)
    return save_model(module.model, Path(out_dir) / "fallback_mae.safetensors")



def device() -> str:
    """"cuda" when a GPU is there, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"
