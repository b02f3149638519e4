"""Devices and processes: which device each process trains on, the process group under
torchrun, and the helpers that let rank 0 speak for the run.

Launch: ``torchrun --nproc-per-node K -m muldml train …``. torchrun sets RANK, WORLD_SIZE
and LOCAL_RANK; ``setup`` then joins the default process group (nccl on CUDA, gloo on the
CPU) and gives process r the device cuda:LOCAL_RANK. A plain run is rank 0 of a world of 1.
An elastic restart (torchrun --max-restarts) starts every process again with the same
command; TORCHELASTIC_RESTART_COUNT > 0 then makes the run resume from its checkpoint, and
the process group of each attempt keeps its keys apart in the rendezvous store
(``attempt_store``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from muldml.kernels.triplet.gather import distributed_world
from muldml.errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available here (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


@dataclass
class Processes:
    """This process's place in the run: rank, world size, its device, and whether `setup`
    created the process group (and so must destroy it)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def launch_world() -> int:
    """Processes torchrun launched for this run (WORLD_SIZE; 1 for a plain run), valid outside the group."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_by_torchrun() -> bool:
    return launch_world() > 1


def launch_rank() -> int:
    """This process's rank as torchrun set it (0 for a plain run), valid outside the group."""
    return int(os.environ.get("RANK", "0") or 0)


def restart_count() -> int:
    """How often torchrun restarted this run's processes (0 for a first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def attempt_store(rank: int, world: int) -> dist.Store:
    """The rendezvous store of this attempt: torchrun's TCPStore at MASTER_ADDR:MASTER_PORT,
    under a prefix holding the restart count.

    Why: torchrun's agent creates this store at its first rendezvous and shares it with every
    later round (TORCHELASTIC_USE_AGENT_STORE; torch's own env:// init then adds no per-attempt
    prefix). A restarted process group would read the keys the killed attempt left there: gloo
    connects to the dead worker's old address ("Connection refused") whenever a process reads
    a peer's key before the peer has rewritten it, a race seen after a worker's SIGKILL.
    """
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_store, multi_tenant=not agent_store)
    return dist.PrefixStore(f"muldml/attempt-{restart_count()}", store)


def setup(device_name: str) -> Processes:
    """Join the process group when launched by torchrun (or use the one already set up)
    and pick this process's device. Raises UserError for devices that do not exist."""
    device = resolve_device(device_name)
    if distributed_world() > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
        owns = False
    elif launched_by_torchrun():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=attempt_store(rank, world),
                                rank=rank, world_size=world, device_id=device if device.type == "cuda" else None)
        rank, world, owns = dist.get_rank(), dist.get_world_size(), True
    else:
        return Processes(0, 1, device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    return Processes(rank, world, device, owns)


def teardown(processes: Processes) -> None:
    if processes.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if distributed_world() > 1:
        dist.barrier()


def sum_over_processes(values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all processes (the values themselves in a world of 1)."""
    if distributed_world() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def is_main() -> bool:
    """True in the process that logs, writes checkpoints and reports (rank 0)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class _SumOverProcesses(torch.autograd.Function):
    """Sum of a tensor over processes; its gradient is the sum of the processes' gradients
    (each process's loss depends on every process's rows through the sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are the global batch's, over all processes, for
    the CPU (gloo), where torch's SyncBatchNorm does not run. Mean and biased variance are
    two differentiable all-reduces (sums over processes, so gradients flow to every
    process's rows); the running statistics update as torch's BatchNorm does (unbiased
    variance over the global count). Outside training, or in a world of 1, it is BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed_world() > 1):
            return super().forward(x)
        all_reduce = _SumOverProcesses.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        count = all_reduce(torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype))
        mean = all_reduce(x.sum(dims)) / count
        var = all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), momentum)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """--sync-bn: BatchNorm layers normalise by the global batch's statistics. On CUDA torch's
    SyncBatchNorm; on the CPU GlobalBatchNorm. State-dict keys and values stay the same, so
    checkpoints load either way. Returns the converted model (the same object when possible)."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global(model)


def _to_global(module: torch.nn.Module) -> torch.nn.Module:
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        reference = module.weight if module.affine else module.running_mean
        if reference is not None:
            converted.to(device=reference.device, dtype=reference.dtype)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _to_global(child))
    return module
