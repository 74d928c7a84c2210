"""Masking: which patches the encoder sees (pure functions).

Every strategy is written as a *noise* generator: a score per patch, lowest scores kept. One function,
`random_masking`, turns any noise into the kept tokens, the binary mask and `ids_restore`, so every
strategy keeps exactly the same number of patches per image and batches stay rectangular.

    noise = MASKING["block"](batch, grid_size, mask_ratio, device=x.device)  # (N, L)
    x_kept, mask, ids_restore = random_masking(x, mask_ratio, noise)

The noise vocabulary: a *strategy* draws noise from a generator (`random_noise`, `block_noise`, `grid_noise`;
`MaskedAutoencoder.make_noise` is the model's configured one, `noise_draw` the same as draw(rows, generator));
a *key* makes it reproducible (`maelib.rng`: `seeded_noise` by one seed, `fixed_noise` by image index,
`batch_noise` by training batch).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .validate import as_real

NoiseFn = Callable[..., torch.Tensor]


def check_mask_ratio(mask_ratio: float) -> float:
    """Masking needs at least one visible patch: the ratio must lie in [0, 1). Real numbers of any kind (numpy,
    0-d tensors) are accepted; returns a Python float."""
    ratio = as_real("mask_ratio", mask_ratio)
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask_ratio must be a number in [0, 1), got {mask_ratio!r}: "
                         "0 shows the encoder every patch, 0.75 is the paper's default")
    return ratio


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """How many of `num_patches` stay visible (at least one), as in the paper's code: int(L * (1 - ratio))."""
    return max(1, int(num_patches * (1 - mask_ratio)))


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the patches with the lowest noise, per sample.

    x: (N, L, D) patch tokens; noise: (N, L), uniform [0, 1) if None.
    Returns x_kept: (N, L_keep, D), mask: (N, L) with 0 = kept and 1 = removed, ids_restore: (N, L)
    such that gathering [kept tokens, mask tokens] with ids_restore puts every token back in place.
    """
    n, num_patches, dim = x.shape
    len_keep = num_kept(num_patches, mask_ratio)
    if noise is None:
        noise = torch.rand(n, num_patches, device=x.device)
    elif noise.shape != (n, num_patches):
        raise ValueError(f"noise must have shape {(n, num_patches)} (batch, patches), got {tuple(noise.shape)}")

    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the first len_keep are kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # position of each patch in the shuffled order
    ids_keep = ids_shuffle[:, :len_keep]  # (N, L_keep): `kept_indices(noise, mask_ratio)`
    x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))  # (N, L_keep, D)
    mask = (ids_restore >= len_keep).to(x.dtype)  # (N, L): 1 where the patch was shuffled past len_keep
    return x_kept, mask, ids_restore


def kept_indices(noise: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """The patches `random_masking` keeps for this noise (N, L): their indices (N, L_keep), lowest noise first,
    which is the order of the encoder's tokens 1..L_keep."""
    return torch.argsort(noise, dim=1)[:, : num_kept(noise.shape[1], mask_ratio)]


