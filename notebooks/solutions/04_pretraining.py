# Solutions to the exercises of 04_pretraining.ipynb (see solutions/02_building_the_mae.py for the format).

# %% exercise-1
# The linear scaling rule: lr = base_lr * batch / 256.
answer_lr = 1.5e-4 * 4096 / 256  # 2.4e-3

# %% exercise-2
target = model.patchify(imgs[:16])
if model.config.norm_pix_loss:
    target = maelib.normalize_patches(target)
per_patch = (pred - target).pow(2).mean(dim=-1)  # (N, L)
my_loss = (per_patch * mask).sum() / mask.sum()

# %% exercise-3
# 1,281,167 // 4096 = 312 steps per epoch; 40 epochs of warm-up = 12,480 steps, 5% of the 249,600 steps.
answer_warmup = 40 * (1_281_167 // 4096)

# %% exercise-4
# AdamW's update of each weight is about lr in size whatever the gradient's scale, so 100x smaller steps move the
# weights 100x less: after a few dozen steps the small-lr model has barely left its initialisation.
lower_test_loss = "base_lr"
