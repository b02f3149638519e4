"""One-command GPU sweep of the multi-threshold triplet loss against its peers.

    python bench/gpu_sweep.py                 # on a CUDA machine: B = 96 … 65,536
    python bench/gpu_sweep.py --device cpu --batches 32,64 --repeats 2   # smoke run

For each batch size B (N = 7 slices of d = 256 unless told otherwise) and each method it
measures the median milliseconds of forward, backward and forward+backward, the peak
memory beyond the inputs, and for the fused kernel the achieved TFLOP/s of its distance
part (2·N·B²·d flops per forward). It checks the kernel against the torch backend first,
prints a table and writes <card>.json and <card>.png under $OUT (else bench/results/).

GPU targets: ≥ 20× faster than the PML loop at B = 96, ≥ 5× faster than the vectorised
torch version at B = 8192, and B = 65,536 with N·d = 1,792 runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import peers  # noqa: E402
from muldml import io as atomic  # noqa: E402
from muldml.losses import multi_threshold_triplet_loss, threshold_range  # noqa: E402

DEFAULT_BATCHES = [96, 512, 2048, 8192, 32768, 65536]
# Largest B each method is run at: beyond, the (N, B, B) matrices or Python loops don't fit
# the card or the time budget of one sweep.
MAX_BATCH = {"reference": 8192, "pml-loop": 8192, "vectorised": 16384, "torch-compile": 8192}


def methods(margins: list[float], slice_dim: int) -> dict:
    tau = torch.tensor(margins)

    def ours(backend, **kw):
        return lambda x, y: multi_threshold_triplet_loss(x, y, margins, slice_dim, dual=False, backend=backend, **kw).loss

    return {
        "triton-ieee": ours("triton", precision="ieee"),
        "triton-tf32": ours("triton", precision="tf32"),
        "torch-backend": ours("torch"),
        "reference": ours("reference"),
        "pml-loop": lambda x, y: peers.pml_loop(x, y, margins, slice_dim),
        "vectorised": lambda x, y: peers.vectorised(x, y, tau.to(x.device), slice_dim),
        "torch-compile": lambda x, y: peers.compiled()(x, y, tau.to(x.device), slice_dim),
    }


class Timer:
    """Median wall time of a callable in ms, synchronising the device around each call."""

    def __init__(self, device: str, repeats: int):
        self.device, self.repeats = device, repeats

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def __call__(self, fn) -> float:
        fn()  # warm-up (compilation, autotuning, allocator)
        times = []
        for _ in range(self.repeats):
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)


def measure(fn, x, labels, timer: Timer) -> dict:
    """Forward, backward (graph retained) and full ms; peak extra memory in MiB."""
    def forward():
        return fn(x, labels)

    def full():
        x.grad = None
        fn(x, labels).backward()

    result = {"forward_ms": timer(forward)}
    loss = forward()
    result["backward_ms"] = timer(lambda: torch.autograd.grad(loss, x, retain_graph=True))
    del loss
    if timer.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        full()
        torch.cuda.synchronize()
        result["peak_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    result["full_ms"] = timer(full)
    return result


def check_kernel(device: str, margins: list[float], slice_dim: int) -> dict:
    """The fused kernel against the torch backend on this device (B = 512)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, len(margins) * slice_dim, generator=gen).to(device)
    labels = torch.randint(0, 7, (512,), generator=gen).to(device)
    out = {}
    for backend in ("triton", "torch"):
        xx = x.clone().requires_grad_(True)
        o = multi_threshold_triplet_loss(xx, labels, margins, slice_dim, backend=backend)
        o.loss.backward()
        out[backend] = (o, xx.grad)
    (ot, gt), (oc, gc) = out["triton"], out["torch"]
    return {
        "loss_rel_err": abs(float(ot.loss.detach()) - float(oc.loss.detach())) / max(abs(float(oc.loss.detach())), 1e-12),
        "grad_rel_err": float((gt - gc).norm() / gc.norm().clamp_min(1e-12)),
        "same_pos_idx": bool(torch.equal(ot.pos_idx, oc.pos_idx)),
        "same_neg_idx": bool(torch.equal(ot.neg_idx, oc.neg_idx)),
    }


