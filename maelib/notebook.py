"""What the notebooks share: parameter checks, self-checking exercises, recorded results, checkpoints.

Kept here so the notebooks show ideas, not plumbing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch


# ------------------------------------------------------------------ parameters (papermill)
def check_parameter(name: str, value: Any, kind: type | tuple[type, ...], low: float | None = None,
                    high: float | None = None, *, high_inclusive: bool = True, choices: tuple | None = None) -> None:
    """Fail at once, with a message naming the parameter, when a notebook parameter has the wrong type or range.

        check_parameter("mask_ratio", mask_ratio, float, 0.0, 1.0, high_inclusive=False)
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"parameter {name} must be {wanted}, got {value!r} ({type(value).__name__}); "
                        f"e.g. papermill ... -p {name} <value>")
    if choices is not None and value not in choices:
        raise ValueError(f"parameter {name} must be one of {choices}, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"parameter {name} must be >= {low}, got {value!r}")
    if high is not None and (value > high or (not high_inclusive and value >= high)):
        raise ValueError(f"parameter {name} must be {'<=' if high_inclusive else '<'} {high}, got {value!r}")


# ------------------------------------------------------------------ exercises
def check(answer: Any, expected: Any, what: str = "your answer", atol: float = 1e-5) -> bool:
    """Compare a learner's answer with the expected one and say what is wrong; never raises.

    Works for numbers, tensors (shape, then values) and anything comparable with ==.
    An answer left as None is reported as not done yet.
    """
    if answer is None:
        print(f"… {what}: not answered yet")
        return False
    if isinstance(expected, torch.Tensor) or isinstance(answer, torch.Tensor):
        answer, expected = torch.as_tensor(answer), torch.as_tensor(expected)
        if answer.shape != expected.shape:
            print(f"✗ {what}: shape {tuple(answer.shape)}, expected {tuple(expected.shape)}")
            return False
        ok = torch.allclose(answer.float(), expected.float(), atol=atol)
        worst = (answer.float() - expected.float()).abs().max().item() if answer.numel() else 0.0
        print(f"✓ {what}" if ok else f"✗ {what}: values differ (largest difference {worst:.3g})")
        return ok
    if isinstance(expected, float) or isinstance(answer, float):
        ok = math.isclose(float(answer), float(expected), rel_tol=1e-4, abs_tol=atol)
    else:
        ok = answer == expected
    print(f"✓ {what}" if ok else f"✗ {what}: got {answer!r}, expected {expected!r}")
    return bool(ok)


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


def find_checkpoint(explicit: str = "", search: str = "runs", name: str = "mae.safetensors") -> str | Path | None:
    """The checkpoint a notebook should start from: a zoo name as given (`maelib.list_pretrained()`, e.g.
    "mae_vit_mini_patch4_28.fmnist_normpix" or "official:mae_visualize_vit_large"), a path that exists, or with
    `explicit=""` the newest `name` under `search` (None if there is none). `maelib.load_model` takes all."""
    from .zoo import is_pretrained_name

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


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter (GPU/TPU lines, tips, summaries) so notebook outputs stay readable."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*treespec.*")


def device() -> str:
    """"cuda" when a GPU is there, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"
