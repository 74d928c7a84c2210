"""The training order: a seeded permutation per epoch, cut into global batches shared out over processes and
resumable mid-epoch; seeded subsets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from ..rng import ORDER, BatchKey, keyed_generator


class KeyedBatch(list):
    """A list of dataset indices that knows which batch it is: `key`, a `BatchKey`."""

    def __init__(self, indices: Sequence[int], key: BatchKey) -> None:
        super().__init__(indices)
        self.key = key


class EpochOrder(Sampler[int]):
    """The order of the images in each epoch: a permutation of range(num_samples) drawn from (seed, epoch), or
    range(num_samples) itself without `shuffle`. `set_epoch` picks the epoch (Lightning calls it on
    `loader.batch_sampler.sampler` at the start of every epoch)."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples, self.seed, self.shuffle, self.epoch = num_samples, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self, epoch: int | None = None) -> torch.Tensor:
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=keyed_generator(self.seed, epoch, ORDER))

    def __iter__(self):
        return iter(self.permutation().tolist())

    def __len__(self) -> int:
        return self.num_samples


class ResumableBatchSampler:
    """The training order: a seeded permutation per epoch (`EpochOrder`), cut into global batches shared out over
    processes, resumable in the middle of an epoch.

    Epoch e visits the images in the order of a permutation drawn from (seed, e). Global batch t is positions
    [t * G, (t + 1) * G) of it, G = batch_size * world_size, and process `rank` takes positions
    [rank * batch_size, (rank + 1) * batch_size) of each, so the union over processes of step t is the
    single-process batch t of size G. The incomplete last global batch is dropped. Each batch is a `KeyedBatch`
    whose `BatchKey` the dataset draws the augmentation from (and the training module the masks).

    Resume: `state_dict()` says how many batches of which epoch are done; after `load_state_dict()` the next
    pass over that epoch starts after them. The count comes from `progress`, a callable returning (epoch,
    batches done) -- `MAEDataModule` reads Lightning's loop counters, which count batches *trained*, not the
    ones that DataLoader workers fetched ahead -- or, without it, from the batches this sampler yielded.
    Under Lightning use `Trainer(use_distributed_sampler=False)` with several processes (the maelib CLI's
    default): this sampler does the sharding, and Lightning cannot put a DistributedSampler inside it.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, progress: Callable[[], tuple[int, int]] | None = None) -> None:
        if num_samples < 0 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need num_samples >= 0, batch_size >= 1 and 0 <= rank < world_size; got "
                             f"{num_samples}, {batch_size}, rank {rank} of {world_size}")
        self.sampler = EpochOrder(num_samples, seed, shuffle)
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.progress = rank, world_size, progress
        self._resume: tuple[int, int] | None = None  # (epoch, batches done): where the next pass over it starts
        self._yielded = 0

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        """Batches per epoch (for each process)."""
        return self.num_samples // self.global_batch_size

    def key(self, epoch: int, index: int) -> BatchKey:
        """The key of global batch `index` of `epoch`, as this process sees it."""
        return BatchKey(self.seed, epoch, index, self.batch_size, self.rank, self.world_size)

    def __iter__(self):
        epoch = self.epoch  # read when iteration starts, after set_epoch / load_state_dict
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        order, g, b = self.sampler.permutation(epoch), self.global_batch_size, self.batch_size
        self._yielded = start
        for t in range(start, len(self)):
            first = t * g + self.rank * b
            self._yielded = t + 1
            yield KeyedBatch(order[first : first + b].tolist(), self.key(epoch, t))
        if self._resume is not None and self._resume[0] == epoch:
            self._resume = None  # that epoch is done: another pass over it is a whole one

    def state_dict(self) -> dict:
        epoch, done = self.progress() if self.progress is not None else (self.epoch, self._yielded)
        return {"epoch": int(epoch), "batches_done": int(done), "seed": self.seed, "num_samples": self.num_samples,
                "global_batch_size": self.global_batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (see `state_dict`): the next pass over its epoch skips the batches done."""
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        saved = (state.get("seed"), state.get("num_samples"), state.get("global_batch_size"))
        now = (self.seed, self.num_samples, self.global_batch_size)
        if done and saved != now:
            raise ValueError(
                f"the checkpoint was written {done} batches into epoch {epoch} of a run with seed={saved[0]}, "
                f"{saved[1]} training images and a global batch of {saved[2]} (batch_size x processes); this run "
                f"has seed={now[0]}, {now[1]} images and {now[2]}, so it cannot continue that epoch. Resume with "
                "the same --data.seed, --data.train_subset, --data.batch_size and number of devices, or from a "
                "checkpoint written at the end of an epoch.")
        if done >= len(self):  # written at the end of an epoch: go on with the next one
            epoch, done = epoch + 1, 0
        self.set_epoch(epoch)  # Lightning sets it again before the epoch starts; this covers loaders iterated earlier
        self._resume, self._yielded = (epoch, done), done


class _KeyedFetch(Dataset):
    """`dataset`, fetched a `KeyedBatch` at a time, handing the batch's key on to the collate beside its items."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: KeyedBatch) -> tuple[list, BatchKey]:
        fetch = getattr(self.dataset, "__getitems__", None)
        items = fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]
        return items, indices.key


def collate_keyed(fetched: tuple[list, BatchKey]) -> tuple[torch.Tensor, ...]:
    """(items, key) -> (images, labels, key as an int64 tensor (6,)): the batch carries its key to the training
    step (`BatchKey.from_tensor`), from the one place that made it, the sampler."""
    items, key = fetched
    return (*default_collate(items), key.as_tensor())


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `ResumableBatchSampler`: each batch is (images, labels, key), the key being the
    `BatchKey` that its augmentation was drawn from and that the training module draws its masks from. Its
    `state_dict`/`load_state_dict` (the sampler's) tell Lightning that it can resume in the middle of an epoch."""

    def __init__(self, dataset: Dataset, *, batch_sampler: ResumableBatchSampler, **kwargs) -> None:
        super().__init__(_KeyedFetch(dataset), batch_sampler=batch_sampler, collate_fn=collate_keyed, **kwargs)

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)



def _seeded_indices(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _subset_indices(n: int, size: int | None, seed: int, what: str) -> torch.Tensor | None:
    """A seeded random `size` of range(n), in order; None for all."""
    if size is None:
        return None
    if not 0 < size <= n:
        raise ValueError(f"{what}={size} must be between 1 and the {n} images available")
    return _seeded_indices(n, seed)[:size].sort().values


def random_subset_loader(loader: DataLoader, n: int | None, seed: int = 0) -> DataLoader:
    """The same evaluation loader (batch size, workers) over a seeded random `n` of its dataset, kept in dataset
    order; `loader` itself when n is None or covers the dataset. Random across the whole dataset rather than its
    first n: an image folder lists its images class by class, so its first 5,000 ImageNet images span 4 classes."""
    size = len(loader.dataset)
    if n is None or n >= size:
        return loader
    idx = _subset_indices(size, n, seed, "the subset size")
    return DataLoader(Subset(loader.dataset, idx.tolist()), batch_size=loader.batch_size, shuffle=False,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory)


class ShardSampler(Sampler[int]):
    """Process `rank`'s share of an evaluation set: indices rank, rank + world_size, ... of range(num_samples), in
    order, none repeated and none padded (the shares differ by at most one image), so that metrics summed over
    processes count every image exactly once (`MAEDataModule(distributed_eval=True)`)."""

    def __init__(self, num_samples: int, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))