def random_noise(
    batch: int, grid_size: int, mask_ratio: float, *, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The paper's default: every patch equally likely to be hidden, independently per image. -> (N, L)"""
    if generator is None:
        return torch.rand(batch, grid_size * grid_size, device=device)
    return torch.rand(batch, grid_size * grid_size, generator=generator).to(device)  # a seeded (CPU) generator


def block_noise(
    batch: int,
    grid_size: int,
    mask_ratio: float,
    *,
    device=None,
    generator: torch.Generator | None = None,
    min_block: int = 4,
    min_aspect: float = 0.3,
    max_rounds: int = 1000,
) -> torch.Tensor:
    """Block-wise masking as in BEiT (Bao et al. 2021, Algorithm 1): hide rectangles until the budget is spent.
    -> (N, L)

    Each round draws, for every image still under its budget, one block: an area uniform in
    [min(min_block, left), left] patches (left: what remains of the budget), an aspect ratio log-uniform in
    [min_aspect, 1 / min_aspect] and a random position. The block is kept only if it hides at least one new
    patch and no more than `left`, so blocks never overshoot and no hole is punched into one afterwards; every
    image ends with exactly the count of `random_masking`. Vectorised over the batch: a round is a few tensor
    operations on (N, grid, grid), whatever N. Hidden patches get noise in [1, 2), visible ones [0, 1).
    """
    num_patches = grid_size * grid_size
    target = num_patches - num_kept(num_patches, mask_ratio)
    hidden = torch.zeros(batch, grid_size, grid_size, dtype=torch.bool)
    count = torch.zeros(batch, dtype=torch.long)  # hidden patches per image so far
    rows = torch.arange(grid_size)
    log_low, log_high = math.log(min_aspect), math.log(1 / min_aspect)
    for _ in range(max_rounds):
        todo = torch.nonzero(count < target).flatten()  # the images still under budget
        if len(todo) == 0:
            break
        left = target - count[todo]
        u = torch.rand(len(todo), 4, generator=generator)  # area, aspect, top, left: one block per image
        low = torch.minimum(left, torch.full_like(left, min_block)).float()
        area = low + (left.float() - low) * u[:, 0]
        aspect = torch.exp(log_low + (log_high - log_low) * u[:, 1])
        h = torch.sqrt(area * aspect).round().clamp(1, grid_size).long()  # (todo,)
        w = torch.sqrt(area / aspect).round().clamp(1, grid_size).long()
        top = (u[:, 2] * (grid_size - h + 1)).long()  # uniform in [0, grid - h]
        lft = (u[:, 3] * (grid_size - w + 1)).long()
        in_rows = (rows[None] >= top[:, None]) & (rows[None] < (top + h)[:, None])  # (todo, grid)
        in_cols = (rows[None] >= lft[:, None]) & (rows[None] < (lft + w)[:, None])
        block = in_rows[:, :, None] & in_cols[:, None, :]  # (todo, grid, grid)
        new = (block & ~hidden[todo]).flatten(1).sum(1)  # patches each block would add
        accept = (new > 0) & (new <= left)
        chosen = todo[accept]
        hidden[chosen] = hidden[chosen] | block[accept]
        count[chosen] += new[accept]
    short = target - count
    if (short > 0).any():  # not reached with the defaults; 1-patch blocks finish what the rounds left
        for i in torch.nonzero(short > 0).flatten().tolist():
            free = torch.nonzero(~hidden[i].flatten()).flatten()
            pick = free[torch.randperm(len(free), generator=generator)[: int(short[i])]]
            hidden[i].view(-1)[pick] = True
    noise = torch.rand(batch, num_patches, generator=generator) + hidden.flatten(1).float()
    return noise.to(device)


def grid_noise(
    batch: int, grid_size: int, mask_ratio: float, *, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Regular grid masking: keep one patch of every s x s cell (s = 2 at 75%), hide the rest. -> (N, L)

    When the grid does not give the exact count, the difference is made up at random.
    """
    stride = max(1, round((1 / (1 - mask_ratio)) ** 0.5))
    rows = torch.arange(grid_size)
    on_grid = ((rows[:, None] % stride == 0) & (rows[None, :] % stride == 0)).flatten()  # (L,)
    noise = torch.rand(batch, grid_size * grid_size, generator=generator) + (~on_grid).float()
    return noise.to(device)


def chosen_noise(hidden: torch.Tensor) -> tuple[float, torch.Tensor]:
    """A mask chosen by hand, as (mask_ratio, noise) for `random_masking`: exactly the patches where `hidden`
    (L,) or (N, L) is True are hidden. -> (ratio, noise (N, L))

    Hidden patches get noise in [1, 2), visible ones [0, 1) in index order (deterministic). The ratio sits half a
    patch below hidden / L, so `int(L * (1 - ratio))` keeps exactly the visible count (hidden / L itself can lose
    one to rounding). At least one patch must stay visible; every row must hide the same number.
    """
    hidden = torch.as_tensor(hidden, dtype=torch.bool)
    hidden = hidden[None] if hidden.ndim == 1 else hidden
    counts = hidden.sum(1)
    num_patches = hidden.shape[1]
    if hidden.ndim != 2 or num_patches == 0 or not (counts == counts[0]).all():
        raise ValueError(f"hidden must be (L,) or (N, L) booleans hiding the same number per row, got shape "
                         f"{tuple(hidden.shape)} with counts {counts.tolist()}")
    if int(counts[0]) >= num_patches:
        raise ValueError(f"all {num_patches} patches are hidden: leave at least one visible for the encoder")
    ratio = max(0.0, (int(counts[0]) - 0.5) / num_patches)
    order = torch.arange(num_patches, dtype=torch.float32) / num_patches  # [0, 1): ties broken by index
    return ratio, hidden.float() + order


MASKING: dict[str, NoiseFn] = {"random": random_noise, "block": block_noise, "grid": grid_noise}
