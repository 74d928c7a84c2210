"""Attention weights on demand.

The blocks run timm's fused attention (scaled_dot_product_attention), which never materialises the
attention matrix. To look at it, `capture_attention` hooks the chosen blocks for the duration of a
`with` statement and recomputes softmax(q k^T / sqrt(d)) from each block's own input. Outside the `with`
nothing is hooked, so the normal path costs nothing extra.

    with capture_attention(model) as attn:
        model.forward_features(imgs)
    attn[11]  # (N, heads, 1+L, 1+L) for block 11
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
import torch.nn as nn


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