def card_name(device: str) -> str:
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu-{os.cpu_count()}cores"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["batch"], r["full_ms"]) for r in rows if r["method"] == method and "full_ms" in r]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("forward + backward, median ms")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic.save_figure(path, fig)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--slice-dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    margins = threshold_range()
    table = methods(margins, args.slice_dim)
    chosen = args.methods.split(",") if args.methods else list(table)
    unknown = set(chosen) - set(table)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    if args.device == "cpu" and any(m.startswith("triton") for m in chosen) and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("triton methods on CPU need TRITON_INTERPRET=1 (Triton's interpreter)")
    timer = Timer(args.device, args.repeats)
    card = card_name(args.device)
    report = {
        "card": card, "device": args.device, "torch": torch.__version__,
        "slices": len(margins), "slice_dim": args.slice_dim, "loss": "traditional (as PML)", "rows": [],
    }
    try:
        import triton

        report["triton"] = triton.__version__
    except ImportError:
        pass
    if any(m.startswith("triton") for m in chosen):
        report["kernel_check_B512"] = check_kernel(args.device, margins, args.slice_dim)
        print("kernel vs torch backend at B=512:", report["kernel_check_B512"], flush=True)

    for batch in map(int, args.batches.split(",")):
        gen = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, len(margins) * args.slice_dim, generator=gen).to(args.device).requires_grad_(True)
        labels = torch.randint(0, 7, (batch,), generator=gen).to(args.device)
        for method in chosen:
            row = {"batch": batch, "method": method}
            if batch > MAX_BATCH.get(method, batch):
                row["skipped"] = f"B > {MAX_BATCH[method]}"
            else:
                try:
                    row.update(measure(table[method], x, labels, timer))
                except torch.OutOfMemoryError:
                    row["skipped"] = "out of memory"
                except ImportError as e:  # a peer's package missing on this machine
                    row["skipped"] = f"not installed: {e.name}"
                finally:
                    x.grad = None
                    if args.device == "cuda":
                        torch.cuda.empty_cache()
            if method.startswith("triton") and "forward_ms" in row:
                flops = 2 * len(margins) * batch * batch * args.slice_dim
                row["distance_tflops"] = flops / (row["forward_ms"] * 1e-3) / 1e12
            report["rows"].append(row)
            print(json.dumps(row), flush=True)

    # Speed-ups of the fused kernel (exact mining) over each peer, forward + backward.
    fast = {r["batch"]: r["full_ms"] for r in report["rows"] if r["method"] == "triton-ieee" and "full_ms" in r}
    for r in report["rows"]:
        if r["batch"] in fast and "full_ms" in r:
            r["speedup_of_triton_ieee"] = r["full_ms"] / fast[r["batch"]]

    header = f"{'B':>6} {'method':>14} {'fwd ms':>9} {'bwd ms':>9} {'full ms':>9} {'MiB':>8} {'x triton':>9}"
    print(header)
    for r in report["rows"]:
        if "full_ms" not in r:
            print(f"{r['batch']:>6} {r['method']:>14}   skipped: {r['skipped']}")
            continue
        print(f"{r['batch']:>6} {r['method']:>14} {r['forward_ms']:9.3f} {r['backward_ms']:9.3f} {r['full_ms']:9.3f} "
              f"{r.get('peak_extra_mib', float('nan')):8.1f} {r.get('speedup_of_triton_ieee', float('nan')):9.2f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{card}.json"
    atomic.write_json(path, report)
    try:
        plot(report["rows"], out / f"{card}.png", f"multi-threshold triplet loss, N={len(margins)}, d={args.slice_dim}, {card}")
        print(f"wrote {path} and {path.with_suffix('.png')}")
    except ImportError:
        print(f"wrote {path} (matplotlib not installed: no plot)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
