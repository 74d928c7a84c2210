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
# Without decoder positions every mask token enters the decoder as the same vector, so every hidden patch gets the
# same prediction, wherever it is: the loss jumps from about 0.20 to 1.41, far above predict-zero's 0.89.
still_beats_zero = False
