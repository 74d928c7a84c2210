# Solutions to the exercises of 05_probing_and_knn.ipynb (see solutions/02_building_the_mae.py for the format).

# %% exercise-1
predicted = my_knn(feats["mae", "train"][pool], labels["train"], feats["mae", "test"][pool], 1, temperature)
answer_1nn = (predicted == labels["test"]).float().mean().item()

# %% exercise-2
bn = head[0]
whitened = (x_test - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)

# %% exercise-3
torch.manual_seed(seed)
centre = x_train.mean(0)
_, _, V = torch.pca_lowrank(x_train - centre, q=c.embed_dim, center=False)  # (784, D)
predicted = my_knn((x_train - centre) @ V, labels["train"], (x_test - centre) @ V, k, temperature)
answer_pca_pixels = (predicted == labels["test"]).float().mean().item()

# %% exercise-4
# Shifted by one patch, an image has the same patch contents at other places: the MAE's mean of patch tokens changes
# less (83.9% -> 52.2% at the defaults; the tokens carry their positions too) than the pixel-by-pixel cosine
# similarity with the unshifted bank (83.3% -> 36.3%).
loses_more = "raw pixels"
