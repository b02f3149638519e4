"""Devices and processes: which device a process trains on, and which process speaks.

A single process is rank 0 of a world of one; under torchrun (phase of multi-process
training) every helper here answers for the calling process.
"""
from __future__ import annotations

import torch

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


def is_main() -> bool:
    """True in the process that logs, writes checkpoints and reports (rank 0)."""
    return rank() == 0


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def world_size() -> int:
    return (torch.distributed.get_world_size()
            if torch.distributed.is_available() and torch.distributed.is_initialized() else 1)
