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
# A grid mask leaves a visible neighbour next to every hidden patch: an easier task, a lower loss, even for a model
# trained on random masks. The paper (Table 1f) finds it gives worse representations: easy is not what we want.
lower_loss_mask = "grid"
