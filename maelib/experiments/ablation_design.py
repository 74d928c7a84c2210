"""The ablation study's design: the baseline, the factors of the paper's Table 1, the presets, the paper's numbers
and its claims (judged by `maelib.experiments.verdicts`).

    from maelib.experiments.ablation_design import PRESETS, settings_for
    settings = settings_for("study")                       # -> [maelib.experiments.sweep.Setting], 3 seeds each
    result = maelib.experiments.sweep.run_sweep(settings, out_dir)
    summary = maelib.experiments.verdicts.summarise(result.rows, baseline=PRESETS["study"]["baseline"])

Presets (Fashion-MNIST; `maelib.experiments.ablation.run_ablation` runs one setting):

    quick  the exercise inside notebook 8: the three factors of the paper's main lessons (mask ratio 25 / 75%,
           target, mask tokens in the encoder), 3 seeds, 400 steps of 64 images, on the mini ViT at half width
           (64, decoder 48: 2.5x faster per step): a few minutes on 2 cores. The runs barely learn: it shows
           what seed noise looks like, not the paper's findings
    study  the CPU study behind notebook 8 (benchmarks/results/ablation_study_cpu.json): every factor, 3 seeds,
           the half-width mini ViT for 4 epochs, each run scored by k-NN, the linear probe and a short
           fine-tuning, beside random-initialisation references of every encoder width: ~2.5 hours on 2 cores
    full   what a researcher runs on GPUs or a cluster: every factor, 3 seeds, the mini ViT
           (`mae_vit_mini_patch4_28`), 12,000 steps of 128 images (26 epochs, as long as the zoo's norm-pix model)
           and a larger evaluation (10,000 / 2,000 images)
"""

from __future__ import annotations

from .sweep import Setting, one_at_a_time

BASELINE = dict(mask_ratio=0.75, decoder_depth=1, decoder_embed_dim=96, target="norm_pix", masking="random",
                encoder_mask_tokens=False, augmentation="crop")

FACTORS = {  # run_ablation argument -> the values the full preset tries (Table 1 and Figure 5)
    "mask_ratio": [0.25, 0.5, 0.75, 0.9],
    "decoder_depth": [1, 2, 4],
    "decoder_embed_dim": [48, 96, 192],
    "target": ["pixel", "norm_pix", "pca", "tokens"],
    "masking": ["random", "block", "grid"],
    "encoder_mask_tokens": [False, True],
    "augmentation": ["none", "crop", "crop+jitter"],
    "embed_dim": [64, 128, 256],
    "steps": [12000, 24000],
}

# The CPU study (issue 29; benchmarks/results/ablation_study_cpu.json): the mini ViT at half width (64 wide, 4 blocks,
# a 48-wide 1-block decoder), 4 epochs of the 60,000 training images, every factor, scored by k-NN, the probe and a
# short fine-tuning. The budget was chosen on 10,000 held-out training images (scripts/ablation_budget.py): after
# 4 epochs the baseline's held-out masked loss was 76% of predict-zero and its k-NN (mean pooling) 17 points above
# the same encoder at random initialisation; after 2 epochs the loss was still 81%.
STUDY_EPOCH = 60000 // 128  # optimiser steps in one epoch
STUDY_BASELINE = {**BASELINE, "decoder_embed_dim": 48, "embed_dim": 64,
                  "arch_overrides": {"num_heads": 2, "decoder_num_heads": 2}, "steps": 4 * STUDY_EPOCH,
                  "batch_size": 128, "base_lr": 4e-3, "train_images": None, "eval_train_images": 5000,
                  "eval_test_images": 2000, "finetune_epochs": 5, "finetune_images": 5000}
