"""The run machinery under every training command of `maelib` (maelib.train.cli): LightningCLI with maelib's run
directory (loggers, checkpoints/last.ckpt rewritten atomically, `--resume`), fitting with clear errors for
checkpoints of another model or a lost peer process, the final metrics, and the run directory's lock.

    cli = make_cli("pretrain", MAEPretrainModule, MAEDataModule, args, max_epochs=10)
    seconds = fit(cli)                       # under exclusive(cli)
    write_metrics(cli.run_dir, final_metrics(cli, seconds))
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import pickle
import time
import traceback
import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

from ..data import MAEDataModule
from ..files import run_dir_lock, write_text_atomic
from ..model import MAEConfig
from ..registry import model_config
from ..weights.checkpoint import checkpoint_config, file_format, read_state_dict, stored_config
from ..weights.zoo import weights_file
from .callbacks import AtomicCheckpointIO, LastCheckpoint
from .trainer import precision


def write_metrics(run_dir: Path, metrics: dict) -> Path:
    """Write the run's final numbers to <run_dir>/metrics.json (atomically) and print where they are."""
    clean = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
    path = write_text_atomic(run_dir / "metrics.json", json.dumps(clean, indent=2) + "\n")
    print(f"metrics: {json.dumps(clean)}\nwritten to {path}")
    return path


def input_config(arch: str | None, arch_overrides: dict | None, checkpoint: str | None = None) -> MAEConfig:
    """The model config a run will use (from its checkpoint if it has one), to size the data to it."""
    if checkpoint is not None:
        path = weights_file(checkpoint)  # a zoo name's file, or the path itself
        if file_format(path) == "safetensors":
            config = checkpoint_config(path)  # the header alone
        else:
            config = read_state_dict(path)[1].get("config")
            config = config if config is None else stored_config(path, config)
        if config is not None:
            return MAEConfig.from_dict({**config.to_dict(), **(arch_overrides or {})})
    if arch is None:
        raise ValueError("give --model.checkpoint (a maelib file) or --model.arch")
    return model_config(arch, **(arch_overrides or {}))


def sized_for(arch: str | None, arch_overrides: dict | None, checkpoint: str | None = None) -> MAEConfig:
    """`input_config` for sizing the data; if the model settings are wrong, a stand-in, so that the module raises
    its own message when it is built (jsonargparse would bury an error here under its usage text)."""
    try:
        return input_config(arch, arch_overrides, checkpoint)
    except (OSError, TypeError, ValueError):
        return MAEConfig()


