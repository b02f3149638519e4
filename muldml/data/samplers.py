"""Batch samplers for batch-hard mining."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of P classes × K images, so that batch-hard mining always finds positives.

    P = batch_size // K classes drawn without replacement (all of them if fewer), K images
    each (with replacement when a class has fewer); len(dataset) // batch_size batches.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, k: int, generator: torch.Generator) -> None:
        self.by_class = [torch.tensor([i for i, y in enumerate(labels) if y == c])
                         for c in sorted(set(labels))]
        self.k, self.p = k, max(1, batch_size // k)
        self.num_batches = max(1, len(labels) // batch_size)
        self.generator = generator

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.num_batches):
            classes = torch.randperm(len(self.by_class), generator=self.generator)[: self.p]
            batch = []
            for c in classes.tolist():
                members = self.by_class[c]
                if len(members) >= self.k:
                    pick = torch.randperm(len(members), generator=self.generator)[: self.k]
                else:
                    pick = torch.randint(len(members), (self.k,), generator=self.generator)
                batch += members[pick].tolist()
            yield batch
