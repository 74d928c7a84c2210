"""`maelib contrastive`: MoCo v3 pretraining of the same ViT as the MAE, with the same run directory, resume,
checkpoints and end-of-run summary as `maelib pretrain`.

    maelib contrastive --config contrastive_fmnist           # the preset (configs/contrastive_fmnist.yaml)
    maelib contrastive --config contrastive_fmnist --trainer.max_epochs 1 --data.train_subset 5000
    maelib knn --data.checkpoint runs/contrastive_fmnist/model.safetensors --references true

The run saves the trained encoder as model.safetensors (encoder only: `maelib.load_model` gives a
MaskedAutoencoder whose decoder is fresh), so k-NN, the linear probe, fine-tuning and segmentation take it exactly
as they take an MAE's. The data module must hand over un-augmented images (`--data.augment none`): the two views
are drawn inside the module (`maelib.train.contrastive.two_views`).
"""

from __future__ import annotations

from ..data import MAEDataModule
from ..evaluation.summary import pretraining_summary, summary_text
from ..weights.checkpoint import save_encoder
from .callbacks import KNNMonitor
from .contrastive import MoCoV3Module
from .run_cli import exclusive, final_metrics, fit, make_cli, write_metrics


def contrastive(args: list[str]) -> dict:
    cli = make_cli("contrastive", MoCoV3Module, MAEDataModule, args, 10, [KNNMonitor()])
    augment = cli.datamodule.hparams.augment
    if augment != "none":
        raise ValueError(f"maelib contrastive draws its two views itself; the data module must not augment too "
                         f"(got --data.augment {augment}): set --data.augment none (the contrastive_fmnist preset does)")
    with exclusive(cli):
        seconds = fit(cli)
        metrics = final_metrics(cli, seconds)
        if cli.trainer.is_global_zero:
            path = save_encoder(cli.model.model, cli.run_dir / "model.safetensors")
            print(f"encoder saved to {path}")
            summary = pretraining_summary(cli.model.model, cli.datamodule, seed=cli.datamodule.hparams.seed,
                                          masked_loss=False)
            print(summary_text(summary))
            metrics.update({f"summary/{k}": v for k, v in summary.items()})
            write_metrics(cli.run_dir, metrics)
    return metrics
