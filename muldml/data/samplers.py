"""Batch samplers for batch-hard mining."""
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
