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
# A patch is hidden when its place in the shuffled order is at or after len_keep.
mask_ex = (ids_restore_ex >= len_keep).float()
