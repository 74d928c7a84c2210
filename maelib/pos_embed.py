"""Fixed 2-D sine-cosine position embeddings, and resizing position embeddings to another grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """positions: (M,) -> (M, embed_dim): [sin(pos * w_k), cos(pos * w_k)], w_k = 1 / 10000^(2k / embed_dim)."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even for sin-cos embeddings, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (D/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (M, D/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(embed_dim: int, grid_size: int, cls_token: bool = True) -> torch.Tensor:
    """-> (1, [1 +] grid_size**2, embed_dim), float32; half the channels encode the row, half the column.

    Same values as the official MAE code: a zero vector for the cls token, then patches in row-major order.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for 2-D sin-cos embeddings, got {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (G, G) each
    # The official code builds the grid as meshgrid(w, h) and embeds its first plane first: that plane is
    # the column index, so the first half of the channels encodes the column and the second half the row.
    emb = torch.cat([sincos_1d(embed_dim // 2, cols.flatten()), sincos_1d(embed_dim // 2, rows.flatten())], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubically resize (1, prefix + G*G, D) position embeddings to (1, prefix + new_grid**2, D).

    Used when weights trained at one image size are loaded at another (as the official fine-tuning code does).
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old_grid = int(round(grid.shape[1] ** 0.5))
    if old_grid * old_grid != grid.shape[1]:
        raise ValueError(f"position embeddings of shape {tuple(pos_embed.shape)} do not form a square grid")
    if old_grid == new_grid:
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()  # (1, D, G, G)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
