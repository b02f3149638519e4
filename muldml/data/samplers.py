"""Batch samplers: P×K batches for batch-hard mining, and global batches shared out to the
processes of a distributed run with one augmentation seed per image.

Every process draws the same global batches from a generator seeded alike, keeps its own
contiguous share (B / world images) and augments each image from the image's own seed. So
the images of a global batch, crops and flips included, are the same for any number of
processes and any number of loader workers: a run resumed with another world size that
keeps the global batch sees the same data.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from muldml.errors import UserError


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of exactly ``batch_size`` = P·K images: P class slots of K images each, so
    that batch-hard mining finds a positive for every anchor.

    Each slot's class is drawn with probability proportional to the class's size (with
    replacement: a class may fill several slots, so 3 classes still fill P = 24 slots), and
    a class with m slots gives m·K distinct images while it has that many (else some repeat).
    So every image is drawn num_batches·batch_size/len(labels) ≈ 1 times per epoch in
    expectation, whatever the class balance. There are len(labels) // batch_size batches
    (at least one).

    Raises UserError when batch_size is not a multiple of K, when P < 2 or when fewer than
    two classes exist (no negatives).
    """

    def __init__(self, labels: Sequence[int], batch_size: int, k: int, generator: torch.Generator) -> None:
        if k < 2:
            raise UserError(f"pk_samples must be >= 2 (each anchor needs a positive), got {k}")
        if batch_size % k:
            raise UserError(f"batch_size {batch_size} is not a multiple of pk_samples {k} (P·K must equal the batch)")
        if batch_size // k < 2:
            raise UserError(f"batch_size {batch_size} holds fewer than 2 classes of pk_samples {k} (no negatives)")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise UserError(f"the P×K sampler needs at least 2 classes, got {len(classes)}")
        self.by_class = [torch.tensor([i for i, y in enumerate(labels) if y == c]) for c in classes]
        self.weights = torch.tensor([len(m) for m in self.by_class], dtype=torch.float64)
        self.k, self.p = k, batch_size // k
        self.num_batches = max(1, len(labels) // batch_size)
        self.generator = generator

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.num_batches):
            slots = torch.multinomial(self.weights, self.p, replacement=True, generator=self.generator)
            batch: list[int] = []
            for c, m in zip(*torch.unique(slots, return_counts=True)):
                members, need = self.by_class[int(c)], int(m) * self.k
                if len(members) >= need:
                    pick = torch.randperm(len(members), generator=self.generator)[:need]
                else:
                    pick = torch.randint(len(members), (need,), generator=self.generator)
                batch += members[pick].tolist()
            yield batch


def random_batches(num_samples: int, batch_size: int, generator: torch.Generator,
                   drop_last: bool) -> torch.utils.data.BatchSampler:
    """Global batches of a random permutation (each image once per epoch)."""
    return torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(range(num_samples), generator=generator),
                                         batch_size, drop_last)


class ShardedBatches(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """This process's share of each global batch, as (index, augmentation seed) keys.

    The global batch is shuffled (so P×K class blocks spread over processes), every image
    gets a seed, and process `rank` of `world` keeps the rank-th contiguous share. A global
    batch must split evenly (UserError otherwise).
    """

    def __init__(self, batches, generator: torch.Generator, rank: int = 0, world: int = 1) -> None:
        self.batches, self.generator, self.rank, self.world = batches, generator, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            if len(batch) % self.world:
                raise UserError(f"a batch of {len(batch)} images does not split over {self.world} processes")
            order = torch.randperm(len(batch), generator=self.generator).tolist()
            seeds = torch.randint(1 << 62, (len(batch),), generator=self.generator).tolist()
            share = len(batch) // self.world
            keys = [(batch[i], seed) for i, seed in zip(order, seeds)]
            yield keys[self.rank * share : (self.rank + 1) * share]


class SeededDataset(torch.utils.data.Dataset):
    """Items keyed by (index, seed): the wrapped item, drawn with torch's RNG seeded by `seed`
    (the caller's RNG is left as it was). Makes augmentation independent of which process
    or loader worker loads the image."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
