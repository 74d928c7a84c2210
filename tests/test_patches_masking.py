"""Invariants of patchify/unpatchify and of masking."""

import pytest
import torch

from maelib.masking import MASKING, block_noise, check_mask_ratio, grid_noise, num_kept, random_masking, random_noise
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
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"mask_ratio must be a number in \[0, 1\)"):
            check_mask_ratio(bad)
    with pytest.raises(TypeError, match="mask_ratio must be a number, got '0.75' \\(str\\): write mask_ratio=0.75"):
        check_mask_ratio("0.75")


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


def _beit_reference(grid: int, target: int, rng, min_block: int = 4, min_aspect: float = 0.3):
    """BEiT's Algorithm 1, one image at a time, as its paper writes it (an independent check of the statistics)."""
    import math

    hidden = [[False] * grid for _ in range(grid)]
    count = 0
    while count < target:
        for _ in range(10):  # BEiT's attempts per block
            left = target - count
            area = rng.uniform(min(min_block, left), left)
            aspect = math.exp(rng.uniform(math.log(min_aspect), math.log(1 / min_aspect)))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if h > grid or w > grid or h < 1 or w < 1:
                continue
            top, lft = rng.randint(0, grid - h), rng.randint(0, grid - w)
            new = sum(not hidden[r][c] for r in range(top, top + h) for c in range(lft, lft + w))
            if 0 < new <= left:
                for r in range(top, top + h):
                    for c in range(lft, lft + w):
                        hidden[r][c] = True
                count += new
                break
    return torch.tensor(hidden)


def _components(hidden: torch.Tensor) -> int:
    """Connected regions (4-neighbour) of a (G, G) boolean mask."""
    seen, grid, n = set(), hidden.shape[0], 0
    for start in zip(*torch.nonzero(hidden, as_tuple=True)):
        start = (int(start[0]), int(start[1]))
        if start in seen:
            continue
        n, stack = n + 1, [start]
        seen.add(start)
        while stack:
            r, c = stack.pop()
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= rr < grid and 0 <= cc < grid and hidden[rr, cc] and (rr, cc) not in seen:
                    seen.add((rr, cc))
                    stack.append((rr, cc))
    return n


@pytest.mark.parametrize("grid, ratio", [(7, 0.75), (14, 0.4), (14, 0.75), (14, 0.9)])
def test_block_masking_exact_count_and_reproducible(grid, ratio):
    a = block_noise(512, grid, ratio, generator=torch.Generator().manual_seed(3))
    b = block_noise(512, grid, ratio, generator=torch.Generator().manual_seed(3))
    c = block_noise(512, grid, ratio, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    hidden = a >= 1  # hidden patches carry noise in [1, 2)
    assert torch.all(hidden.sum(1) == grid * grid - num_kept(grid * grid, ratio))
    _, mask, _ = random_masking(torch.zeros(512, grid * grid, 1), ratio, a)
    assert torch.equal(mask.bool(), hidden)  # random_masking hides exactly the blocks


def test_block_masking_statistics_match_beits_algorithm():
    """Same distribution as BEiT's per-image loop (ViT-B's 14 x 14 grid, 40% as in BEiT): hidden patches form a
    few large regions, where random masking scatters them; every position gets hidden sometimes."""
    import random

    n, grid, ratio = 300, 14, 0.4
    target = grid * grid - num_kept(grid * grid, ratio)
    ours = (block_noise(n, grid, ratio, generator=torch.Generator().manual_seed(0)) >= 1).reshape(n, grid, grid)
    rng = random.Random(0)
    ref = torch.stack([_beit_reference(grid, target, rng) for _ in range(n)])
    scattered = (random_noise(n, grid, ratio, generator=torch.Generator().manual_seed(0))
                 .argsort(1).argsort(1) >= num_kept(grid * grid, ratio)).reshape(n, grid, grid)

    def stats(m):
        neighbours = (m[:, :, 1:] == m[:, :, :-1]).float().mean().item()
        components = sum(_components(x) for x in m[:60]) / 60
        return neighbours, components

    (ours_nb, ours_cc), (ref_nb, ref_cc), (rand_nb, rand_cc) = stats(ours), stats(ref), stats(scattered)
    assert abs(ours_nb - ref_nb) < 0.03 and abs(ours_cc - ref_cc) < 0.3 * ref_cc + 0.5
    assert ours_cc < rand_cc / 3 and ours_nb > rand_nb + 0.15
    frequency, ref_frequency = ours.float().mean(0), ref.float().mean(0)  # (grid, grid): how often hidden
    assert frequency.min() > 0 and (frequency - ref_frequency).abs().mean() < 0.05  # BEiT's centre bias, too
    assert abs(ours.float().mean().item() - target / grid**2) < 1e-6


def test_block_masking_is_vectorised_over_the_batch():
    """A batch of 4096 on ViT-B's grid takes a bounded number of rounds of batched tensor operations (one
    block per image per round), not a Python loop per image. (Its speed is in benchmarks/, not here.)"""
    calls = []
    original = torch.rand

    def counting_rand(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "rand", counting_rand)
        noise = block_noise(4096, 14, 0.75, generator=torch.Generator().manual_seed(0))
    assert noise.shape == (4096, 196) and len(calls) < 200  # rounds, whatever the batch
