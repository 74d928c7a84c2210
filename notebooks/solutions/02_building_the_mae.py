# Solutions to the exercises of 02_building_the_mae.ipynb. Each "# %% exercise-N" section replaces the notebook
# cell tagged exercise-N; the tests run the notebook with these in place (MAELIB_CHECKS=solutions).

# %% exercise-1
# The decoder sees every patch (visible ones and a mask token for each hidden one) plus the cls token:
# 1 + (224 / 16)^2, whatever the mask ratio.
decoder_tokens = 1 + (224 // 16) ** 2

# %% exercise-2
new_positions = my_sincos_2d(D, 56 // p)

# %% exercise-3
loss_all_patches = (pred - target).pow(2).mean(dim=-1).mean()

# %% exercise-4
# A block mask hides whole regions: most hidden patches are far from any visible one, a harder task (about 0.35
# against 0.20 for random masks on 256 images). A grid mask is easy for interpolation, but this model, trained on
# random masks, does a little worse on it than on random ones (0.22): it learned the masks it was shown.
lower_loss_mask = "random"