# The pretraining-length curve (the paper's Figure 7): the baseline runs are also scored after 1/2, 1 and 2 epochs
# (their checkpoints on the way, in a 4-epoch schedule), and the "steps" factor trains twice as long.
STUDY_ALONG = {"score_at_steps": [STUDY_EPOCH // 2, STUDY_EPOCH, 2 * STUDY_EPOCH]}
STUDY_FACTORS = {"mask_ratio": [0.25, 0.5, 0.6, 0.75, 0.9], "decoder_depth": [1, 2, 4],
                 "decoder_embed_dim": [24, 48, 96], "target": ["pixel", "norm_pix", "pca", "tokens"],
                 "encoder_mask_tokens": [False, True], "masking": ["random", "block", "grid"],
                 "augmentation": ["none", "crop", "crop+jitter"], "embed_dim": [32, 64, 128],
                 "steps": [4 * STUDY_EPOCH, 8 * STUDY_EPOCH]}

QUICK_MODEL = dict(decoder_embed_dim=48, arch_overrides={"embed_dim": 64, "num_heads": 2, "decoder_num_heads": 2})

PRESETS = {  # baseline: the settings every run shares unless its factor changes them; factors: what varies
    "quick": dict(baseline={**BASELINE, **QUICK_MODEL, "steps": 400, "batch_size": 64, "base_lr": 4e-3,
                            "train_images": 20000, "eval_train_images": 2000, "eval_test_images": 1000},
                  factors={"mask_ratio": [0.25, 0.75], "target": ["pixel", "norm_pix"],
                           "encoder_mask_tokens": [False, True]}, seeds=3),
    "full": dict(baseline={**BASELINE, "embed_dim": 128, "steps": 12000, "batch_size": 128, "base_lr": 4e-3, "train_images": 60000,
                           "eval_train_images": 10000, "eval_test_images": 2000},
                 factors=FACTORS, seeds=3),
    "study": dict(baseline=STUDY_BASELINE, factors=STUDY_FACTORS, seeds=3, baseline_extra=STUDY_ALONG,
                  references=[{"embed_dim": d} for d in STUDY_FACTORS["embed_dim"]]),
}

# The paper's ViT-L, 800 epochs on ImageNet: (linear probe, fine-tuning) top-1 %. Table 1's default row is
# 73.5 / 84.9 (decoder depth 8, width 512, raw pixels, random 75%, no [M], crop). Figure 5's mask-ratio curve is
# read off the plot (about ±1 point) except at 75%.
PAPER = {
    "mask_ratio": {0.1: (55.0, 83.0), 0.2: (59.5, 83.5), 0.25: (61.5, 83.7), 0.3: (63.0, 84.0), 0.4: (66.0, 84.6),
                   0.5: (69.0, 84.8), 0.6: (71.5, 84.9), 0.7: (73.0, 84.9), 0.75: (73.5, 84.9), 0.8: (72.5, 84.8),
                   0.9: (67.0, 84.0)},
    "decoder_depth": {1: (65.5, 84.8), 2: (70.0, 84.9), 4: (71.9, 84.9), 8: (73.5, 84.9), 12: (73.3, 84.4)},
    "decoder_embed_dim": {128: (69.1, 84.9), 256: (71.3, 84.8), 512: (73.5, 84.9), 768: (73.1, 84.4),
                          1024: (73.1, 84.3)},
    "target": {"pixel": (73.5, 84.9), "norm_pix": (73.9, 85.4), "pca": (72.3, 84.6), "tokens": (71.6, 85.3)},
    "masking": {"random": (73.5, 84.9), "block": (63.9, 82.8), "grid": (66.0, 84.0)},
    "encoder_mask_tokens": {False: (73.5, 84.9), True: (59.6, 84.2)},  # with [M]: 3.3x the pretraining FLOPs
    "augmentation": {"none": (65.7, 84.0), "crop": (73.5, 84.9), "crop+jitter": (71.9, 84.3)},
    # Table 3 / Figure 7 of the paper, for scale: ViT-B / L / H fine-tuned 83.6 / 85.9 / 86.9 (ImageNet, 1600
    # epochs); ViT-L's linear probe 800 -> 1600 epochs 75.1 -> 76.0 (Figure 7, read off the plot)
    "embed_dim": {768: (68.0, 83.6), 1024: (75.8, 85.9), 1280: (76.6, 86.9)},
    "steps": {800: (75.1, 85.6), 1600: (76.0, 85.9)},
}

LARGEST, BASE = "largest", "baseline"  # in CLAIMS: the factor's largest value tried; the baseline's own value
# The paper's direction for each factor, as (factor, better value, worse value): the first should score higher
# on the probe. Our decoder widths are the mini model's 48 / 96 / 192 against the paper's 128 / 256 / 512.
CLAIMS = [
    ("mask_ratio", 0.75, 0.25, "a high mask ratio (75%) beats a low one (25%)"),
    ("decoder_depth", 4, 1, "a deeper decoder (4 blocks) beats a 1-block one"),
    ("decoder_embed_dim", 96, 48, "a wider decoder (96) beats the narrowest (48)"),
    ("target", "norm_pix", "pixel", "normalised pixels beat raw pixels as the target"),
    ("masking", "random", "block", "random masking beats block masking"),
    ("masking", "random", "grid", "random masking beats grid masking"),
    ("encoder_mask_tokens", False, True, "an encoder without [M] tokens beats one with them"),
    ("augmentation", "crop", "none", "random crops beat no augmentation"),
    ("augmentation", "crop", "crop+jitter", "adding colour jitter to the crops does not help"),
    ("mask_ratio", 0.75, 0.9, "75% beats an extreme 90%"),
    ("target", "norm_pix", "pca", "normalised pixels beat PCA coordinates as the target"),
    ("target", "norm_pix", "tokens", "normalised pixels beat k-means tokens as the target"),
    ("embed_dim", LARGEST, BASE, "a wider encoder beats the baseline's at equal epochs"),
    ("steps", LARGEST, BASE, "training twice as long helps"),
]


def settings_for(preset: str = "quick", *, seeds: int | None = None, factors: list[str] | None = None,
                 first_seed: int = 0, reference: bool = True, **budget) -> list[Setting]:
    """The sweep's settings: the preset's baseline and factors (or only `factors`, with the full preset's
    values), each for `seeds` seeds (first_seed, first_seed + 1, ...), plus the randomly initialised encoder
    (steps=0) as the reference. budget overrides the preset's baseline (steps, batch_size, ...)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    design = PRESETS[preset]
    chosen = design["factors"] if factors is None else {f: FACTORS[f] for f in factors if _known(f)}
    seeds = design["seeds"] if seeds is None else seeds
    seed_list = list(range(first_seed, first_seed + seeds))
    baseline = {**design["baseline"], **budget}
    settings = one_at_a_time(baseline, chosen, seeds=seed_list, reference={"steps": 0} if reference else None)
    for s in settings:  # what only the baseline runs do (the study's scores along the way)
        if s.factor == "baseline":
            s.params.update(design.get("baseline_extra", {}))
    for extra in design.get("references", []) if reference else []:  # random init of the other encoder sizes
        if any(baseline.get(k) != v for k, v in extra.items()):
            value = ",".join(f"{k}={v}" for k, v in extra.items())
            settings += [Setting("reference", value, s, {**baseline, "steps": 0, **extra, "seed": s}) for s in seed_list]
    return settings


def _known(factor: str) -> bool:
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; the factors are {sorted(FACTORS)}")
    return True
