"""`torchrun --nproc-per-node 2 -m muldml train` on the demo faces (CPU, gloo): its
resumption in one process with the same global batch (--sync-bn), and an elastic restart
after a worker is killed with SIGKILL."""
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from muldml.cli import main
from muldml.data.synthetic import write_demo_dataset

TINY = ["--epochs", "1", "--batch-size", "14", "--image-size", "32", "--slice-dim", "8", "--tau-min", "0.25",
        "--tau-max", "0.45", "--lr", "0.001", "--num-workers", "0", "--quiet"]


def torchrun(*args, nodes: int = 0):
    """Run torchrun with 2 CPU processes; on a timeout its whole process group is killed
    (workers included), so no process outlives the test. nodes: instead, that many
    launchers of one process each on localhost, meeting by c10d rendezvous as separate
    machines would (a list of their results)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if nodes:
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
        where = ["--nnodes", str(nodes), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                 "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "muldml-test"]
    else:
        where = ["--standalone", "--nproc-per-node", "2"]
    launchers = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *where, "-m", "muldml", *args],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True) for _ in range(max(nodes, 1))]
    try:
        outputs = [launcher.communicate(timeout=300) for launcher in launchers]
    except subprocess.TimeoutExpired:
        for launcher in launchers:
            os.killpg(launcher.pid, signal.SIGKILL)
        raise
    done = [subprocess.CompletedProcess(launcher.args, launcher.returncode, out, err)
            for launcher, (out, err) in zip(launchers, outputs)]
    return done if nodes else done[0]


def test_two_process_train_then_resume_in_one_process(tmp_path, capsys):
    data = write_demo_dataset(tmp_path / "faces", num_subjects=4, images_per_expression=1, size=32, progress=False)
    run = tmp_path / "run"
    # --sync-bn: global BatchNorm statistics, so the run may continue with another number of processes.
    done = torchrun("train", "--data", str(data), "--out", str(run), *TINY, "--sync-bn")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("validation accuracy") == 1  # rank 0 alone reports
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert state["history"][0]["images_per_s"] > 0 and (run / "report.md").is_file()
    # The same global batch in one process continues the run.
    assert main(["train", "--data", str(data), "--out", str(run), "--resume", *TINY, "--epochs", "2"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
    capsys.readouterr()
    # A global batch that does not split over the processes: one line, non-zero exit.
    odd = torchrun("train", "--data", str(data), "--out", str(tmp_path / "odd"), *TINY, "--batch-size", "7")
    assert odd.returncode != 0
    assert "batch_size 7 (the global batch) does not split over 2 processes" in odd.stderr


@pytest.mark.slow
def test_two_nodes_of_one_process_train_as_one_node_of_two(tmp_path):
    """The README's multi-node command (c10d rendezvous, --nnodes 2) on localhost gives the
    same model as one node with two processes."""
    data = write_demo_dataset(tmp_path / "faces", num_subjects=4, images_per_expression=1, size=32, progress=False)
    one = torchrun("train", "--data", str(data), "--out", str(tmp_path / "one"), *TINY)
    assert one.returncode == 0, one.stderr[-4000:]
    nodes = torchrun("train", "--data", str(data), "--out", str(tmp_path / "two"), *TINY, nodes=2)
    for node in nodes:
        assert node.returncode == 0, node.stderr[-4000:]
    assert sum(node.stdout.count("validation accuracy") for node in nodes) == 1  # global rank 0 alone reports
    expected = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    got = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model"]
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(got[name].double(), expected[name].double(), atol=1e-6, rtol=0), name


def workers_of(launcher_pid):
    """pid → RANK of torchrun's worker processes (its children), read from /proc."""
    found = {}
    with open(f"/proc/{launcher_pid}/task/{launcher_pid}/children") as f:
        children = [int(p) for p in f.read().split()]
    for pid in children:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if b"RANK" in env:
            found[pid] = int(env[b"RANK"])
    return found


def test_sigkilled_worker_restarts_and_ends_as_an_uninterrupted_run(tmp_path):
    """torchrun --max-restarts 1; one worker killed by SIGKILL after the first checkpoint: the
    second attempt joins a fresh process group, resumes from the checkpoint and ends with the
    weights of a run that was never interrupted."""
    import time

    data = write_demo_dataset(tmp_path / "faces", num_subjects=4, images_per_expression=1, size=32, progress=False)
    args = ["train", "--data", str(data), *TINY, "--epochs", "2", "--sync-bn"]
    whole = torchrun(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                 "--max-restarts", "1", "-m", "muldml", *args, "--out", str(run)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline and launcher.poll() is None:
            time.sleep(0.05)
        victims = [pid for pid, rank in workers_of(launcher.pid).items() if rank == 1]
        assert victims, "no worker of rank 1 to kill"
        os.kill(victims[0], signal.SIGKILL)
        out, err = launcher.communicate(timeout=240)
    except BaseException:
        os.killpg(launcher.pid, signal.SIGKILL)
        raise
    assert "exitcode: -9" in err  # the kill landed, and torchrun restarted the workers
    assert launcher.returncode == 0, err[-4000:]
    assert "Connection refused" not in err
    killed, uninterrupted = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (run, tmp_path / "whole"))
    assert killed["epoch"] == 2
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(tensor, killed["model"][name]), name


@pytest.mark.slow
def test_two_process_cross_batch_memory_holds_the_global_batch(tmp_path):
    """Each process enqueues the all-gathered batch: the 2-process run's queue has the labels,
    in the same order, of one process on the same global batches; the queue resumes in one process."""
    data = write_demo_dataset(tmp_path / "faces", num_subjects=4, images_per_expression=1, size=32, progress=False)
    # Smaller than a batch of 14: the queue wraps; ~30 s on 2 CPU cores. Global BatchNorm
    # statistics (--sync-bn), so that the run may resume in one process.
    xbm = ["--xbm-size", "10", "--sync-bn"]
    done = torchrun("train", "--data", str(data), "--out", str(tmp_path / "two"), *TINY, *xbm)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "one"), *TINY, *xbm]) == 0
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["loss"]
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["loss"]
    assert int(two["memory_seen"]) == int(one["memory_seen"]) >= 10
    assert torch.equal(two["memory_labels"], one["memory_labels"])
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "two"), "--resume", *TINY, *xbm,
                 "--epochs", "2"]) == 0
    assert int(torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["loss"]["memory_seen"]) > int(two["memory_seen"])
