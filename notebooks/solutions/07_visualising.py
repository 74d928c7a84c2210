# Solutions to the exercises of 07_visualising.ipynb (see solutions/02_building_the_mae.py for the format).

# %% exercise-1
# Read off the printed distances: the smallest of the last block's per-head numbers (computed here from the same
# numbers).
answer = int(distances["MAE"][-1].argmin())

# %% exercise-2
# The highest noise is hidden: give the top row noise 1 and every other patch 0, and hide just grid_size
# patches. Half a patch of slack keeps int(L * (1 - ratio)) from rounding down one patch too far.
noise = (torch.arange(c.num_patches) < c.grid_size).float()[None]
ratio = (c.grid_size - 0.5) / c.num_patches

# %% exercise-3
# A prediction, checked against the measurement: random masks are the easiest (the model was trained on them),
# then the grid (a visible patch beside every hidden one, but a pattern never seen in training), and blocks the
# hardest (whole regions gone, nothing near them to go on).
prediction = ["random", "grid", "block"]
