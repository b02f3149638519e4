"""`torchrun --nproc-per-node 2 -m muldml train` on the demo faces (CPU, gloo), and its
resumption in one process with the same global batch."""
import os
import signal
import subprocess
import sys

import torch

from muldml.cli import main
from muldml.data.synthetic import write_demo_dataset

TINY = ["--epochs", "1", "--batch-size", "14", "--image-size", "32", "--slice-dim", "8", "--tau-min", "0.25",
        "--tau-max", "0.45", "--lr", "0.001", "--num-workers", "0", "--quiet"]


def torchrun(*args):
    """Run torchrun with 2 CPU processes; on a timeout its whole process group is killed
    (workers included), so no process outlives the test."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                 "-m", "muldml", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        out, err = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(launcher.args, launcher.returncode, out, err)


def test_two_process_train_then_resume_in_one_process(tmp_path, capsys):
    data = write_demo_dataset(tmp_path / "faces", num_subjects=4, images_per_expression=1, size=32, progress=False)
    run = tmp_path / "run"
    done = torchrun("train", "--data", str(data), "--out", str(run), *TINY)
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
