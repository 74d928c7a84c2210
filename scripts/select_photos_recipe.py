"""How configs/pretrain_photos.yaml was chosen: train on 7 of the 9 training photos and score crops of the other two
(coffee, astronaut), never the held-out test photos (chelsea, flower, grace_hopper).

    python scripts/select_photos_recipe.py TAG STORE_FACTOR EPOCHS [extra `maelib pretrain` arguments ...]
    python scripts/select_photos_recipe.py f4_c5_e15 4 15 --data.crop_scale "[0.05, 1.0]" --data.augment mae_color \
        --data.jitter "[0.4, 0.4, 0.4, 0.5]"

STORE_FACTOR: training photos stored at STORE_FACTOR x img_size (maelib.data.PHOTO_SCALE). Each run trains from
configs/pretrain_photos.yaml into runs/select_photos/TAG and appends the hidden-patch MSE of the model and its
baselines on 192 seeded crops of the two selection photos (mask 0.75) to runs/select_photos/results.jsonl.
The 2026-12-01 runs (15 epochs each, one at a time on the 2-core CPU): benchmarks/results/photos_recipe_selection.jsonl.
They used configs/pretrain_photos.yaml as it was at commit 705e4bb (crop + flip, crops of 10-100%, 2 warm-up epochs)
with each row's `extra` arguments; the config now holds the chosen setting, so pass `--data.augment mae
--data.crop_scale "[0.1, 1.0]" --model.warmup_epochs 2` to repeat the first row.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import maelib
import maelib.data
import maelib.data.photos
from maelib.evaluation.cards import photo_test_crops, reconstruction_check
from maelib.train.cli import main as maelib_cli

SELECTION = ("coffee", "astronaut")


def run(tag: str, factor: int, epochs: str, extra: list[str]) -> dict:
    train = [name for name in maelib.data.photos.training_photos() if name not in SELECTION]
    maelib.data.photos.training_photos = lambda: list(train)  # the data module asks for these at setup
    maelib.data.photos.HELD_OUT_PHOTOS = SELECTION  # validate on the selection photos too
    maelib.data.sources.PHOTO_SCALE = {**maelib.data.PHOTO_SCALE, "train": factor}  # where setup reads it
    out = Path("runs/select_photos") / tag
    start = time.time()
    maelib_cli(["pretrain", "--config", "configs/pretrain_photos.yaml", "--trainer.max_epochs", epochs,
                "--trainer.default_root_dir", str(out), "--trainer.enable_model_summary", "false",
                "--trainer.enable_progress_bar", "false", *extra])
    crops = photo_test_crops(192, names=SELECTION)  # seeded crops of the two selection photos
    result = reconstruction_check(maelib.load_model(out / "model.safetensors"), crops)
    result.update(tag=tag, factor=factor, epochs=epochs, extra=extra, wall=round(time.time() - start))
    with open(out.parent / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:])))
