"""One process of the 2-process equality check (tests/training/test_distributed.py).

Usage: python ddp_worker.py RANK WORLD PORT OUT_DIR. Every process trains one step of a
small network under DDP on its share of a fixed global batch, for each loss backend and
with and without gradient caching; rank 0 also computes one process on the whole batch
(no process group involved) and saves both for the test to compare.
"""
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from muldml.losses import MultiThresholdTripletLoss
from muldml.model import NetOutput
from muldml.training.loop import train_step


class SmallNet(nn.Module):
    """A network without cross-sample coupling (no BatchNorm): feature → embedding → classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Linear(12, 24), nn.Tanh())
        self.embedding = nn.Linear(24, 3 * 8)
        self.classifier = nn.Linear(3 * 8, 4)

    def forward(self, x):
        embedding = self.embedding(self.features(x))
        return NetOutput(embedding, self.classifier(embedding))


def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(16, 12, generator=gen, dtype=torch.float64), torch.randint(0, 4, (16,), generator=gen)


def one_step(model, backend, chunk, x, labels):
    loss = MultiThresholdTripletLoss(margins=[0.2, 0.5, 0.8], slice_dim=8, backend=backend, precision="tf32x3")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves the weights, grads stay
    step = train_step(model, loss, x, labels, optimizer, chunk=chunk)
    module = model.module if hasattr(model, "module") else model
    return {"loss": step.loss, "triplet": loss.last_output.loss.detach(), "num_triplets": loss.last_output.num_triplets,
            "grads": [p.grad.clone() for p in module.parameters()]}


def main():
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    backends = sys.argv[5].split(",")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    x, labels = batch()
    share = len(x) // world
    mine = slice(rank * share, (rank + 1) * share)
    results = {}
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for backend in backends:
        for chunk in (None, 3):
            model = nn.parallel.DistributedDataParallel(SmallNet().double())
            results[backend, chunk] = one_step(model, backend, chunk, x[mine], labels[mine])
    dist.destroy_process_group()
    if rank == 0:
        single = {backend: one_step(SmallNet().double(), backend, None, x, labels) for backend in backends}
        torch.save({"ddp": results, "single": single}, os.path.join(out, "results.pt"))


if __name__ == "__main__":
    main()
