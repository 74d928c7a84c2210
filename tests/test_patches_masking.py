"""Invariants of patchify/unpatchify and of masking."""

import pytest
import torch

from maelib.masking import MASKING, block_noise, check_mask_ratio, grid_noise, num_kept, random_masking
from maelib.patches import normalize_patches, patch_stats, patchify, unpatchify


@pytest.mark.parametrize("chans,side,p", [(1, 28, 4), (3, 32, 4), (3, 64, 16), (3, 28, 14)])
def test_patchify_round_trip(chans, side, p):
    imgs = torch.randn(2, chans, side, side)
    patches = patchify(imgs, p)
    assert patches.shape == (2, (side // p) ** 2, p * p * chans)
    assert torch.equal(unpatchify(patches, p, chans), imgs)


def test_patch_layout_is_row_major_channel_last():
    imgs = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    patches = patchify(imgs, 2)
    # patch 1 is the top-right 2x2 block; inside it pixels go (row, col, channel)
    expected = torch.stack([imgs[0, :, r, c] for r in (0, 1) for c in (2, 3)]).flatten()
    assert torch.equal(patches[0, 1], expected)


def test_patchify_rejects_bad_sizes():
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        patchify(torch.zeros(1, 1, 30, 30), 4)
    with pytest.raises(ValueError, match="square"):
        patchify(torch.zeros(1, 1, 28, 32), 4)


def test_normalized_patches_have_zero_mean_unit_variance():
    patches = torch.rand(3, 10, 48) * 5 + 2
    target = normalize_patches(patches)
    assert torch.allclose(target.mean(-1), torch.zeros(3, 10), atol=1e-5)
    assert torch.allclose(target.var(-1), torch.ones(3, 10), atol=1e-3)
    mean, std = patch_stats(patches)
    assert torch.allclose(target * std + mean, patches, atol=1e-5)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_random_masking_keeps_exact_count_and_restores_order(ratio):
    n, length, dim = 4, 49, 8
    x = torch.randn(n, length, dim)
    kept, mask, ids_restore = random_masking(x, ratio)
    keep = num_kept(length, ratio)
    assert kept.shape == (n, keep, dim)
    assert torch.equal(mask.sum(1), torch.full((n,), float(length - keep)))  # exact count in every row
    # gathering [kept, anything] with ids_restore puts the kept tokens back where they came from
    filler = torch.zeros(n, length - keep, dim)
    restored = torch.gather(torch.cat([kept, filler], 1), 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
    visible = (1 - mask).bool()
    assert torch.equal(restored[visible], x[visible])
    assert torch.all(restored[~visible] == 0)


def test_lowest_noise_is_kept_and_same_noise_same_mask():
    x = torch.randn(2, 16, 4)
    noise = torch.rand(2, 16)
    _, mask_a, ids_a = random_masking(x, 0.75, noise)
    _, mask_b, ids_b = random_masking(x, 0.75, noise.clone())
    assert torch.equal(mask_a, mask_b) and torch.equal(ids_a, ids_b)
    lowest4 = noise.argsort(1)[:, :4]
    assert torch.all(mask_a.gather(1, lowest4) == 0)


def test_mask_ratio_checked():
    for bad in (1.0, 1.5, -0.1, "0.75"):
        with pytest.raises(ValueError, match=r"mask_ratio must be a number in \[0, 1\)"):
            check_mask_ratio(bad)


@pytest.mark.parametrize("name", sorted(MASKING))
def test_every_strategy_gives_the_exact_count(name):
    g = torch.Generator().manual_seed(0)
    noise = MASKING[name](8, 7, 0.75, generator=g)
    _, mask, _ = random_masking(torch.zeros(8, 49, 1), 0.75, noise)
    assert torch.all(mask.sum(1) == 49 - num_kept(49, 0.75))


def test_grid_masking_keeps_one_of_each_2x2_cell():
    noise = grid_noise(2, 8, 0.75)
    _, mask, _ = random_masking(torch.zeros(2, 64, 1), 0.75, noise)
    visible = (mask == 0).reshape(2, 8, 8)
    assert visible[:, ::2, ::2].all() and visible.sum() == 2 * 16


def test_block_masking_hides_contiguous_regions():
    g = torch.Generator().manual_seed(1)
    noise = block_noise(16, 14, 0.5, generator=g)
    _, mask, _ = random_masking(torch.zeros(16, 196, 1), 0.5, noise)
    m = mask.reshape(16, 14, 14)
    # hidden patches cluster: far more hidden neighbours than random masking would give (~50%)
    same_right = (m[:, :, 1:] == m[:, :, :-1]).float().mean()
    assert same_right > 0.7
