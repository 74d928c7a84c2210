#!/usr/bin/env bash
# The recorded recipes of the models shipped in maelib's zoo (maelib/zoo/weights), one command per model.
#   bash scripts/zoo_train.sh NAME          NAME: one of the cases below (or "all", one after another)
# Each run writes into runs/zoo/NAME/ (logs, checkpoints, model.safetensors or classifier.safetensors,
# metrics.json, wall_seconds.txt). `python scripts/zoo_export.py NAME` then measures the model and copies it,
# with its card, into the package. Run one at a time on a quiet machine: the wall time goes on the card.
set -euo pipefail
cd "$(dirname "$0")/.."
MAELIB="${MAELIB:-.venv/bin/maelib}"
QUIET=(--trainer.enable_model_summary false)

train() {
  local name=$1; local out="runs/zoo/$name"; mkdir -p "$out"
  local t0=$SECONDS
  case "$name" in
    mae_vit_mini_patch4_28.fmnist_normpix)   # the teaching preset, 4x longer: for probing, k-NN and fine-tuning
      "$MAELIB" pretrain --config configs/pretrain_fmnist.yaml --trainer.max_epochs 24 \
        --trainer.default_root_dir "$out" "${QUIET[@]}" ;;
    mae_vit_mini_patch4_28.fmnist_pixel)     # its twin with the pixel target: for pictures with nothing borrowed
      "$MAELIB" pretrain --config configs/pretrain_fmnist.yaml --trainer.max_epochs 12 \
        --model.arch_overrides '{norm_pix_loss: false}' --trainer.default_root_dir "$out" "${QUIET[@]}" ;;
    vit_mini_patch4_28.fmnist_finetuned)     # the norm-pix MAE fine-tuned end to end: a Fashion-MNIST classifier
      "$MAELIB" finetune --config configs/finetune_fmnist.yaml \
        --model.checkpoint runs/zoo/mae_vit_mini_patch4_28.fmnist_normpix/model.safetensors \
        --trainer.max_epochs 8 --model.warmup_epochs 1 --trainer.default_root_dir "$out" "${QUIET[@]}" ;;
    vit_mini_patch4_28.fmnist_supervised)    # the same ViT trained with labels from random init, at the MAE's
      # budget: 2,740 steps of batch 256 (11.7 epochs) = 1,902 s at the quiet 0.694 s/step of the fine-tuned model
      "$MAELIB" finetune --config configs/supervised_fmnist.yaml --trainer.max_epochs 12 --trainer.max_steps 2740 \
        --trainer.default_root_dir "$out" "${QUIET[@]}" ;;
    vit_mini_patch4_28.fmnist_mocov3)        # MoCo v3 on the same ViT and images, at about the MAE's budget: 4
      # epochs (benchmarks/pretraining_cost.py: one MoCo v3 epoch costs 4-5 of MAE's 24)
      "$MAELIB" contrastive --config configs/contrastive_fmnist.yaml --trainer.max_epochs 4 \
        --trainer.default_root_dir "$out" "${QUIET[@]}" ;;
    mae_vit_tiny_patch8_64.photos_pixel)     # colour, pixel target, random crops of the photos shipped offline
      "$MAELIB" pretrain --config configs/pretrain_photos.yaml --trainer.default_root_dir "$out" "${QUIET[@]}" ;;
    *) echo "unknown zoo model $name" >&2; exit 2 ;;
  esac
  echo "$((SECONDS - t0))" > "$out/wall_seconds.txt"
  echo "$name: $((SECONDS - t0)) s"
}

if [ "${1:-}" = all ]; then
  for n in mae_vit_mini_patch4_28.fmnist_normpix mae_vit_mini_patch4_28.fmnist_pixel \
           vit_mini_patch4_28.fmnist_finetuned mae_vit_tiny_patch8_64.photos_pixel; do train "$n"; done
else
  train "${1:?usage: zoo_train.sh NAME|all}"
fi
