"""Features as pictures: patch features as colours (PCA to RGB) and image features in two dimensions."""

from __future__ import annotations

import numpy as np
import torch


# ---------------------------------------------------------------------------------------------- features
def pca_rgb(patch_features: torch.Tensor | np.ndarray, grid: int | None = None, *,
            remove_position: bool = False) -> np.ndarray:
    """Patch features (N, L, D) -> (N, grid, grid, 3) colours in [0, 1].

    One PCA is fitted on all patches of the batch, so colours are comparable across images; each of the
    first 3 components is min-max scaled to [0, 1] (a component that is constant, or missing, is 0).

    remove_position: first subtract, at each patch position, the mean feature of that position over the N images.
    A ViT's patch features carry their position embedding, and on a small model the top components are often just
    position (a colour ramp across the grid, the same in every image); with it removed the colours show what
    differs between images at the same place: content. Needs N >= 2 (more images give a steadier mean).
    """
    from sklearn.decomposition import PCA

    x = np.asarray(torch.as_tensor(patch_features).detach().cpu().float())
    n, num_patches, dim = x.shape
    grid = grid or int(round(num_patches**0.5))
    scale = float(np.abs(x).max()) if x.size else 0.0  # what counts as "constant" is relative to the features' size
    if remove_position:
        if n < 2:
            raise ValueError("remove_position needs the features of at least 2 images: the mean of each position "
                             "over the images is what is removed")
        x = x - x.mean(axis=0, keepdims=True)  # (N, L, D) minus each position's mean over the images
    flat = x.reshape(n * num_patches, dim)
    k = min(3, dim, flat.shape[0])
    comps = np.zeros((flat.shape[0], 3))
    with np.errstate(divide="ignore", invalid="ignore"):  # constant features: sklearn divides by 0 variance
        comps[:, :k] = PCA(n_components=k).fit_transform(flat)
    lo, hi = comps.min(axis=0), comps.max(axis=0)
    flat_component = hi - lo <= max(1e-12, 1e-6 * scale)  # nothing but rounding noise left in it
    span = np.where(flat_component, 1.0, hi - lo)
    rgb = ((comps - lo) / span).clip(0, 1)
    rgb[:, flat_component] = 0.0
    return rgb.reshape(n, grid, grid, 3)


def embed_2d(features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Image features (N, D) -> (N, 2) with PCA or t-SNE (perplexity capped for small N), seeded."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(torch.as_tensor(features).detach().cpu().float())
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        perplexity = min(30.0, max(1.0, (x.shape[0] - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
