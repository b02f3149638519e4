"""Cross-batch memory on the CPU: muldml's loss with a queue of Q rows against
pytorch-metric-learning's CrossBatchMemory(TripletMarginLoss, BatchHardMiner) per slice.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/xbm_cpu.py [--batch 96] [--sizes 4096,16384,65536]
     [--repeats 3] [--out bench/results/cpu-2cores-xbm.json]

N = 7 slices of d = 256, margins 0.15…0.75, traditional loss (PML has no dual term), 7
classes, full queues of random rows. Each (method, Q) runs in a fresh process with one
torch thread: its queue is allocated and filled in place, then one forward + backward is
measured for peak memory and `--repeats` more for time (median ms). Peak memory is the
growth of the process's resident set during that first forward + backward: Linux's
high-water mark VmHWM, reset to the current RSS (/proc/self/clear_refs) just before; the
queue and the input are in the baseline, so this is the memory the loss's computation
adds. Ratios PML / muldml are of the same run.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("muldml-torch", "pml-xbm")


def _status_mib(key: str) -> float:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def one(method: str, batch: int, size: int, repeats: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import peers
    from muldml.losses import MultiThresholdTripletLoss, threshold_range

    torch.set_num_threads(1)
    margins, slice_dim = threshold_range(), 256
    gen = torch.Generator().manual_seed(0)
    if method == "muldml-torch":
        loss = MultiThresholdTripletLoss(margins=margins, slice_dim=slice_dim, dual=False, backend="torch",
                                         memory_size=size)
        rows = loss.memory_embeddings.view(size, len(margins), slice_dim)
        rows.normal_(generator=gen)
        rows.div_(rows.norm(dim=2, keepdim=True))  # the queue holds normalised slices
        loss.memory_labels.random_(0, 7, generator=gen)
        loss._seen = size
        loss.memory_seen.fill_(size)
    else:
        loss = peers.PMLCrossBatchMemory(margins, slice_dim, size)
    x = torch.randn(batch, len(margins) * slice_dim, generator=gen).requires_grad_(True)
    labels = torch.randint(0, 7, (batch,), generator=gen)

    def step():
        x.grad = None
        loss(x, labels).backward()

    Path("/proc/self/clear_refs").write_text("5")
    base = _status_mib("VmRSS")
    step()
    peak = _status_mib("VmHWM") - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return {"method": method, "batch": batch, "memory_size": size, "full_ms": statistics.median(times),
            "full_ms_all": times, "peak_extra_mib": peak, "queue_mib": len(margins) * slice_dim * size * 4 / 2**20}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--sizes", default="4096,16384,65536")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu-2cores-xbm.json"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # method size, in a child
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], args.batch, int(args.one[1]), args.repeats)))
        return 0
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for method in METHODS:
            done = subprocess.run([sys.executable, __file__, "--one", method, str(size), "--batch", str(args.batch),
                                   "--repeats", str(args.repeats)], capture_output=True, text=True, check=True,
                                  env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    ratios = []
    for size in sorted({r["memory_size"] for r in rows}):
        ours, pml = (next(r for r in rows if r["memory_size"] == size and r["method"] == m) for m in METHODS)
        ratios.append({"memory_size": size, "time_pml_over_muldml": pml["full_ms"] / ours["full_ms"],
                       "peak_pml_over_muldml": pml["peak_extra_mib"] / max(ours["peak_extra_mib"], 1e-9)})
    import torch

    report = {"machine": f"{platform.processor() or platform.machine()}, 2 shared CPU cores, 1 torch thread",
              "torch": torch.__version__, "slices": 7, "slice_dim": 256, "loss": "traditional (as PML)",
              "memory": "peak RSS growth during one forward + backward (VmHWM after /proc/self/clear_refs)",
              "command": " ".join(["bench/xbm_cpu.py", *sys.argv[1:]]), "rows": rows, "ratios": ratios}
    from muldml import io as atomic

    atomic.write_json(Path(args.out), report)
    for r in ratios:
        print(f"Q = {r['memory_size']}: PML / muldml time {r['time_pml_over_muldml']:.2f}x, "
              f"peak memory {r['peak_pml_over_muldml']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
