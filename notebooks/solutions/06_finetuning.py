# Solutions to the exercises of 06_finetuning.ipynb (see solutions/02_building_the_mae.py for the format).

# %% exercise-1
# Layer decay: the head and the last norm get layer_decay^0, block i gets layer_decay^(depth - i), and the
# patch embedding layer_decay^(depth + 1). Block 0 is depth layers below the top.
answer = base_lr * batch_size / 256 * layer_decay ** c.depth

# %% exercise-2
# One block: two LayerNorms (2 x 2D), qkv (3D^2 + 3D), the projection (D^2 + D), the MLP (2 r D^2 + r D + D);
# then fc_norm (2D) and the head (D x classes + classes).
D, r = c.embed_dim, int(c.mlp_ratio)
block = 2 * 2 * D + (3 * D * D + 3 * D) + (D * D + D) + (2 * r * D * D + r * D + D)
answer = block + 2 * D + D * data.num_classes + data.num_classes

# %% exercise-3
# The frozen MAE blocks already give features a linear layer separates well (notebook 5); frozen random blocks give
# random mixtures of pixels, which one trained block and a head cannot make up for in a few epochs.
better_start = "MAE"
