"""A short, real MAE pretraining run on Fashion-MNIST that ends with reconstruction figures.

    python -m maelib.course.demo --steps 120 --out runs/demo

It trains the teaching model (`mae_vit_mini_patch4_28`) with maelib's Lightning module for a short run of
steps (120 by default: under a minute on a 2-core CPU) and saves reconstructions of held-out images before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import lightning as L
import torch

from ..analysis.viz import save_figure, show_reconstruction
from ..data import MAEDataModule
from ..files import write_text_atomic
from ..train.modules import MAEPretrainModule
from ..train.trainer import quiet_trainer
from ..weights.checkpoint import save_model


def figure(model, imgs, dm, title: str, path: Path) -> Path:
    noise = torch.rand(len(imgs), model.config.num_patches, generator=torch.Generator().manual_seed(0))
    fig = show_reconstruction(model, imgs, noise=noise, mean=dm.mean, std=dm.std)
    fig.suptitle(title)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="optimisation steps (batch 256)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="where figures and the model go")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    L.seed_everything(args.seed, verbose=False)

    dm = MAEDataModule(dataset="fashion_mnist", batch_size=256, test_subset=1000)
    dm.setup()
    imgs = next(iter(dm.val_dataloader()))[0][:8]
    module = MAEPretrainModule(arch="mae_vit_mini_patch4_28", base_lr=2e-3, warmup_epochs=0.2)
    paths = [figure(module.model, imgs, dm, "before training", args.out / "reconstruction_before.png")]

    epochs = -(-args.steps // len(dm.train_dataloader()))  # enough epochs to reach the step count
    trainer = quiet_trainer(max_steps=args.steps, max_epochs=epochs, progress=True, default_root_dir=str(args.out))
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - start

    model = module.model.cpu()
    paths.append(figure(model, imgs, dm, f"after {args.steps} steps ({seconds:.0f} s)", args.out / "reconstruction_after.png"))
    paths.append(save_model(model, args.out / "model.safetensors"))
    with torch.no_grad():
        model.eval()
        val_loss = sum(model(x)[0].item() for x, _ in dm.val_dataloader()) / len(dm.val_dataloader())
    summary = {"steps": args.steps, "seconds": round(seconds, 1), "images_per_second": round(args.steps * 256 / seconds),
               "val_loss": round(val_loss, 4)}
    write_text_atomic(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"\nMAE demo: {json.dumps(summary)}")
    for p in paths:
        print(f"  wrote {p}")
    return summary


if __name__ == "__main__":
    main()
