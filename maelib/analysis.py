"""The numbers behind the pictures: reconstructions, errors, attention and feature maps (pure functions).

Everything here returns tensors or arrays; `maelib.viz` turns them into figures. Model-driven functions run
in eval mode under `torch.no_grad()` and put the model back in the mode it was in.

    out = reconstruct(model, imgs, mask_ratio=0.75)           # masked, reconstruction, pasted, mask, loss
    attn, ids_keep = attention_maps(model, imgs)              # {block: (N, heads, 1+L, 1+L)}
    cls_map = cls_attention_map(attn[3], grid=7)              # (N, heads, 7, 7)
    rollout = attention_rollout(attn)                         # (N, 1+L, 1+L), rows sum to 1
    dist = attention_distances(model, imgs)                   # (depth, heads) mean distance in pixels

Shapes: N images, L = grid**2 patches, T tokens (1 + L unmasked, 1 + L_keep masked), D feature width.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .attention import capture_attention
from .masking import check_mask_ratio, kept_indices
from .patches import mask_to_image  # noqa: F401 (public here too: maelib.analysis.mask_to_image)
from .rng import seeded_noise  # noqa: F401 (public here too: maelib.analysis.seeded_noise)


# ---------------------------------------------------------------------------------------------- helpers
@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no_grad inside the `with`; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (images are moved there)."""
    return next(model.parameters()).device


