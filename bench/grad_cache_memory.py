"""Peak CPU memory and time of one mul-dml training step vs batch size, with and without
gradient caching (--grad-cache), at 64-px faces (61-px crops).

Run: .venv/bin/python bench/grad_cache_memory.py [--batches 128,256,512] [--cached 256,1024,4096]
     [--chunk 128] [--out bench/results]
Each step runs in a fresh process, so its peak resident set size (ru_maxrss) is its own;
`base_mb` is that process's size before the step (interpreter, torch, model). Writes
grad_cache_memory.json and .png into --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_step(batch: int, chunk: int | None) -> dict:
    import torch

    from muldml.config import preset_config
    from muldml.training import build_model, build_triplet_loss
    from muldml.training.loop import train_step

    torch.manual_seed(0)
    cfg = preset_config("mul-dml")
    cfg.classes = [str(i) for i in range(7)]
    model = build_model(cfg).train()
    loss = build_triplet_loss(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, 61, 61)
    labels = torch.arange(batch) % 7
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    train_step(model, loss, images, labels, optimizer, chunk=chunk)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"batch": batch, "chunk": chunk, "peak_mb": peak, "base_mb": base, "seconds": seconds,
            "images_per_s": batch / seconds, "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="128,256,512", help="batch sizes without caching")
    parser.add_argument("--cached", default="256,1024,4096", help="batch sizes with caching")
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)  # batch chunk(0 = none), in a child
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_step(args.one[0], args.one[1] or None)))
        return 0
    runs = [(int(b), 0) for b in args.batches.split(",") if b] + [(int(b), args.chunk) for b in args.cached.split(",") if b]
    rows = []
    for batch, chunk in runs:
        done = subprocess.run([sys.executable, __file__, "--one", str(batch), str(chunk)], capture_output=True,
                              text=True, cwd=ROOT)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"batch {batch:5d} chunk {chunk or '-':>4}: peak {r['peak_mb']:8.0f} MB (base {r['base_mb']:.0f}), "
              f"{r['seconds']:.1f} s, {r['images_per_s']:.1f} images/s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from muldml import io as atomic
    from muldml.plots import plt  # matplotlib with the Agg backend

    report = {"machine": f"{platform.processor() or platform.machine()}, CPU", "image": 64, "crop": 61,
              "preset": "mul-dml (7 x 256)", "rows": rows}
    atomic.write_json(out / "grad_cache_memory.json", report)
    fig, ax = plt.subplots(figsize=(6, 4))
    for chunk, label in ((None, "plain"), (args.chunk, f"gradient cache, chunk {args.chunk}")):
        pts = [(r["batch"], r["peak_mb"] / 1024) for r in rows if r["chunk"] == chunk]
        if pts:
            ax.plot(*zip(*pts), "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (images, 64 px)")
    ax.set_ylabel("peak resident memory (GiB)")
    ax.set_title("one mul-dml training step on the CPU")
    ax.legend()
    atomic.save_figure(out / "grad_cache_memory.png", fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
