"""One rule for precision and one factory for the quiet Trainer that notebooks, sweeps and evaluations run.

    trainer = quiet_trainer(max_epochs=3)              # no logger, checkpoints, summary; precision for this machine
    trainer = quiet_trainer(max_steps=600, progress=True)

The command line (`maelib pretrain ...`) builds its own Trainer through LightningCLI, with loggers and
checkpoints, but takes its precision from the same `precision()`.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
import torch


class _NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines: advertising, not information
    about the run. Everything else Lightning says (devices, warnings) passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _hide_lightning_tips() -> None:
    import lightning.pytorch  # noqa: F401  (sets the logger that rank_zero_info writes to)
    from lightning_utilities.core import rank_zero

    if not any(isinstance(f, _NoTips) for f in rank_zero.log.filters):
        rank_zero.log.addFilter(_NoTips())


_hide_lightning_tips()  # for every Trainer maelib makes: the CLI's and quiet_trainer's


def precision(device: str | torch.device | None = None) -> str:
    """Lightning's precision for `device` (default: the GPU if there is one): bf16 autocast on GPUs with bf16
    units (compute capability 8.0 and newer: A100, H100, RTX 30xx), fp16 with a gradient scaler on older ones
    (Colab's T4, V100), float32 on the CPU."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        return "32-true"
    return "bf16-mixed" if torch.cuda.get_device_capability(device)[0] >= 8 else "16-mixed"


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter (GPU/TPU lines, tips, summaries) so notebook outputs stay readable."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*treespec.*")


def quiet_trainer(*, progress: bool = False, validate: bool = False, **overrides: Any) -> L.Trainer:
    """A Trainer for a run that leaves nothing behind but its module: one device (the GPU if there is one), the
    precision of `precision()`, no logger, no checkpoints, no model summary; no progress bar unless `progress`;
    no validation unless `validate`. `overrides` are any other Trainer arguments (max_epochs, max_steps,
    callbacks, logger, ...) and win over these defaults."""
    quiet_lightning()
    on_cpu = overrides.get("accelerator") == "cpu"
    settings: dict[str, Any] = dict(accelerator="auto", devices=1, precision=precision("cpu" if on_cpu else None), logger=False,
                                    enable_checkpointing=False, enable_model_summary=False,
                                    enable_progress_bar=progress)
    if not validate:
        settings.update(limit_val_batches=0, num_sanity_val_steps=0)
    settings.update(overrides)
    return L.Trainer(**settings)
