"""Measure a model trained by `scripts/zoo_train.sh NAME` and ship it: weights and card into maelib/weights/.

    python scripts/zoo_export.py NAME [--skip-probes]
    python scripts/zoo_export.py NAME --remeasure mean   # a shipped card's frozen-feature metrics of one pooling
    python scripts/zoo_export.py --table          # the README's table of the shipped cards

Weights are measured as shipped: a file over 9.5 MB is stored in float16 (and upcast on load). The card records the recipe, the training wall time (runs/zoo/NAME/wall_seconds.txt), this machine, today's date
and the measured metrics, each beside its baselines, computed by the same code (the maelib CLI for k-NN and the
linear probe; `maelib.evaluation.cards` for reconstructions and the quick check that tests/test_zoo.py repeats).
Run it on a quiet machine, after the training run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import maelib  # noqa: E402
from maelib.data import STATS  # noqa: E402
from maelib.evaluation.cards import (  # noqa: E402
    classifier_accuracy,
    fmnist_test_images,
    knn_check,
    photo_test_crops,
    reconstruction_check,
)
from maelib.weights.zoo import WEIGHTS_DIR, ModelCard  # noqa: E402

MAELIB = str(ROOT / ".venv" / "bin" / "maelib")
FMNIST = "Fashion-MNIST train (60,000 images, 28 px grey); metrics on its 10,000 test images"
PHOTOS = ("random resized crops (5-100% of the area of each photo stored at 256 px, flips, colour jitter 0.4/0.4/0.4 "
          "with any hue) of the photos in maelib.data.photos that ship inside scikit-image, scikit-learn and matplotlib, "
          "at 64 px; chelsea, flower and grace_hopper held out")
FEATURE_NOTES = ("k-NN: weighted (k=20, T=0.07, cosine), bank = the 60k training images; linear probes: BatchNorm + "
                 "linear, SGD, 30 epochs on the 60k training images (maelib linprobe --config "
                 "configs/linprobe_fmnist.yaml); the raw pixels' probe at base lr 0.01, chosen on a held-out 10k of "
                 "the training images, the features' at 1.0; reconstruction_* in normalised pixels on hidden patches "
                 "at mask 0.75, the model's drawn with each hidden patch's true mean and std (norm-pix: borrowed)")
LICENCE = "the maelib project's own training run; Fashion-MNIST is MIT-licensed, the photos are their packages'"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return (f"{os.cpu_count()}-core {platform.machine()} CPU ({cpu}), no GPU; Python {platform.python_version()}, "
            f"torch {torch.__version__}, lightning {__import__('lightning').__version__}")


def cli(run: str, *args: str) -> dict:
    """Run one maelib CLI evaluation into runs/zoo/eval/<run> and return its metrics.json."""
    out = ROOT / "runs" / "zoo" / "eval" / run
    flag = "--run_dir" if args[0] == "knn" else "--trainer.default_root_dir"
    extra = () if args[0] == "knn" else ("--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false")
    subprocess.run([MAELIB, *args, flag, str(out), *extra], check=True, cwd=ROOT)
    return json.loads((out / "metrics.json").read_text())


def frozen_feature_metrics(name: str, mae: Path, arch: str, probes: bool, baselines: bool,
                           pools: tuple[str, ...] = ("mean", "cls")) -> dict:
    """k-NN (and linear probes) of the MAE, and with `baselines` of the same architecture at random init and of
    the raw pixels (measured with the "mean" pools)."""
    sources = {"mae": ["--data.checkpoint", str(mae)], "random": ["--data.arch", arch],
               "pixels": ["--data.arch", arch, "--data.pixels", "true"]}
    if not baselines:
        sources = {"mae": sources["mae"]}
    metrics = {}
    for who, src in sources.items():
        for pool in (("mean",) if who == "pixels" else pools):
            if who == "pixels" and "mean" not in pools:
                continue
            tag = f"{who}_{pool}" if who != "pixels" else "pixels"
            metrics[f"knn_{tag}"] = cli(f"{name}/knn_{tag}", "knn", *src, "--data.pool", pool)["knn/acc"]
            if probes:
                # the pixels' probe lr, chosen on a held-out 10k of the training images (--data.holdout 10000):
                # val 84.7% at 0.01 against 84.6 / 84.5 / 83.9 / 82.8% at 0.003 / 0.03 / 0.1 / 0.3; the features'
                # lr of 1.0 (chosen the same way for MAE features) overshoots on pixels (81.3% on test)
                lr = ["--model.base_lr", "0.01"] if who == "pixels" else []
                m = cli(f"{name}/linprobe_{tag}", "linprobe", "--config", "configs/linprobe_fmnist.yaml", *src,
                        "--data.pool", pool, *lr)
                metrics[f"linprobe_{tag}"] = m["test/acc"]
    return metrics


ENCODERS = {  # encoders pretrained without an MAE decoder (kind "encoder"): how each was made, its saved file
    "vit_mini_patch4_28.fmnist_mocov3": ("model.safetensors", "MoCo v3 (maelib contrastive --config "
                                         "configs/contrastive_fmnist.yaml, 4 epochs) of the mini ViT on the same images "
                                         "as the MAE; encoder only: the decoder is fresh, its reconstructions mean nothing"),
    "vit_mini_patch4_28.fmnist_supervised": ("encoder.safetensors", "the mini ViT trained from random initialisation "
                                             "with the 60k labels (maelib finetune --config configs/supervised_fmnist.yaml, "
                                             "2,740 steps); its encoder (fc_norm as the final norm), encoder only"),
}


def export_encoder(name: str, probes: bool, common: dict, run: Path) -> ModelCard:
    """A card for an encoder of another pretraining method: its frozen features' k-NN (and probe) on the full
    test set, the k-NN check, and for the supervised one the accuracy its classifier reached."""
    dst = WEIGHTS_DIR / common["file"]
    metrics = frozen_feature_metrics(name, dst, "mae_vit_mini_patch4_28", probes, baselines=False, pools=("mean",))
    metrics.update({k: v for k, v in json.loads((run / "metrics.json").read_text()).items()
                    if k in ("test/acc", "steps", "epochs", "fit_seconds", "summary/knn", "summary/knn_random_init")})
    check = {"what": "knn", "pool": "mean", "bank": 10000, "test": 2000, "value": knn_check(str(dst))}
    return ModelCard(kind="encoder", arch="mae_vit_mini_patch4_28", data=FMNIST, mean=STATS["fashion_mnist"][0],
                     std=STATS["fashion_mnist"][1], metrics=metrics, check=check,
                     notes=ENCODERS[name][1] + ". " + FEATURE_NOTES.split("; reconstruction_")[0], **common)


def export(name: str, probes: bool) -> ModelCard:
    run = ROOT / "runs" / "zoo" / name
    wall = float((run / "wall_seconds.txt").read_text())
    src = run / (ENCODERS[name][0] if name in ENCODERS else
                 "classifier.safetensors" if name.startswith("vit_") else "model.safetensors")
    dst = WEIGHTS_DIR / f"{name}.safetensors"
    WEIGHTS_DIR.mkdir(exist_ok=True)
    if src.stat().st_size > 9.5 * 2**20:  # shipped files stay under ~10 MB: half precision, upcast again on load
        tensors, metadata = maelib.read_state_dict(src)
        save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(dst),
                  metadata={**metadata, "stored_dtype": "float16"})
    else:
        shutil.copyfile(src, dst)
    common = dict(name=name, source="shipped", licence=LICENCE, recipe=f"bash scripts/zoo_train.sh {name} && "
                  f"python scripts/zoo_export.py {name}", wall_seconds=wall, machine=machine(),
                  date=datetime.date.today().isoformat(), file=dst.name)
    if name in ENCODERS:
        card = export_encoder(name, probes, common, run)
    elif name.startswith("vit_"):  # a classifier
        net = maelib.load_classifier(dst)
        metrics = {"test_acc": classifier_accuracy(net, test=None),
                   "finetune_metrics_json": json.loads((run / "metrics.json").read_text())}
        card = ModelCard(kind="classifier", arch="mae_vit_mini_patch4_28", data=FMNIST, mean=STATS["fashion_mnist"][0],
                         std=STATS["fashion_mnist"][1], metrics=metrics,
                         check={"what": "classifier", "test": 2000, "value": classifier_accuracy(net, test=2000)},
                         notes="fine-tuned end to end from mae_vit_mini_patch4_28.fmnist_normpix (global average "
                               "pooling, layer decay 0.75, drop path 0.1, label smoothing 0.1, flips)", **common)
    else:
        model = maelib.load_model(dst)
        c = model.config
        arch = next(a for a in maelib.list_models() if name.startswith(a + "."))
        overrides = {k: v for k, v in c.to_dict().items() if maelib.model_config(arch).to_dict()[k] != v}
        photos = ".photos" in name
        imgs = photo_test_crops(960, img_size=c.img_size) if photos else fmnist_test_images(None)
        metrics = {f"reconstruction_mse_{k}": v for k, v in reconstruction_check(model, imgs).items()}
        metrics["reconstruction_images"] = len(imgs)
        if not photos:
            normpix = c.norm_pix_loss
            metrics.update(frozen_feature_metrics(name, dst, arch, probes and normpix, baselines=normpix))
        if c.norm_pix_loss:  # the representation model is checked by k-NN, the picture models by reconstruction
            check = {"what": "knn", "pool": "mean", "bank": 10000, "test": 2000, "value": knn_check(str(dst))}
        else:
            check_imgs = photo_test_crops(96, img_size=c.img_size) if photos else fmnist_test_images(500)
            check = {"what": "reconstruction", "data": "photos" if photos else "fashion_mnist", "mask_ratio": 0.75,
                     "images": len(check_imgs), "value": reconstruction_check(model, check_imgs)["model"]}
        notes = FEATURE_NOTES if c.norm_pix_loss else "reconstruction_* in normalised pixels on hidden patches at mask 0.75"
        mean, std = STATS["photos" if photos else "fashion_mnist"]
        card = ModelCard(kind="mae", arch=arch, arch_overrides=overrides, data=PHOTOS if photos else FMNIST,
                         target="norm_pix" if c.norm_pix_loss else "pixel", mean=mean, std=std, metrics=metrics,
                         check=check, notes=notes, **common)
    (WEIGHTS_DIR / f"{name}.json").write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    print(json.dumps(card.to_dict(), indent=2))
    return card


def remeasure(name: str, pool: str) -> ModelCard:
    """Measure a shipped card's frozen-feature metrics of one pooling again on the shipped weights (after a change
    to what that pooling computes), and its quick check if it uses that pooling; the rest of the card stays."""
    card = maelib.pretrained_card(name)
    dst = WEIGHTS_DIR / card.file
    normpix = card.target == "norm_pix"
    metrics = frozen_feature_metrics(name, dst, card.arch, probes=normpix, baselines=normpix, pools=(pool,))
    metrics.pop("knn_pixels", None), metrics.pop("linprobe_pixels", None)  # no pooling: unchanged
    d = card.to_dict()
    d["metrics"] = {**d["metrics"], **metrics}
    if d["check"].get("what") == "knn" and d["check"].get("pool") == pool:
        d["check"]["value"] = knn_check(str(dst), pool=pool, bank=d["check"]["bank"], test=d["check"]["test"])
    d["notes"] = d["notes"].rstrip(". ") + "." + (f" The {pool}-pooled metrics{' and the check' if d['check'].get('pool') == pool else ''} were "
                   f"measured again on {datetime.date.today().isoformat()} ({machine()}) by `python "
                   f"scripts/zoo_export.py {name} --remeasure {pool}`, after '{pool}' became the final LayerNorm of "
                   "the average of the patch tokens (the paper's global pooling) instead of the average of the "
                   "normed tokens.")
    card = ModelCard.from_dict(d)
    (WEIGHTS_DIR / f"{name}.json").write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return card


def table() -> str:
    """A markdown row per shipped model: what it is for and its headline numbers beside their baselines."""
    rows = ["| model | for | training (2-core CPU) | measured (test images the model never saw) |", "|---|---|---|---|"]
    for name in maelib.list_pretrained("shipped"):
        card, m = maelib.pretrained_card(name), maelib.pretrained_card(name).metrics
        if card.kind == "classifier":
            use, numbers = "a Fashion-MNIST classifier", f"test accuracy {m['test_acc']:.1%} (10k images)"
        elif card.kind == "encoder":
            use = "comparing pretraining methods"
            numbers = f"k-NN (mean pool) {m['knn_mae_mean']:.1%}" + (
                f"; linear probe {m['linprobe_mae_mean']:.1%}" if "linprobe_mae_mean" in m else "")
        elif card.target == "norm_pix":
            use = "probing, k-NN, fine-tuning"
            numbers = (f"k-NN (mean pool) {m['knn_mae_mean']:.1%} vs raw pixels {m['knn_pixels']:.1%} vs random init "
                       f"{m['knn_random_mean']:.1%}")
            if "linprobe_mae_mean" in m:
                numbers += (f"; linear probe {m['linprobe_mae_mean']:.1%} vs pixels {m['linprobe_pixels']:.1%} vs random "
                            f"{m['linprobe_random_mean']:.1%}")
        else:
            use = "pictures (pixel target: nothing borrowed)"
            interpolate = m.get("reconstruction_mse_interpolate")
            numbers = (f"hidden-patch MSE {m['reconstruction_mse_model']:.3f} vs mean colour "
                       f"{m['reconstruction_mse_mean_colour']:.3f}, "
                       + (f"interpolation {interpolate:.3f}, " if interpolate is not None else "")
                       + "each patch's true mean "
                       f"{m['reconstruction_mse_flat_true_mean']:.3f}, predict zero {m['reconstruction_mse_predict_zero']:.3f}")
        rows.append(f"| `{name}` | {use} | {card.wall_seconds:.0f} s, {card.date} | {numbers} |")
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?")
    parser.add_argument("--skip-probes", action="store_true", help="k-NN only (the probes take ~10 minutes)")
    parser.add_argument("--table", action="store_true", help="print the README table of the shipped cards")
    parser.add_argument("--remeasure", choices=("mean", "cls"), help="re-measure a shipped card's metrics of one pooling")
    args = parser.parse_args()
    if args.table:
        print(table())
    elif args.name and args.remeasure:
        remeasure(args.name, args.remeasure)
    elif args.name:
        export(args.name, probes=not args.skip_probes)
    else:
        parser.error("give a NAME or --table")
