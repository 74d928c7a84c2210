"""Randomness as a function of *what* is drawn, not of *when*: keyed generators for training.

Training draws three kinds of random numbers: the order of the images in each epoch, their augmentation and
the masks. Drawn from the global torch RNG they depend on everything else that touched it before (the
DataLoader's prefetching, the number of processes, a resume), so a resumed or a multi-process run cannot
repeat an uninterrupted single-process one. Here each draw gets its own generator, seeded from a key that
names the draw:

    order of epoch e           keyed_generator(seed, e, ORDER)
    augmentation of batch t    keyed_generator(seed, e, t, AUGMENT)   (t: the global batch within epoch e)
    masks of batch t           keyed_generator(seed, e, t, MASK)

A global batch of `batch_size * world_size` images is drawn as a whole and each process takes its rows, so
the union over processes of step t equals the single-process batch t of the same global size, bit for bit.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Callable

import torch

# Streams: one per kind of draw, so that the same (seed, epoch, batch) never gives two uses the same numbers.
ORDER, AUGMENT, MASK, STEP, FIXED = 0, 1, 2, 3, 4


def key_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of integers (blake2b of their 64-bit encoding): the same on every process,
    machine and Python version, and unrelated for neighbouring keys (unlike seed + epoch)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(keys)}q", *(int(k) for k in keys)), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keyed_generator(*keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `key_seed(*keys)`."""
    return torch.Generator().manual_seed(key_seed(*keys))


@dataclass(frozen=True)
class BatchKey:
    """Which batch this is: global batch `index` of `epoch` under `seed`, and this process's share of it.

    The global batch has `batch_size * world_size` rows; process `rank` holds rows
    [rank * batch_size, (rank + 1) * batch_size).
    """

    seed: int
    epoch: int
    index: int
    batch_size: int
    rank: int = 0
    world_size: int = 1

    @property
    def global_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def rows(self) -> slice:
        """This process's rows of the global batch."""
        return slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)

    def seed_for(self, stream: int, *extra: int) -> int:
        return key_seed(self.seed, self.epoch, self.index, stream, *extra)

    def as_tensor(self) -> torch.Tensor:
        """The key as an int64 tensor (6,), how it travels with its batch to the training step (`from_tensor`)."""
        return torch.tensor([self.seed, self.epoch, self.index, self.batch_size, self.rank, self.world_size])

    @classmethod
    def from_tensor(cls, key: torch.Tensor) -> "BatchKey":
        return cls(*(int(v) for v in key.tolist()))

    def generator(self, stream: int) -> torch.Generator:
        """A generator for one kind of draw (AUGMENT, MASK, ...) of this global batch, the same on every process."""
        return torch.Generator().manual_seed(self.seed_for(stream))


# ------------------------------------------------------------------ keyed masking noise
# Masking noise (N, L) is a score per patch, the lowest kept (maelib.masking). A *draw* makes it from a
# generator: draw(rows, generator) -> (rows, L), uniform for random masking or `model.noise_draw(mask_ratio)` for
# the model's own strategy. The helpers below differ only in what the generator is keyed by:
#     seeded_noise(model, n, ratio, seed)    one seed: a figure, a notebook cell
#     fixed_noise(start, n, L, draw=...)     the image's index: validation and evaluation, any batch size
#     batch_noise(key, n, draw)              the training batch (seed, epoch, global batch): resume and DDP

NoiseDraw = Callable[[int, torch.Generator], torch.Tensor]


def uniform_draw(num_patches: int) -> NoiseDraw:
    """Random masking's draw: uniform noise for `num_patches` patches."""
    return lambda rows, generator: torch.rand(rows, num_patches, generator=generator)


def seeded_noise(model, batch: int, mask_ratio: float, seed: int) -> torch.Tensor:
    """Noise from the model's masking strategy and one seed, on the model's device. -> (N, L), lowest kept.
    With random masking, the same seed at a higher ratio hides a superset of the patches (masks nest)."""
    device = next(model.parameters()).device
    return model.make_noise(batch, mask_ratio, device=device, generator=torch.Generator().manual_seed(seed))


def fixed_noise(start: int, n: int, num_patches: int, seed: int = 0, chunk: int = 256,
                draw: NoiseDraw | None = None) -> torch.Tensor:
    """Rows start..start+n of an endless table of masking noise (rows, num_patches), the same for every call:
    row i is image i's, whatever the batch size or the number of processes. Drawn in keyed chunks of `chunk`
    rows, so a batch costs at most a chunk more than its own rows. `draw` makes one chunk: uniform noise (random
    masking) by default, the model's strategy with `model.noise_draw(mask_ratio)`. -> (n, num_patches)"""
    if n <= 0:
        return torch.empty(0, num_patches)
    draw = draw or uniform_draw(num_patches)
    first, last = start // chunk, (start + n - 1) // chunk
    table = torch.cat([draw(chunk, keyed_generator(seed, c, num_patches, FIXED)).cpu() for c in range(first, last + 1)])
    offset = start - first * chunk
    return table[offset : offset + n]


def batch_noise(key: BatchKey, n: int, draw: NoiseDraw) -> torch.Tensor:
    """This process's rows of the masking noise of training batch `key`: the whole global batch is drawn from the
    key's MASK generator and rows `key.rows` kept, so 1 or N processes mask image i of batch t alike. -> (n, L)"""
    if n != key.batch_size:
        raise RuntimeError(f"a training batch of {n} images, but its sampler makes batches of {key.batch_size}: "
                           "the masks are keyed by the sampler's batches, so feed the module the sampler's batches")
    return draw(key.global_size, key.generator(MASK))[key.rows]