def target_patches(model: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    """What the model is trained to predict: (N, L, p*p*C) pixels, per-patch normalised for norm_pix models
    (`MaskedAutoencoder.loss_target`)."""
    return model.loss_target(imgs)


# ---------------------------------------------------------------------------------------------- reconstruction
def reconstruct(
    model: nn.Module, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Run the MAE once and return everything needed to show it. imgs: (N, C, H, W) in model input space.

    Returns a dict of tensors (on the model's device):
      masked (N, C, H, W)          the input with hidden patches set to 0 (the dataset mean if inputs are normalised)
      reconstruction (N, C, H, W)  the prediction of every patch as an image; norm_pix predictions are scaled
                                   back with each true patch's mean and std (see MaskedAutoencoder.pred_to_images)
      pasted (N, C, H, W)          reconstruction with the visible patches copied from the input
      mask (N, L)                  1 = hidden;  mask_map (N, 1, H, W) the same per pixel
      pred (N, L, p*p*C)           raw predictions (target space);  loss () the model's loss
    """
    with evaluating(model):
        imgs = imgs.to(model_device(model))
        loss, pred, mask = model(imgs, mask_ratio, noise)
        recon = model.pred_to_images(pred, imgs)
        mask_map = mask_to_image(mask, model.config.patch_size).to(imgs.dtype)
        return dict(
            masked=imgs * (1 - mask_map),
            reconstruction=recon,
            pasted=model.paste_visible(imgs, recon, mask),
            mask=mask,
            mask_map=mask_map,
            pred=pred,
            loss=loss,
        )


def patch_errors(
    model: nn.Module,
    imgs: torch.Tensor,
    mask_ratio: float | None = None,
    noise: torch.Tensor | None = None,
    space: str = "target",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch reconstruction MSE and the mask. -> errors (N, grid, grid), mask (N, grid, grid) with 1 = hidden.

    space="target": against what the model is trained on (normalised patches for norm_pix models); the mean
    over hidden patches is then the model's loss. space="pixel": against the input pixels, with norm_pix
    predictions un-normalised by the true patch statistics (so only shape/texture errors remain).
    Errors are given for every patch; the visible ones are usually near-trivial for a trained model.
    """
    if space not in ("target", "pixel"):
        raise ValueError(f"space must be 'target' or 'pixel', got {space!r}")
    out = reconstruct(model, imgs, mask_ratio, noise)
    with torch.no_grad():
        imgs = imgs.to(out["pred"].device)
        if space == "target":
            err = (out["pred"].float() - target_patches(model, imgs).float()).pow(2).mean(dim=-1)
        else:
            err = (model.patchify(out["reconstruction"]) - model.patchify(imgs)).float().pow(2).mean(dim=-1)
    g = model.config.grid_size
    return err.reshape(-1, g, g), out["mask"].reshape(-1, g, g)


def error_vs_mask_ratio(
    model: nn.Module,
    imgs: torch.Tensor,
    ratios: Sequence[float] = (0.25, 0.5, 0.75, 0.9),
    repeats: int = 3,
    seed: int = 0,
    space: str = "target",
) -> torch.Tensor:
    """Mean MSE over hidden patches at each mask ratio, averaged over `repeats` seeded masks. -> (len(ratios),)

    Repeat k uses the noise of seed + k at every ratio, so results are reproducible and comparable.
    A ratio that hides nothing (0.0) gives NaN.
    """
    means = []
    for ratio in ratios:
        ratio = check_mask_ratio(ratio)
        per_repeat = []
        for k in range(repeats):
            noise = seeded_noise(model, imgs.shape[0], ratio, seed + k)
            err, mask = patch_errors(model, imgs, ratio, noise, space=space)
            per_repeat.append((err * mask).sum() / mask.sum() if mask.sum() > 0 else torch.tensor(float("nan")))
        means.append(torch.stack([v.cpu() for v in per_repeat]).mean())
    return torch.stack(means)


# ---------------------------------------------------------------------------------------------- attention
def attention_maps(
    model: nn.Module,
    imgs: torch.Tensor,
    blocks: Sequence[int] | None = None,
    mask_ratio: float = 0.0,
    noise: torch.Tensor | None = None,
) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """Encoder attention weights. -> ({block: (N, heads, T, T)} on the CPU, ids_keep (N, L_keep) or None).

    mask_ratio 0 (and no noise): the whole image, T = 1 + L, tokens in patch order; ids_keep is None.
    Otherwise the masked encoder pass: T = 1 + L_keep and token 1 + j is patch ids_keep[:, j].
    Block keys are non-negative (block -1 is stored under depth - 1).
    """
    imgs = model.check_images(imgs)
    with evaluating(model):
        imgs = imgs.to(model_device(model))
        with capture_attention(model, blocks) as attn:
            if mask_ratio == 0.0 and noise is None:
                model.forward_features(imgs)
                ids_keep = None
            else:
                mask_ratio = check_mask_ratio(mask_ratio)
                if noise is None:
                    noise = model.make_noise(imgs.shape[0], mask_ratio, imgs.device)
                model.forward_encoder(imgs, mask_ratio, noise)
                num_patches = model.config.num_patches
                if model.config.encoder_mask_tokens:  # every position is encoded, hidden ones as a mask token
                    ids_keep = torch.arange(num_patches).expand(imgs.shape[0], -1)
                else:
                    ids_keep = kept_indices(noise, mask_ratio).cpu()
    return {i: a.cpu() for i, a in attn.items()}, ids_keep


def _infer_grid(tokens: int, grid: int | None) -> int:
    """Grid side from T = 1 + grid**2 tokens when not given."""
    if grid is not None:
        return grid
    side = int(round((tokens - 1) ** 0.5))
    if side * side != tokens - 1:
        raise ValueError(f"{tokens} tokens are not 1 + a square number: pass grid= (masked attention needs it)")
    return side


def _to_grid(values: torch.Tensor, ids_keep: torch.Tensor | None, grid: int) -> torch.Tensor:
    """Per-token values (N, h, K) -> (N, h, grid, grid); patches missing from ids_keep are NaN."""
    n, h, _ = values.shape
    if ids_keep is None:
        return values.reshape(n, h, grid, grid)
    full = torch.full((n, h, grid * grid), float("nan"), dtype=values.dtype)
    full.scatter_(2, ids_keep.to(torch.long)[:, None, :].expand(-1, h, -1), values)
    return full.reshape(n, h, grid, grid)


def cls_attention_map(attn: torch.Tensor, ids_keep: torch.Tensor | None = None, grid: int | None = None) -> torch.Tensor:
    """How much the cls token attends to each patch. attn (N, h, T, T) -> (N, h, grid, grid).

    Not renormalised: a map plus the cls token's attention to itself sums to 1. Hidden patches are NaN.
    """
    grid = _infer_grid(attn.shape[-1], grid) if ids_keep is None else grid
    if grid is None:
        raise ValueError("pass grid= with ids_keep")
    return _to_grid(attn[:, :, 0, 1:], ids_keep, grid)


def query_attention_map(
    attn: torch.Tensor,
    query: int | tuple[int, int],
    ids_keep: torch.Tensor | None = None,
    grid: int | None = None,
) -> torch.Tensor:
    """Where one patch looks: the attention row of patch `query` (flat index or (row, col)). -> (N, h, grid, grid).

    With ids_keep (masked attention), images in which the query patch is hidden get an all-NaN map.
    """
    n, h, t, _ = attn.shape
    if ids_keep is None:
        grid = _infer_grid(t, grid)
    elif grid is None:
        raise ValueError("pass grid= with ids_keep")
    q = query[0] * grid + query[1] if isinstance(query, tuple) else int(query)
    if not 0 <= q < grid * grid:
        raise IndexError(f"query patch {query} is outside the {grid}x{grid} grid")
    if ids_keep is None:
        rows = attn[:, :, 1 + q, 1:]  # (N, h, L)
    else:
        hit = ids_keep == q  # (N, L_keep)
        pos = 1 + hit.float().argmax(dim=1)  # token index of the query in each image (meaningless if absent)
        rows = attn.gather(2, pos[:, None, None, None].expand(n, h, 1, t))[:, :, 0, 1:].clone()
        rows[~hit.any(dim=1)] = float("nan")
    return _to_grid(rows, ids_keep, grid)


def attention_rollout(
    attn_list: Sequence[torch.Tensor] | Mapping[int, torch.Tensor],
    discard_ratio: float = 0.0,
    head_fusion: str = "mean",
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) through blocks in order. Each (N, h, T, T) -> (N, T, T).

    Per block: fuse heads ("mean", "max" or "min"), optionally zero the smallest `discard_ratio` of each
    image's weights (never the diagonal), add the identity for the residual path, renormalise rows;
    then multiply, later blocks on the left. Every row of the result sums to 1.
    """
    fuse = {"mean": lambda a: a.mean(dim=1), "max": lambda a: a.amax(dim=1), "min": lambda a: a.amin(dim=1)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be one of {sorted(fuse)}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    mats = [attn_list[k] for k in sorted(attn_list)] if isinstance(attn_list, Mapping) else list(attn_list)
    result = None
    for a in mats:
        a = fuse[head_fusion](a.float())  # (N, T, T)
        n, t, _ = a.shape
        eye = torch.eye(t, dtype=a.dtype, device=a.device)
        if discard_ratio > 0:
            flat = torch.where(eye.bool(), float("inf"), a).reshape(n, -1)  # never drop the diagonal
            drop = flat.topk(int(t * t * discard_ratio), dim=-1, largest=False).indices
            a = a.reshape(n, -1).scatter(1, drop, 0.0).reshape(n, t, t)
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("attention_rollout needs at least one block")
    return result


def patch_distances(grid: int, patch_size: int) -> torch.Tensor:
    """Euclidean distance in pixels between the centres of every pair of patches. -> (L, L)"""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=-1).float() * patch_size  # (L, 2)
    return torch.cdist(centres, centres)


def mean_attention_distance(
    attn: torch.Tensor, grid: int, patch_size: int, ids_keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention-weighted mean distance (pixels) from query to key patches, per head. (N, h, T, T) -> (h,)

    As in the ViT paper (Fig. 7): the cls token is left out as query and key, each query's weights over the
    patch keys are renormalised to sum to 1, and the distance is averaged over queries and images.
    Small values mean local attention, large values global. ids_keep maps tokens to patches when masked.
    Computed in float64: a query that attends almost only to the cls token leaves its patch weights summing to
    1e-20 or less, and renormalising those must not be cut short (a clamp would count it as distance 0).
    """
    a = attn[:, :, 1:, 1:].double()
    a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    dist = patch_distances(grid, patch_size).double()  # (L, L)
    if ids_keep is None:
        dist = dist.expand(a.shape[0], -1, -1)
    else:
        idx = ids_keep.to(torch.long)
        dist = dist[idx[:, :, None], idx[:, None, :]]  # (N, K, K)
    per_query = (a * dist[:, None]).sum(dim=-1)  # (N, h, K)
    return per_query.mean(dim=(0, 2)).float()


def attention_distances(model: nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    """Mean attention distance of every head of every encoder block on unmasked images. -> (depth, heads)"""
    attn, _ = attention_maps(model, imgs)
    c = model.config
    return torch.stack([mean_attention_distance(attn[i], c.grid_size, c.patch_size) for i in sorted(attn)])


# ---------------------------------------------------------------------------------------------- features
def pca_rgb(patch_features: torch.Tensor | np.ndarray, grid: int | None = None) -> np.ndarray:
    """Patch features (N, L, D) -> (N, grid, grid, 3) colours in [0, 1].

    One PCA is fitted on all patches of the batch, so colours are comparable across images; each of the
    first 3 components is min-max scaled to [0, 1] (a component that is constant, or missing, is 0).
    """
    from sklearn.decomposition import PCA

    x = np.asarray(torch.as_tensor(patch_features).detach().cpu().float())
    n, num_patches, dim = x.shape
    grid = grid or int(round(num_patches**0.5))
    flat = x.reshape(n * num_patches, dim)
    k = min(3, dim, flat.shape[0])
    comps = np.zeros((flat.shape[0], 3))
    with np.errstate(divide="ignore", invalid="ignore"):  # constant features: sklearn divides by 0 variance
        comps[:, :k] = PCA(n_components=k).fit_transform(flat)
    lo, hi = comps.min(axis=0), comps.max(axis=0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    return ((comps - lo) / span).clip(0, 1).reshape(n, grid, grid, 3)


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


# The reconstruction baselines live in their own file; imported here, where the notebooks look for them.
from .baselines import interpolate_hidden, mean_colour_baseline_mse, reconstruction_baselines  # noqa: E402,F401
