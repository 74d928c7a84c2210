"""Attention weights on demand.

The blocks run timm's fused attention (scaled_dot_product_attention), which never materialises the
attention matrix. To look at it, `capture_attention` hooks the chosen blocks for the duration of a
`with` statement and recomputes softmax(q k^T / sqrt(d)) from each block's own input. Outside the `with`
nothing is hooked, so the normal path costs nothing extra.

    with capture_attention(model) as attn:
        model.forward_features(imgs)
    attn[11]  # (N, heads, 1+L, 1+L) for block 11

and the maps built from them (pure functions):

    attn, ids_keep = attention_maps(model, imgs)              # {block: (N, heads, 1+L, 1+L)}
    cls_map = cls_attention_map(attn[3], grid=7)              # (N, heads, 7, 7)
    rollout = attention_rollout(attn)                         # (N, 1+L, 1+L), rows sum to 1
    dist = attention_distances(model, imgs)                   # (depth, heads) mean distance in pixels
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from ..masking import check_mask_ratio, kept_indices
from .reconstruction import evaluating, model_device


def attention_weights(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Recompute a timm Attention module's weights for its input x: (N, T, D) -> (N, heads, T, T)."""
    n, t, _ = x.shape
    qkv = attn.qkv(x).reshape(n, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # (3, N, h, T, hd)
    q, k, _ = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)  # (N, h, T, T)
    return logits.float().softmax(dim=-1)


@contextmanager
def capture_attention(
    model: nn.Module, blocks: Iterable[int] | None = None, part: str = "encoder"
) -> Iterator[dict[int, torch.Tensor]]:
    """Record attention weights of `blocks` (default: all) of the "encoder" or "decoder" while inside the `with`.

    Yields a dict {block index: (N, heads, T, T)} filled by each forward pass (the latest pass wins).
    Works for masked passes too: then T = 1 + number of visible patches, in the shuffled order.
    """
    stack = {"encoder": "blocks", "decoder": "decoder_blocks"}.get(part)
    if stack is None:
        raise ValueError(f"part must be 'encoder' or 'decoder', got {part!r}")
    layers = getattr(model, stack)
    chosen = range(len(layers)) if blocks is None else list(blocks)
    captured: dict[int, torch.Tensor] = {}
    handles = []
    for i in chosen:
        if not -len(layers) <= i < len(layers):
            raise IndexError(f"the {part} has {len(layers)} blocks; block {i} does not exist")
        index = i % len(layers)

        def hook(module: nn.Module, args: tuple, index: int = index) -> None:
            with torch.no_grad():
                captured[index] = attention_weights(module, args[0]).detach()

        handles.append(layers[index].attn.register_forward_pre_hook(hook))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


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
