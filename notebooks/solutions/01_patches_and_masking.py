# Solutions to the exercises of 01_patches_and_masking.ipynb. Each "# %% exercise-N" section replaces the notebook
# cell tagged exercise-N; the tests run the notebook with these in place (MAELIB_CHECKS=solutions).

# %% exercise-1
# Kept tokens first, then a zero for every hidden patch: this is the shuffled order, which ids_restore undoes.
full = torch.cat([x_kept, torch.zeros(1, 49 - x_kept.shape[1], 16)], dim=1)
restored = torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, 16))

# %% exercise-2
# (224 / 16)^2 = 196 patches; the encoder keeps int(196 * (1 - r)) of them (maelib: at least one).
encoder_patches = max(1, int((224 // 16) ** 2 * (1 - r)))

# %% exercise-3
# Grid masking keeps one patch of every 2x2 cell, so every hidden patch touches a visible one and interpolation
# fills it well; block masking hides large regions, far from any visible pixel (at 75%: grid about 52%, random 67%,
# block 98% of predict-zero's error).
easiest = "grid"