class MAECLI(LightningCLI):
    """LightningCLI with maelib's run-directory layout: loggers, checkpoints, `--resume`."""

    def __init__(self, command: str, *args, **kwargs) -> None:
        self.command = command
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--resume", type=str | None, default=None, help="'last' or a .ckpt path to continue from")
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=100,
                            help="rewrite checkpoints/last.ckpt every N optimiser steps (0: only at epoch ends); it "
                                 "is also rewritten at every epoch end")
        if self.command in ("pretrain", "finetune", "contrastive"):  # the data is sized to the model (a checkpoint's, if given)
            sources = ("model.arch", "model.arch_overrides", "model.checkpoint")
            parser.link_arguments(sources, "data.img_size", lambda *a: sized_for(*a).img_size)
            parser.link_arguments(sources, "data.in_chans", lambda *a: sized_for(*a).in_chans)
        if self.command == "finetune":
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        if self.command == "linprobe":
            parser.add_argument("--references", type=bool, default=False,
                                help="also train the package's quick probe on this encoder, on the same architecture "
                                     "at random initialisation and on the raw pixels, same images: what it must beat")
            parser.link_arguments("data.feature_dim", "model.feature_dim", apply_on="instantiate")
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs):
        config = self.config_init.get("trainer") or {}  # run=False: no subcommand level in the namespace
        run_dir = Path(config.get("default_root_dir") or f"runs/{self.command}")
        kwargs["default_root_dir"] = str(run_dir)
        if config.get("logger") in (None, True):
            # logs/version_N/metrics.csv and tensorboard/version_N: a resumed run adds a version, overwrites nothing
            kwargs["logger"] = [CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")]
        callbacks = list(config.get("callbacks") or [])
        wants_checkpoints = config.get("enable_checkpointing") is not False
        if wants_checkpoints and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            every = self.config.get("checkpoint_every_n_steps", 100)
            callbacks.append(LastCheckpoint(run_dir / "checkpoints", every_n_train_steps=every))
            kwargs["enable_checkpointing"] = False  # no default ModelCheckpoint beside it: last.ckpt is the one
        kwargs["callbacks"] = callbacks
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        kwargs["plugins"] = plugins
        strategy = config.get("strategy")
        if isinstance(strategy, str) and strategy in StrategyRegistry and issubclass(
                StrategyRegistry[strategy]["strategy"], DDPStrategy):
            # The same DDP strategy, told not to broadcast buffers at every forward: maelib's only buffers are the
            # fixed sin-cos position tables, identical on every process by construction.
            entry = StrategyRegistry[strategy]
            kwargs["strategy"] = entry["strategy"](**{**entry["init_params"], "broadcast_buffers": False})
        if getattr(self.datamodule, "on_the_fly", False):  # linprobe --data.augment mae: images, not features
            kwargs["use_distributed_sampler"] = False  # its ResumableBatchSampler shares the batches out itself
        return super().instantiate_trainer(**kwargs)

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def resume_path(self) -> str | None:
        resume = self.config.get("resume")
        if resume == "last":
            last = self.run_dir / "checkpoints" / "last.ckpt"
            if not last.exists():
                print(f"--resume last: no checkpoint at {last} yet, starting from scratch")
                return None
            resume = str(last)
        local = resume is not None and "://" not in resume and not Path(resume).is_dir()  # not s3://, not sharded
        if local and not zipfile.is_zipfile(resume):
            what = "no such file" if not Path(resume).is_file() else "it is not a whole checkpoint (truncated or damaged)"
            raise ValueError(f"--resume {resume}: {what}. Give a checkpoint that Lightning wrote (checkpoints/"
                             "last.ckpt of the run), or start again without --resume")
        return resume


def _trainer_defaults(max_epochs: int, own_sampler: bool) -> dict:
    return {
        "max_epochs": max_epochs,
        "precision": precision(),  # the one rule (maelib.train.trainer): bf16 from Ampere on, fp16 before, fp32 on CPU
        "log_every_n_steps": 10,
        # MAEDataModule's ResumableBatchSampler shares batches out over processes itself; Lightning would try to
        # put a DistributedSampler inside it (and fail). Other loaders keep Lightning's DistributedSampler.
        "use_distributed_sampler": not own_sampler,
    }


def make_cli(command: str, model_class, data_class, args: list[str], max_epochs: int, callbacks=()) -> MAECLI:
    return MAECLI(
        command,
        model_class,
        data_class,
        args=args,
        run=False,
        trainer_defaults={**_trainer_defaults(max_epochs, data_class is MAEDataModule), "callbacks": list(callbacks)},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": f"maelib {command}"},
        seed_everything_default=0,
        auto_configure_optimizers=False,
    )


def raised_by_a_collective(error: BaseException) -> bool:
    """Whether `error` came out of a torch.distributed collective, which in a multi-process run means that a peer
    is gone or timed out. NCCL raises the public `torch.distributed.DistError`; gloo (the CPU backend) raises a
    plain RuntimeError, so for it the traceback tells: it passes through torch.distributed's own code. Pinned by
    tests/test_reliability.py::test_a_dying_process_takes_the_ddp_run_down (gloo, two CPU processes)."""
    if isinstance(error, torch.distributed.DistError):
        return True
    package = os.path.dirname(torch.distributed.__file__)
    return any(frame.filename.startswith(package) for frame in traceback.extract_tb(error.__traceback__))


def check_resumes_this_model(ckpt_path: str, module) -> None:
    """Refuse, before any training, a checkpoint whose weights are not the ones this run's module builds (other
    names or shapes), naming both and the fix. Read with weights_only and memory-mapped: nothing is unpickled
    and a large checkpoint is not copied into memory."""
    if "://" in ckpt_path or Path(ckpt_path).is_dir():
        return  # a remote or sharded checkpoint: Lightning checks it as it loads
    stored = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get("state_dict", {})
    wanted = module.state_dict()
    missing = sorted(set(wanted) - set(stored))
    unexpected = sorted(set(stored) - set(wanted))
    resized = sorted(k for k in set(wanted) & set(stored) if tuple(wanted[k].shape) != tuple(stored[k].shape))
    if missing or unexpected or resized:
        found = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for what, keys in
                          (("missing", missing), ("unexpected", unexpected), ("other shapes", resized)) if keys)
        raise ValueError(
            f"--resume {ckpt_path}: that checkpoint is of another model than this run builds ({found}). Resume with "
            "the --model settings (or --config) it was trained with, or start a new run in another "
            "--trainer.default_root_dir")


def fit(cli: MAECLI) -> float:
    start = time.perf_counter()
    trainer = cli.trainer
    ckpt_path = cli.resume_path()
    # A checkpoint is data: resuming never runs code from it (torch.load(weights_only=True); maelib's hold none).
    safe = {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters else {}
    try:
        if ckpt_path is not None:
            check_resumes_this_model(ckpt_path, cli.model)
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, **safe)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refused to resume from {ckpt_path}: it holds Python objects beyond tensors and plain containers, and "
            "unpickling them could run arbitrary code. Checkpoints written by maelib never do; resume from one of "
            f"those (--resume last), or load just the weights of a trusted file. Details: {e}") from e
    except RuntimeError as e:
        if trainer.world_size > 1 and raised_by_a_collective(e):
            raise RuntimeError(
                f"process {trainer.global_rank} of {trainer.world_size} lost contact with another process of this run, "
                "which stopped (an error, out of memory, or killed: its own message, if it could write one, is "
                "above), so the whole run stops. Fix the cause and continue with --resume last. "
                f"The communication error was: {e}") from e
        raise
    return time.perf_counter() - start


def final_metrics(cli: MAECLI, seconds: float) -> dict:
    m = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}
    return {**m, "epochs": cli.trainer.current_epoch, "steps": cli.trainer.global_step, "fit_seconds": round(seconds, 1)}


def exclusive(cli: MAECLI):
    """The run directory's lock (`run_dir_lock`), taken by the launching process only: the processes it starts
    (DDP ranks, SLURM tasks) write into the same directory as part of the same run."""
    launching = all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
    return run_dir_lock(cli.run_dir) if launching else contextlib.nullcontext()
