# Solutions to the exercises of 07_visualising.ipynb (see solutions/02_building_the_mae.py for the format).

# %% exercise-1
# Read off the figure: the shortest bar in the last block's row (here computed from the same numbers).
answer = int(distances["MAE"][-1].argmin())

# %% exercise-2
# The highest noise is hidden: give the top row noise 1 and every other patch 0, and hide just grid_size
# patches. Half a patch of slack keeps int(L * (1 - ratio)) from rounding down one patch too far.
noise = (torch.arange(c.num_patches) < c.grid_size).float()[None]
ratio = (c.grid_size - 0.5) / c.num_patches
