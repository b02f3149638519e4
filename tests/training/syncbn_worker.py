"""One process of the BatchNorm equality check (tests/training/test_distributed.py).

Usage: python syncbn_worker.py RANK WORLD PORT OUT_DIR. A network with BatchNorm in train
mode takes one step under DDP on this process's share of a fixed global batch, with global
mining, once with --sync-bn's conversion and once without; rank 0 also computes one process
on the whole batch and saves everything for the test to compare.
"""
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from muldml.losses import MultiThresholdTripletLoss
from muldml.model import NetOutput
from muldml.training.distributed import sync_batchnorm
from muldml.training.loop import train_step


class BatchNormNet(nn.Module):
    """feature → BatchNorm (train mode: couples the samples of a batch) → embedding → classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Linear(12, 24), nn.BatchNorm1d(24), nn.Tanh())
        self.embedding = nn.Linear(24, 3 * 8)
        self.classifier = nn.Linear(3 * 8, 4)

    def forward(self, x):
        embedding = self.embedding(self.features(x))
        return NetOutput(embedding, self.classifier(embedding))


def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(16, 12, generator=gen, dtype=torch.float64), torch.randint(0, 4, (16,), generator=gen)


def one_step(model, x, labels):
    loss = MultiThresholdTripletLoss(margins=[0.2, 0.5, 0.8], slice_dim=8, backend="torch")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves the weights, grads stay
    model.train()
    step = train_step(model, loss, x, labels, optimizer)
    module = model.module if hasattr(model, "module") else model
    bn = module.features[1]
    return {"loss": step.loss, "grads": [p.grad.clone() for p in module.parameters()],
            "running": [bn.running_mean.clone(), bn.running_var.clone()]}


def main():
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    x, labels = batch()
    share = len(x) // world
    mine = slice(rank * share, (rank + 1) * share)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    for synced in (True, False):
        net = BatchNormNet().double()
        if synced:
            net = sync_batchnorm(net, torch.device("cpu"))
        results[synced] = one_step(nn.parallel.DistributedDataParallel(net), x[mine], labels[mine])
    dist.destroy_process_group()
    if rank == 0:
        torch.save({"ddp": results, "single": one_step(BatchNormNet().double(), x, labels)},
                   os.path.join(out, "results.pt"))


if __name__ == "__main__":
    main()
