"""One-command GPU sweep of the multi-threshold triplet loss against its peers and floors.

    python3 bench/gpu_sweep.py            # on a CUDA machine, B = 96 … 65,536, about 5 minutes on an H200
    python3 bench/gpu_sweep.py --quick    # B = 96, 2048, 8192, 3 repeats: a minute
    TRITON_INTERPRET=1 python3 bench/gpu_sweep.py --device cpu --batches 64 --repeats 1   # smoke run

N = 7 slices of d = 256 (unless told otherwise), traditional loss for every method (PML has
no dual term). First the fused kernel is checked at each mining precision against the
float64 reference at B = 512 (--check-batch): valid triplets, hardest within the precision's slack, loss
and gradient equal at those triplets; a mismatch fails the run (exit 1) before any timing.
Then for each B and method: median ms of forward, backward and forward + backward over
`--repeats` runs timed with CUDA events, the L2 cache flushed (a 256 MiB write) before each
run so that no run starts with its inputs cached; peak memory beyond the inputs; the
fused kernel at B = 96 also replayed as a CUDA graph (the host path dominates there).
Floors: the N Gram matrices E_i·E_iᵀ in cuBLAS, forward only, in TF32 and in bf16.

Every method's arithmetic precision is recorded: torch's fp32 matmuls are IEEE fp32 here
(TF32 is switched on only inside the TF32 floor). Output: a table, the ratio of every
triton precision to every peer and floor, the targets met or missed and by how much, and
<card>.json + <card>.png under bench/results/ (or --out), written atomically.

Targets (N = 7, d = 256): forward ≤ 1.3× the TF32 Gram floor at B ≥ 8192; forward +
backward ≥ 5× faster than the vectorised peer at B = 8192 and ≥ 20× faster than the PML
loop at B = 96; B = 65,536 runs (peak extra memory reported).

Cross-batch memory (report["xbm"], after the sweep; --xbm-sizes "" skips it): B = 96
against full queues of Q = 4,096, 16,384 and 65,536 random rows; the fused kernel with a
queue is first checked against the float64 reference with memory (B = 96, Q = 1,024);
then muldml's triton (tf32) and torch backends with memory_size=Q against PML's
CrossBatchMemory(TripletMarginLoss, BatchHardMiner) per slice (bench/peers.py), forward,
backward, forward + backward and peak memory beyond inputs and queues. Targets: ≥ 10× PML's
forward + backward time at Q = 16,384; peak extra memory growing at most linearly in Q.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))


def import_kernels() -> None:
    """Map muldml.kernels to the checkout's kernels/, as setup.py does, so that an uninstalled
    checkout runs too. muldml itself is imported from the checkout (REPO is first on sys.path),
    so its kernels are the checkout's; this runs before muldml is first imported."""
    if "muldml.kernels" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "muldml.kernels", REPO / "kernels" / "__init__.py", submodule_search_locations=[str(REPO / "kernels")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["muldml.kernels"] = module
    spec.loader.exec_module(module)


import_kernels()
import peers  # noqa: E402
from muldml import io as atomic  # noqa: E402
from muldml.kernels.triplet.naive import reference_triplet_loss  # noqa: E402
from muldml.losses import MultiThresholdTripletLoss, multi_threshold_triplet_loss, threshold_range  # noqa: E402

PRECISIONS = ("tf32", "tf32x3", "bf16")
FULL_BATCHES = [96, 512, 2048, 8192, 32768, 65536]
QUICK_BATCHES = [96, 2048, 8192]
# Largest B each method runs at: beyond, its (N, B, B) matrices, Python loops or naive
# distance kernels do not fit the card or the sweep's time budget.
MAX_BATCH = {"reference": 2048, "pml-loop": 8192, "vectorised": 16384, "torch-compile": 8192}
# Arithmetic of each method's distance products (torch leaves TF32 off for fp32 matmuls).
METHOD_PRECISION = {
    **{f"triton-{p}": f"{p} mining, fp32 hinge" for p in PRECISIONS},
    "torch-backend": "fp32", "reference": "fp64 loop (fp32 input)", "pml-loop": "fp32",
    "vectorised": "fp32", "torch-compile": "fp32", "gram-tf32": "tf32", "gram-bf16": "bf16",
}
FLOORS = ("gram-tf32", "gram-bf16")
UNIT_ROUNDOFF = {"tf32": 2.0**-11, "tf32x3": 2.0**-21, "bf16": 2.0**-8}


def methods(margins: list[float], slice_dim: int) -> dict:
    tau = torch.tensor(margins)

    def ours(backend, **kw):
        # The module keeps its margins on the device: no host copy per call, CUDA-graph capturable.
        return MultiThresholdTripletLoss(margins=margins, slice_dim=slice_dim, dual=False, backend=backend, **kw)

    table = {f"triton-{p}": ours("triton", precision=p) for p in PRECISIONS}
    table.update({
        "torch-backend": ours("torch"),
        "reference": ours("reference"),
        "pml-loop": lambda x, y: peers.pml_loop(x, y, margins, slice_dim),
        "vectorised": lambda x, y: peers.vectorised(x, y, tau.to(x.device), slice_dim),
        "torch-compile": lambda x, y: peers.compiled()(x, y, tau.to(x.device), slice_dim),
        "gram-tf32": lambda x, y: peers.gram_matrices(x, len(margins), slice_dim, "tf32"),
        "gram-bf16": lambda x, y: peers.gram_matrices(x, len(margins), slice_dim, "bf16"),
    })
    return table


class Timer:
    """Median ms of a callable; on CUDA timed with events, the L2 cache flushed before each run."""

    def __init__(self, device: str, repeats: int):
        self.device, self.repeats = device, repeats
        self.flush_buffer = torch.empty(64 * 2**20, dtype=torch.int32, device=device) if device == "cuda" else None

    def __call__(self, fn) -> float:
        fn()  # warm-up: compilation, autotuning, allocator
        times = []
        for _ in range(self.repeats):
            if self.device == "cuda":
                self.flush_buffer.zero_()  # 256 MiB: evicts the inputs from the 50–60 MiB L2
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def measure(fn, x, labels, timer: Timer, forward_only: bool) -> dict:
    """Forward, backward (graph retained) and full ms; peak memory beyond the inputs in MiB."""
    result = {"forward_ms": timer(lambda: fn(x, labels))}
    if timer.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    if forward_only:
        fn(x, labels)
    else:
        loss = fn(x, labels)
        result["backward_ms"] = timer(lambda: torch.autograd.grad(loss, x, retain_graph=True))
        del loss

        def full():
            x.grad = None
            fn(x, labels).backward()

        result["full_ms"] = timer(full)
    if timer.device == "cuda":
        torch.cuda.synchronize()
        result["peak_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return result


def graph_full_ms(fn, x, labels, timer: Timer) -> float:
    """Forward + backward captured once as a CUDA graph, then replayed: the launch floor."""
    static_x = x.detach().clone().requires_grad_(True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up outside the graph: autotuning and allocations
            static_x.grad = None
            fn(static_x, labels).backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    static_x.grad = None
    with torch.cuda.graph(graph):
        fn(static_x, labels).backward()
    return timer(graph.replay)


def check_kernel(device: str, margins: list[float], slice_dim: int, batch: int = 512) -> dict:
    """Each mining precision against the float64 reference at the triplets it chose."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, len(margins) * slice_dim, generator=gen).to(device)
    labels = torch.randint(0, 7, (batch,), generator=gen).to(device)
    x64 = x.double()
    slices = x64.reshape(batch, len(margins), slice_dim).transpose(0, 1)
    slices = torch.nn.functional.normalize(slices, dim=2)
    sq = torch.cdist(slices, slices, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    centred = slices - slices.mean(1, keepdim=True)
    radius_sq = (centred * centred).sum(2).amax(1)  # (N,)
    tau = torch.tensor(margins, dtype=torch.float64, device=device)
    best = reference_triplet_loss(x64, labels, tau, slice_dim, dual=False)
    report = {}
    for precision in PRECISIONS:
        xx = x.clone().requires_grad_(True)
        out = multi_threshold_triplet_loss(xx, labels, margins, slice_dim, dual=False, backend="triton",
                                           precision=precision)
        (grad,) = torch.autograd.grad(out.loss, xx)
        ref_x = x64.clone().requires_grad_(True)
        ref = reference_triplet_loss(ref_x, labels, tau, slice_dim, dual=False, indices=(out.pos_idx, out.neg_idx))
        (ref_grad,) = torch.autograd.grad(ref.loss, ref_x)
        pos, neg, valid = out.pos_idx, out.neg_idx, out.pos_idx >= 0
        slack = (4 * UNIT_ROUNDOFF[precision] + slice_dim * 2.0**-23) * 2 * radius_sq[:, None]
        chosen_p, best_p = sq.gather(2, pos.clamp_min(0)[..., None])[..., 0], sq.gather(2, best.pos_idx.clamp_min(0)[..., None])[..., 0]
        chosen_n, best_n = sq.gather(2, neg.clamp_min(0)[..., None])[..., 0], sq.gather(2, best.neg_idx.clamp_min(0)[..., None])[..., 0]
        a = torch.arange(batch, device=device).expand_as(pos)
        result = {
            "same_valid_anchors": bool(torch.equal(valid, best.pos_idx >= 0)),
            "triplets_valid": bool(((labels[pos.clamp_min(0)] == labels[a]) & (pos != a) & (labels[neg.clamp_min(0)] != labels[a]))[valid].all()),
            "hardest_within_slack": bool(((chosen_p >= best_p - slack) & (chosen_n <= best_n + slack))[valid].all()),
            "indices_equal_fraction": float(((pos == best.pos_idx) & (neg == best.neg_idx))[valid].double().mean()),
            "loss_rel_err": abs(float(out.loss.detach()) - float(ref.loss.detach())) / max(abs(float(ref.loss.detach())), 1e-12),
            "grad_rel_err": float((grad.double() - ref_grad).norm() / ref_grad.norm().clamp_min(1e-12)),
        }
        result["ok"] = (result["same_valid_anchors"] and result["triplets_valid"] and result["hardest_within_slack"]
                        and result["loss_rel_err"] < 1e-4 and result["grad_rel_err"] < 1e-3)
        report[precision] = result
    return report


XBM_METHODS = ("triton-tf32", "torch-backend", "pml-xbm")


def xbm_loss(method: str, margins: list[float], slice_dim: int, size: int, device: str):
    """A loss with a full queue of `size` random rows (normalised slices for muldml's)."""
    if method == "pml-xbm":
        return peers.PMLCrossBatchMemory(margins, slice_dim, size, device=device)
    backend = "triton" if method.startswith("triton") else "torch"
    loss = MultiThresholdTripletLoss(margins=margins, slice_dim=slice_dim, dual=False, backend=backend,
                                     memory_size=size).to(device)
    gen = torch.Generator(device=device).manual_seed(size)
    rows = loss.memory_embeddings.view(size, len(margins), slice_dim)
    rows.normal_(generator=gen)
    rows.div_(rows.norm(dim=2, keepdim=True))
    loss.memory_labels.random_(0, 7, generator=gen)
    loss._seen = size
    loss.memory_seen.fill_(size)
    return loss


def check_xbm_kernel(device: str, margins: list[float], slice_dim: int, batch: int = 96, size: int = 1024) -> dict:
    """The fused kernel with a queue against the float64 reference at the triplets it chose."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, len(margins) * slice_dim, generator=gen).to(device)
    labels = torch.randint(0, 7, (batch,), generator=gen).to(device)
    rows = torch.nn.functional.normalize(torch.randn(size, len(margins), slice_dim, generator=gen), dim=2)
    memory = (rows.reshape(size, -1).to(device), torch.randint(0, 7, (size,), generator=gen).to(device))
    tau = torch.tensor(margins, dtype=torch.float64, device=device)
    xx = x.clone().requires_grad_(True)
    out = multi_threshold_triplet_loss(xx, labels, margins, slice_dim, dual=False, backend="triton", memory=memory)
    (grad,) = torch.autograd.grad(out.loss, xx)
    x64 = x.double().requires_grad_(True)
    best = reference_triplet_loss(x64.detach(), labels, tau, slice_dim, dual=False, memory=memory)
    ref = reference_triplet_loss(x64, labels, tau, slice_dim, dual=False, memory=memory,
                                 indices=(out.pos_idx, out.neg_idx))
    (ref_grad,) = torch.autograd.grad(ref.loss, x64)
    slices = torch.nn.functional.normalize(x.double().reshape(batch, len(margins), slice_dim), dim=2)
    candidates = torch.cat([slices, memory[0].double().reshape(size, len(margins), slice_dim)]).transpose(0, 1)
    sq = torch.cdist(candidates[:, :batch], candidates, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    radius_sq = ((candidates - candidates[:, :batch].mean(1, keepdim=True)) ** 2).sum(2).amax(1)
    slack = (4 * UNIT_ROUNDOFF["tf32"] + slice_dim * 2.0**-23) * 2 * radius_sq[:, None]
    pos, neg, valid = out.pos_idx, out.neg_idx, out.pos_idx >= 0
    pick = lambda idx: sq.gather(2, idx.clamp_min(0)[..., None])[..., 0]  # noqa: E731
    all_labels = torch.cat([labels, memory[1]])
    a = torch.arange(batch, device=device).expand_as(pos)
    result = {
        "same_valid_anchors": bool(torch.equal(valid, best.pos_idx >= 0)),
        "triplets_valid": bool(((all_labels[pos.clamp_min(0)] == labels[a]) & (pos != a)
                                & (all_labels[neg.clamp_min(0)] != labels[a]))[valid].all()),
        "memory_mined": bool((pos[valid] >= batch).any() and (neg[valid] >= batch).any()),
        "hardest_within_slack": bool(((pick(pos) >= pick(best.pos_idx) - slack)
                                      & (pick(neg) <= pick(best.neg_idx) + slack))[valid].all()),
        "loss_rel_err": abs(float(out.loss.detach()) - float(ref.loss.detach())) / max(abs(float(ref.loss.detach())), 1e-12),
        "grad_rel_err": float((grad.double() - ref_grad).norm() / ref_grad.norm().clamp_min(1e-12)),
    }
    result["ok"] = (result["same_valid_anchors"] and result["triplets_valid"] and result["memory_mined"]
                    and result["hardest_within_slack"] and result["loss_rel_err"] < 1e-4 and result["grad_rel_err"] < 1e-3)
    return result


def xbm_sweep(device: str, margins: list[float], slice_dim: int, sizes: list[int], timer: "Timer",
              budget_s: float, batch: int = 96) -> dict:
    """B = `batch` against full queues of each size: muldml (triton, torch) vs PML's CrossBatchMemory."""
    started = time.perf_counter()
    report = {"batch": batch, "check": check_xbm_kernel(device, margins, slice_dim), "rows": []}
    print("kernel with memory vs float64 reference:", json.dumps(report["check"]), flush=True)
    if not report["check"]["ok"]:
        report["skipped"] = "kernel check with memory failed: no timings taken"
        return report
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, len(margins) * slice_dim, generator=gen).to(device).requires_grad_(True)
    labels = torch.randint(0, 7, (batch,), generator=gen).to(device)
    for size in sizes:
        for method in XBM_METHODS:
            row = {"batch": batch, "memory_size": size, "method": method}
            if time.perf_counter() - started > budget_s:
                row["skipped"] = f"time budget of {budget_s:.0f} s spent"
            else:
                try:
                    loss = xbm_loss(method, margins, slice_dim, size, device)
                    with fp32_matmuls_ieee():
                        row.update(measure(loss, x, labels, timer, forward_only=False))
                    del loss
                except torch.OutOfMemoryError:
                    row["skipped"] = "out of memory"
                except ImportError as e:
                    row["skipped"] = f"not installed: {e.name}"
                finally:
                    x.grad = None
                    if device == "cuda":
                        torch.cuda.empty_cache()
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    by = {(r["memory_size"], r["method"]): r for r in report["rows"]}
    report["ratios"] = [{"memory_size": q, "muldml": m, "versus": "pml-xbm", "phase": phase,
                         "ratio": by[q, "pml-xbm"][phase] / by[q, m][phase]}
                        for q in sizes for m in XBM_METHODS[:2] for phase in ("forward_ms", "full_ms")
                        if phase in by.get((q, m), {}) and phase in by.get((q, "pml-xbm"), {})]
    report["targets"] = [{"target": "full_ms >= 10x faster than pml-xbm at Q=16384", "method": r["muldml"],
                          "value": r["ratio"], "met": r["ratio"] >= 10}
                         for r in report["ratios"] if r["memory_size"] == 16384 and r["phase"] == "full_ms"]
    for m in XBM_METHODS[:2]:  # peak extra memory vs Q: at most linear (no B×Q matrix means about flat)
        peaks = [(q, by[q, m]["peak_extra_mib"]) for q in sizes if "peak_extra_mib" in by.get((q, m), {})]
        if len(peaks) >= 2:
            growth = (peaks[-1][1] / max(peaks[0][1], 1e-9)) / (peaks[-1][0] / peaks[0][0])
            report["targets"].append({"target": "peak extra memory grows at most linearly in Q (growth / Q growth <= 1)",
                                      "method": m, "value": growth, "met": growth <= 1})
    return report


def card_name(device: str) -> str:
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu-{os.cpu_count()}cores"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def ratios(rows: list[dict]) -> list[dict]:
    """Time of every peer and floor over each triton precision's, per B and phase (> 1: triton faster)."""
    out = []
    by = {(r["batch"], r["method"]): r for r in rows}
    for (batch, method), r in by.items():
        if not method.startswith("triton-"):
            continue
        for (b2, other), o in by.items():
            if b2 != batch or other == method:
                continue
            for phase in ("forward_ms", "full_ms", "graph_full_ms"):
                if phase in r and phase in o:
                    out.append({"batch": batch, "triton": method, "versus": other, "phase": phase,
                                "versus_precision": METHOD_PRECISION[other], "ratio": o[phase] / r[phase]})
    return out


def targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, met or missed, with the numbers behind them."""
    by = {(r["batch"], r["method"]): r for r in rows}
    found = []
    for p in PRECISIONS:
        t = f"triton-{p}"
        for batch in sorted({r["batch"] for r in rows if r["batch"] >= 8192}):
            if "forward_ms" in by.get((batch, t), {}) and "forward_ms" in by.get((batch, "gram-tf32"), {}):
                x = by[(batch, t)]["forward_ms"] / by[(batch, "gram-tf32")]["forward_ms"]
                found.append({"target": f"forward <= 1.3x TF32 Gram at B={batch}", "method": t, "value": x, "met": x <= 1.3})
        for batch, peer, need, phase in ((8192, "vectorised", 5, "full_ms"), (96, "pml-loop", 20, "full_ms"),
                                         (96, "pml-loop", 20, "graph_full_ms")):
            mine, theirs = by.get((batch, t), {}), by.get((batch, peer), {})
            if phase in mine and "full_ms" in theirs:
                x = theirs["full_ms"] / mine[phase]
                found.append({"target": f"{phase} >= {need}x faster than {peer} at B={batch}", "method": t,
                              "value": x, "met": x >= need})
        big = by.get((65536, t), {})
        if big:
            found.append({"target": "B=65536 runs", "method": t, "value": big.get("peak_extra_mib"),
                          "met": "full_ms" in big})
    return found


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, phase, label in ((axes[0], "forward_ms", "forward"), (axes[1], "full_ms", "forward + backward")):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = [(r["batch"], r[phase]) for r in rows if r["method"] == method and phase in r]
            if pts:
                style = "--" if method in FLOORS else "-"
                ax.plot(*zip(*pts), style, marker="o", label=f"{method} ({METHOD_PRECISION[method]})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel(f"{label}, median ms")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    atomic.save_figure(path, fig)
    plt.close(fig)


@contextmanager
def fp32_matmuls_ieee():
    """Peers run with torch's defaults: fp32 matmuls in IEEE fp32, not TF32."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help=f"B = {QUICK_BATCHES}, 3 repeats")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes")
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--slice-dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 10, quick 3)")
    parser.add_argument("--check-batch", type=int, default=512, help="batch of the kernel check before timing")
    parser.add_argument("--budget-s", type=float, default=330.0, help="skip what is left after this many seconds")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--xbm-sizes", default="4096,16384,65536",
                        help="cross-batch memory sizes Q at B = 96 after the sweep ('' skips)")
    parser.add_argument("--xbm-budget-s", type=float, default=120.0, help="time budget of the memory rows")
    args = parser.parse_args(argv)

    margins = threshold_range()
    table = methods(margins, args.slice_dim)
    chosen = args.methods.split(",") if args.methods else list(table)
    unknown = set(chosen) - set(table)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("on the CPU the triton methods need TRITON_INTERPRET=1 (Triton's interpreter)")
    batches = [int(b) for b in args.batches.split(",")] if args.batches else (QUICK_BATCHES if args.quick else FULL_BATCHES)
    repeats = args.repeats or (3 if args.quick else 10)
    timer = Timer(args.device, repeats)
    card = card_name(args.device) + ("-quick" if args.quick else "")
    started = time.perf_counter()
    report = {
        "card": card, "device": args.device, "torch": torch.__version__, "slices": len(margins),
        "slice_dim": args.slice_dim, "loss": "traditional (as PML)", "repeats": repeats,
        "timing": "CUDA events, L2 flushed (256 MiB write) before each run" if args.device == "cuda" else "wall clock",
        "method_precision": METHOD_PRECISION, "rows": [],
    }
    import triton

    report["triton"] = triton.__version__
    with fp32_matmuls_ieee():
        report["kernel_check"] = check_kernel(args.device, margins, args.slice_dim, args.check_batch)
    report["kernel_check_batch"] = args.check_batch
    print(f"kernel vs float64 reference at B={args.check_batch}:", json.dumps(report["kernel_check"]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not all(r["ok"] for r in report["kernel_check"].values()):
        atomic.write_json(out / f"{card}-failed-check.json", report)
        print(f"kernel check failed: see {out / f'{card}-failed-check.json'}; no timings taken", file=sys.stderr)
        return 1

    for batch in batches:
        gen = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, len(margins) * args.slice_dim, generator=gen).to(args.device).requires_grad_(True)
        labels = torch.randint(0, 7, (batch,), generator=gen).to(args.device)
        for method in chosen:
            row = {"batch": batch, "method": method, "precision": METHOD_PRECISION[method]}
            if batch > MAX_BATCH.get(method, batch):
                row["skipped"] = f"B > {MAX_BATCH[method]}"
            elif time.perf_counter() - started > args.budget_s:
                row["skipped"] = f"time budget of {args.budget_s:.0f} s spent"
            else:
                try:
                    with fp32_matmuls_ieee():
                        row.update(measure(table[method], x, labels, timer, forward_only=method in FLOORS))
                        if batch == 96 and method.startswith("triton") and args.device == "cuda":
                            row["graph_full_ms"] = graph_full_ms(table[method], x, labels, timer)
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

    report["ratios"] = ratios(report["rows"])
    report["targets"] = targets(report["rows"])
    if args.xbm_sizes:
        report["xbm"] = xbm_sweep(args.device, margins, args.slice_dim, [int(q) for q in args.xbm_sizes.split(",")],
                                  timer, args.xbm_budget_s)
        report["targets"] += report["xbm"].get("targets", [])
    report["seconds"] = time.perf_counter() - started
    print(f"{'B':>6} {'method':>14} {'precision':>24} {'fwd ms':>9} {'bwd ms':>9} {'full ms':>9} {'graph':>8} {'MiB':>8}")
    for r in report["rows"]:
        if "forward_ms" not in r:
            print(f"{r['batch']:>6} {r['method']:>14}   skipped: {r['skipped']}")
            continue
        print(f"{r['batch']:>6} {r['method']:>14} {r['precision']:>24} {r['forward_ms']:9.3f} "
              f"{r.get('backward_ms', float('nan')):9.3f} {r.get('full_ms', float('nan')):9.3f} "
              f"{r.get('graph_full_ms', float('nan')):8.3f} {r.get('peak_extra_mib', float('nan')):8.1f}")
    for r in report.get("xbm", {}).get("rows", []):
        if "full_ms" in r:
            print(f"{r['batch']:>6} {r['method']:>14} Q={r['memory_size']:<6} {r['forward_ms']:9.3f} "
                  f"{r['backward_ms']:9.3f} {r['full_ms']:9.3f} {r.get('peak_extra_mib', float('nan')):8.1f} MiB")
    for t in report["targets"]:
        print(f"{'MET ' if t['met'] else 'MISS'} {t['method']:>14}: {t['target']}: {t['value']}")
    atomic.write_json(out / f"{card}.json", report)
    plot(report["rows"], out / f"{card}.png",
         f"multi-threshold triplet loss, N={len(margins)}, d={args.slice_dim}, {card}")
    print(f"wrote {out / f'{card}.json'} and {out / f'{card}.png'} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
