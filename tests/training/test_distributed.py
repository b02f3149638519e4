"""Global batch-hard mining under DDP equals one process on the concatenated batch.

Two gloo processes (CPU) each hold half of a 16-row batch; the triplet loss all-gathers the
embeddings, and after DDP's gradient averaging the loss and every parameter gradient must
equal one process on the whole batch, for every backend that runs on the CPU (triton via
its interpreter), with and without gradient caching.
"""
import os
import socket
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run_workers(tmp_path, backends, world=2):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(HERE)), HERE]),
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "ddp_worker.py"), str(r), str(world), port,
                               str(tmp_path), ",".join(backends)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for r in range(world)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-3000:]
    return torch.load(tmp_path / "results.pt", weights_only=True)


def test_two_process_global_mining_equals_one_process(tmp_path):
    backends = ["torch", "reference", "triton"]
    results = run_workers(tmp_path, backends)
    for backend in backends:
        single = results["single"][backend]
        assert float(single["loss"]) > 0.1  # a real loss: triplets active
        for chunk in (None, 3):
            ddp = results["ddp"][(backend, chunk)]
            # The triplet loss is the global batch's: K counted once over both processes.
            assert int(ddp["num_triplets"]) == int(single["num_triplets"]) > 8
            assert float(ddp["triplet"]) == pytest.approx(float(single["triplet"]), abs=1e-6)
            for got, expected in zip(ddp["grads"], single["grads"]):
                assert torch.allclose(got, expected, atol=1e-6, rtol=0), (backend, chunk, (got - expected).abs().max())


def test_sync_bn_two_processes_equal_one_with_batchnorm_in_train_mode(tmp_path):
    """--sync-bn: BatchNorm in train mode over the global batch, so 2 gloo processes (global
    mining, DDP) equal one process on the whole batch; without it they do not."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(HERE)), HERE]),
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "syncbn_worker.py"), str(r), "2", port, str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-3000:]
    results = torch.load(tmp_path / "results.pt", weights_only=True)
    single, synced, plain = results["single"], results["ddp"][True], results["ddp"][False]
    assert float(single["loss"]) > 0.1
    for got, expected in zip(synced["grads"], single["grads"]):
        assert torch.allclose(got, expected, atol=1e-9, rtol=1e-7), (got - expected).abs().max()
    for got, expected in zip(synced["running"], single["running"]):
        assert torch.allclose(got, expected, atol=1e-12, rtol=1e-10)
    # Per-process statistics (no --sync-bn) give other gradients: the check above can fail.
    assert max(float((g - e).abs().max()) for g, e in zip(plain["grads"], single["grads"])) > 1e-3
