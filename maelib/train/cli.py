"""`maelib pretrain | contrastive | linprobe | knn | finetune | ablate | presets | notebooks`: Lightning's CLI
underneath.

Every setting comes from the classes' signatures and can be given as a flag or in a YAML file:

    maelib pretrain --config configs/pretrain_fmnist.yaml --trainer.max_epochs 3
    maelib pretrain --config fmnist    # the same preset by name (maelib presets lists them), after pip install too
    maelib linprobe --data.checkpoint runs/pretrain/model.safetensors
    maelib knn --data.checkpoint runs/pretrain/model.safetensors --k 20
    maelib finetune --model.checkpoint runs/pretrain/model.safetensors --trainer.max_epochs 5
    maelib pretrain --help
    maelib ablate --preset quick       # the paper's ablations as a seeded sweep (maelib.experiments.sweep)
    maelib contrastive --config contrastive_fmnist    # MoCo v3 on the same ViT, for comparison
    maelib finetune --config supervised_fmnist        # supervised pretraining: the same ViT trained with labels

Each run writes into its run directory (`--trainer.default_root_dir`, default runs/<command>): logs (CSV and
TensorBoard, one version per run or resume), Lightning checkpoints (checkpoints/last.ckpt; continue with `--resume last`), the trained model
as model.safetensors, and metrics.json with the final numbers. Several GPUs or nodes: `--trainer.devices 8
--trainer.strategy ddp` and `--trainer.num_nodes N`; under SLURM or torchrun Lightning picks up the
cluster environment by itself.

Reliability: checkpoints/last.ckpt is rewritten every `--checkpoint_every_n_steps` optimiser steps (default
100; 0 = epoch ends only) and at every epoch end, atomically (`AtomicCheckpointIO`: a temporary file, then a
rename), so a run killed at any moment, even mid-save, leaves a whole checkpoint. `--resume last` continues
from it, mid-epoch included, and reaches the weights of an uninterrupted run: pretrain and finetune draw the
data order, augmentation and masks from keyed generators (`maelib.rng`), not from the global RNG. With several
processes (`--trainer.use_distributed_sampler false`, the default for pretrain/finetune) the datamodule's
sampler shares each global batch of batch_size x devices images out, so 2 processes with batch B train like
one with batch 2B. If a process dies, Lightning's launcher stops the others.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch
from jsonargparse import ActionConfigFile, ArgumentParser

from ..course.presets import notebooks_command, presets_command, resolve_config_args
from ..data import MAEDataModule
from ..data.checks import check_labelled
from ..evaluation.features import FeatureDataModule
from ..evaluation.knn import knn_accuracy
from ..evaluation.probe import PROBE_EPOCHS
from ..evaluation.summary import pretraining_summary, reference_knn, reference_probes, summary_text
from ..weights.checkpoint import save_classifier, save_encoder, save_model
from ..weights.convert import mae_from_timm_vit
from .callbacks import KNNMonitor, ReconstructionLogger
from .modules import FineTuneModule, LinearProbeModule, MAEPretrainModule
from .run_cli import MAECLI, exclusive, final_metrics, fit, make_cli, write_metrics


def pretrain(args: list[str]) -> dict:
    cli = make_cli("pretrain", MAEPretrainModule, MAEDataModule, args, 10, [KNNMonitor(), ReconstructionLogger()])
    with exclusive(cli):
        seconds = fit(cli)
        if cli.trainer.is_global_zero:
            path = save_model(cli.model.model, cli.run_dir / "model.safetensors")
            print(f"model saved to {path}")
        metrics = final_metrics(cli, seconds)
        if cli.trainer.is_global_zero:
            summary = pretraining_summary(cli.model.model, cli.datamodule, seed=cli.datamodule.hparams.seed)
            print(summary_text(summary))
            metrics.update({f"summary/{k}": v for k, v in summary.items()})
            write_metrics(cli.run_dir, metrics)
    return metrics


def _fit_and_test(command: str, module, data, args: list[str], epochs: int, finish) -> dict:
    """Fit, then score the test split, then finish(cli, metrics) (saving), all under the run directory's lock:
    the final metrics (the fit's val/* beside test/*)."""
    if any(a.split("=")[0] == "--model.num_classes" for a in args):
        raise ValueError(f"maelib {command} sizes the head to the data: one output per class that the data module "
                         "finds (an image folder's class sub-folders), so --model.num_classes is not a flag here. "
                         "Leave it out; for other classes, give --data.root a folder with just those sub-folders")
    cli = make_cli(command, module, data, args, epochs)
    with exclusive(cli):
        seconds = fit(cli)
        fitted = final_metrics(cli, seconds)  # with val/acc: testing replaces the trainer's metrics
        cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        metrics = {**fitted, **final_metrics(cli, seconds)}
        finish(cli, metrics)
    return metrics


def linprobe(args: list[str]) -> dict:
    def finish(cli, metrics):
        metrics["feature_seconds"] = round(cli.datamodule.feature_seconds, 1)
        if cli.config.get("references"):
            metrics.update(reference_probes(cli.datamodule, epochs=PROBE_EPOCHS, seed=cli.datamodule.seed))
            print(f"quick linear probe ({PROBE_EPOCHS} epochs, the same recipe for all three): encoder "
                  f"{metrics['probe/quick_acc']:.1%} | same architecture at random init "
                  f"{metrics['probe/random_init_acc']:.1%} | raw pixels {metrics['probe/pixels_acc']:.1%}")
        if cli.trainer.is_global_zero:
            write_metrics(cli.run_dir, metrics)

    return _fit_and_test("linprobe", LinearProbeModule, FeatureDataModule, args, 90, finish)


def finetune(args: list[str]) -> dict:
    return _fit_and_test("finetune", FineTuneModule, MAEDataModule, args, 10, _save_classifier)


def _save_classifier(cli: MAECLI, metrics: dict) -> None:
    if cli.trainer.is_global_zero:
        h = cli.model.hparams
        path = save_classifier(cli.model.net, cli.model.mae_config, cli.run_dir / "classifier.safetensors",
                               num_classes=h.num_classes, global_pool=h.global_pool)
        print(f"classifier saved to {path} (maelib.load_classifier gives it back as a timm VisionTransformer)")
        encoder = save_encoder(mae_from_timm_vit(cli.model.net, cli.model.mae_config), cli.run_dir / "encoder.safetensors")
        print(f"its encoder saved to {encoder} (for maelib knn / linprobe --data.checkpoint, as an MAE's)")
        write_metrics(cli.run_dir, metrics)


def knn(args: list[str]) -> dict:
    parser = ArgumentParser(prog="maelib knn", description="Weighted k-NN accuracy of frozen encoder features.")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(FeatureDataModule, "data")
    parser.add_argument("--k", type=int, default=20, help="neighbours that vote")
    parser.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(similarity / T)")
    parser.add_argument("--run_dir", type=str, default="runs/knn", help="where metrics.json goes")
    parser.add_argument("--references", type=bool, default=False,
                        help="also score the same architecture at random initialisation and the raw pixels, on the "
                             "same images: what the encoder must beat")
    cfg = parser.parse_args(args)
    data = parser.instantiate_classes(cfg).data
    if data.on_the_fly:
        raise ValueError("maelib knn scores cached features of unaugmented images: leave out --data.augment (or set "
                         "it to none); augmented features are for training a linear probe (maelib linprobe)")
    check_labelled(data.images, "maelib knn")  # before any feature is extracted
    if data.feature_device is None and torch.cuda.is_available():  # no Trainer here: the CLI picks the GPU
        data.feature_device = "cuda"
    data.setup("fit")
    train, test = data.features["train"], data.features["test"]
    acc = knn_accuracy(*train, *test, k=cfg.k, temperature=cfg.temperature)
    metrics = {"knn/acc": acc, "k": cfg.k, "temperature": cfg.temperature, "feature_seconds": round(data.feature_seconds, 1)}
    if "val" in data.features:  # --data.holdout N: also scored on the held-out training images
        metrics["knn/val_acc"] = knn_accuracy(*train, *data.features["val"], k=cfg.k, temperature=cfg.temperature)
    if cfg.references:
        metrics.update(reference_knn(data, k=cfg.k, temperature=cfg.temperature))
        print(f"k-NN: encoder {acc:.1%} | same architecture at random init {metrics['knn/random_init_acc']:.1%} | "
              f"raw pixels {metrics['knn/pixels_acc']:.1%}")
    write_metrics(Path(cfg.run_dir), metrics)
    return metrics


def contrastive(args: list[str]) -> dict:
    """`maelib contrastive`: MoCo v3 pretraining of the same ViT (maelib.train.contrastive_cli)."""
    from .contrastive_cli import contrastive as command

    return command(args)


def ablate(args: list[str]) -> dict:
    """`maelib ablate`: a preset's ablation sweep (maelib.experiments.ablation_design), on this machine or on SLURM."""
    from ..experiments.ablate import ablate_command

    return ablate_command(args)


COMMANDS = {"pretrain": pretrain, "contrastive": contrastive, "linprobe": linprobe, "knn": knn, "finetune": finetune,
            "ablate": ablate,
            "presets": presets_command, "notebooks": notebooks_command}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Noise that is Lightning's and jsonargparse's business, not the user's: the sub-command's arguments are
    # handed to LightningCLI on purpose, and their internal deprecations are not ours to act on.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: maelib {{{','.join(COMMANDS)}}} [--help] [options]\n\n{__doc__}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    COMMANDS[argv[0]](resolve_config_args(argv[0], argv[1:]))  # --config fmnist: a preset by name
    return 0


def console() -> int:
    """The `maelib` command: `main`, with a mistake shown as maelib's one-paragraph message instead of a traceback
    (set MAELIB_TRACEBACK=1 to see the traceback too)."""
    try:
        return main()
    except (ValueError, TypeError, OSError, RuntimeError, ArithmeticError) as e:  # e.g. a NaN loss
        if os.environ.get("MAELIB_TRACEBACK"):
            raise
        print(f"maelib: error: {e}\n(MAELIB_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(console())
