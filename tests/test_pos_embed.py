import math

import pytest
import torch

from maelib.pos_embed import resize_pos_embed, sincos_2d


def test_sincos_values():
    dim, grid = 16, 3
    emb = sincos_2d(dim, grid)  # (1, 1 + 9, 16)
    assert emb.shape == (1, 10, dim)
    assert torch.all(emb[0, 0] == 0)  # cls token
    row, col = 1, 2
    e = emb[0, 1 + row * grid + col]
    omega = [1 / 10000 ** (k / 4) for k in range(4)]
    # first half: the column; second half: the row (the official layout); each half is [sin, cos]
    expected = [math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
    expected += [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega]
    assert torch.allclose(e, torch.tensor(expected), atol=1e-6)


def test_sincos_matches_transformers():
    modeling = pytest.importorskip("transformers.models.vit_mae.modeling_vit_mae")
    ref = modeling.build_2d_sinusoidal_position_embedding(height=14, width=14, embed_dim=768, cls_token=True)
    # transformers builds [row | column] and swaps the halves to match the original checkpoints
    ref = torch.cat([ref[..., 384:], ref[..., :384]], dim=-1)
    assert torch.allclose(sincos_2d(768, 14)[0], ref, atol=1e-6)


def test_resize_pos_embed_keeps_prefix_and_orientation():
    emb = sincos_2d(32, 4)
    assert resize_pos_embed(emb, 4) is emb
    bigger = resize_pos_embed(emb, 8)
    assert bigger.shape == (1, 65, 32)
    assert torch.equal(bigger[:, :1], emb[:, :1])
    # an embedding that varies along columns only must still vary along columns only (no transposition)
    cols = torch.arange(4.0).repeat(4)  # row-major grid, value = column index
    field = torch.cat([torch.zeros(1, 1, 2), torch.stack([cols, -cols], -1).unsqueeze(0)], dim=1)  # (1, 17, 2)
    grid = resize_pos_embed(field, 6)[0, 1:].reshape(6, 6, 2)
    assert torch.allclose(grid, grid[:1].expand(6, -1, -1))  # every row identical
    assert torch.all(grid[0, 1:, 0] > grid[0, :-1, 0])  # increasing left to right
