"""What the decoder predicts for each hidden patch: pixels, PCA coordinates or a discrete token (pure functions).

The paper predicts pixels, raw or normalised per patch (its Table 1c), and compares them with BEiT's dVAE tokens.
Two more targets make the comparison at laptop scale, both fitted once on training patches:

    "pca"     the patch's coefficients on its k leading principal components (the paper's PCA target keeps the
              96 largest of a 16x16x3 patch's 768). Predicting all of them is the pixel loss again (a rotation
              keeps squared errors); keeping the leading ones asks for the coarse shape and drops fine detail.
    "tokens"  the index of the nearest of k k-means centres of training patches, predicted with cross-entropy:
              a small codebook, like iGPT's colour clusters or ClusterMIM's patch clusters (the paper's dVAE tokens
              are the large-scale, learned form).

Both work in the space the pixel target would use: per-patch normalised when `norm_pix_loss` is set.

    mean, components, std = fit_pca(patches, k=8)            # patches: (M, D) -> (D,), (k, D), (k,)
    coords = pca_coordinates(patches, mean, components)       # (..., D) -> (..., k)
    centres, prior = fit_kmeans(patches, k=64, seed=0)        # -> (k, D), (k,) share of patches per centre
    tokens = nearest_centre(patches, centres)                 # (..., D) -> (...,) long
"""

from __future__ import annotations

import torch

TARGETS = ("pixels", "pca", "tokens")


def check_target(target: str, target_dim: int, patch_dim: int) -> None:
    """A clear error for a target the model cannot be built with."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS} (pixels: the paper's; pca: leading principal "
                         f"components of patches; tokens: k-means clusters of patches), got {target!r}")
    if target == "pixels" and target_dim != 0:
        raise ValueError(f"target_dim is the number of PCA components or k-means tokens; the pixel target has "
                         f"p*p*C = {patch_dim} values per patch already: leave target_dim=0 (got {target_dim})")
    if target == "pca" and not 1 <= target_dim <= patch_dim:
        raise ValueError(f"target='pca' keeps target_dim of the patch's {patch_dim} principal components: choose "
                         f"1 <= target_dim <= {patch_dim} (got {target_dim})")
    if target == "tokens" and target_dim < 2:
        raise ValueError(f"target='tokens' predicts one of target_dim k-means clusters: choose target_dim >= 2 "
                         f"(e.g. 64 or 512), got {target_dim}")


def sample_patches(patches: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """A seeded random `n` rows (all if fewer) of patches (N, L, D) or (M, D) -> (min(n, M), D)."""
    flat = patches.reshape(-1, patches.shape[-1])
    if len(flat) <= n:
        return flat
    idx = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))[:n]
    return flat[idx.to(flat.device)]


# ---------------------------------------------------------------------------------------------- PCA
def fit_pca(patches: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """patches (M, D) -> mean (D,), components (k, D) orthonormal rows in order of variance, std (k,) the
    standard deviation of the patches along each."""
    x = patches.double()
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / max(1, len(x) - 1)  # (D, D)
    variances, vectors = torch.linalg.eigh(cov)  # ascending
    std, components = variances.flip(0)[:k].clamp_min(0).sqrt(), vectors.flip(1)[:, :k].T  # (k,), (k, D)
    return mean.float(), components.float().contiguous(), std.float()


def pca_coordinates(patches: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """(..., D) -> (..., k): the coefficients on the leading components (the centred patch, projected)."""
    return (patches - mean) @ components.T


def pca_patches(coords: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """The inverse: (..., k) coefficients -> (..., D) patches (the best rank-k approximation)."""
    return coords @ components + mean


# ---------------------------------------------------------------------------------------------- k-means tokens
def nearest_centre(patches: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(..., D), centres (k, D) -> (...,) the index of the nearest centre (squared Euclidean distance)."""
    flat = patches.reshape(-1, patches.shape[-1]).float()
    dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ centres.T.float()
            + centres.float().pow(2).sum(1))  # (M, k)
    return dist.argmin(1).reshape(patches.shape[:-1])


def fit_kmeans(patches: torch.Tensor, k: int, *, iters: int = 25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding. patches (M, D), M >= k -> centres (k, D) and the share of the
    patches nearest each (k,) (the class prior, the token target's predict-nothing level). An empty cluster is
    moved to the patch farthest from its centre."""
    x = patches.float()
    if len(x) < k:
        raise ValueError(f"k-means with {k} tokens needs at least {k} patches to fit on, got {len(x)}")
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(len(x), (1,), generator=g)]
    closest = (x - centres[0]).pow(2).sum(1)  # (M,) squared distance to the nearest centre so far
    for _ in range(1, k):  # k-means++: each next centre drawn in proportion to that distance
        pick = torch.multinomial((closest + 1e-12).cpu(), 1, generator=g).to(x.device)
        centres = torch.cat([centres, x[pick]])
        closest = torch.minimum(closest, (x - x[pick]).pow(2).sum(1))
    for _ in range(iters):
        assign = nearest_centre(x, centres)  # (M,)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        new = sums / counts.clamp_min(1).unsqueeze(1)
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            far = (x - new[assign]).pow(2).sum(1).argmax()
            new[empty] = x[far]
            assign[far] = empty
        if torch.allclose(new, centres):
            break
        centres = new
    counts = torch.bincount(nearest_centre(x, centres), minlength=k).float()
    return centres, counts / counts.sum()
