"""The benchmark tools run end to end (CPU smoke runs; speed is measured in bench/, not here)."""
import importlib.util
import json
import os
import sys

import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peers_compute_the_same_loss_as_the_reference():
    from muldml.losses import multi_threshold_triplet_loss

    peers = load("peers")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3 * 16, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (60,), generator=gen)
    margins = [0.1, 0.4, 0.7]
    for dual in (False, True):
        expected = multi_threshold_triplet_loss(x, labels, margins, 16, dual=dual, backend="reference").loss
        got = peers.vectorised(x, labels, torch.tensor(margins, dtype=torch.float64), 16, dual=dual)
        assert abs(float(got) - float(expected)) < 1e-10
    traditional = multi_threshold_triplet_loss(x, labels, margins, 16, dual=False, backend="reference").loss
    assert abs(float(peers.pml_loop(x, labels, margins, 16)) - float(traditional)) < 1e-6


def test_gpu_sweep_smoke_run_on_cpu(tmp_path):
    sweep = load("gpu_sweep")
    methods = "triton-tf32,torch-backend,reference,pml-loop,vectorised,gram-tf32"
    assert sweep.main(["--device", "cpu", "--batches", "20,70", "--repeats", "1", "--slice-dim", "16",
                       "--check-batch", "150", "--methods", methods, "--out", str(tmp_path),
                       "--xbm-sizes", "96,160"]) == 0
    (report_path,) = tmp_path.glob("*.json")
    report = json.loads(report_path.read_text())
    check = report["kernel_check"]
    assert set(check) == {"tf32", "tf32x3", "bf16"} and all(c["ok"] and c["grad_rel_err"] < 1e-4 for c in check.values())
    rows = report["rows"]
    assert len(rows) == 2 * 6 and all(r["forward_ms"] > 0 for r in rows)
    assert all(r["full_ms"] > 0 for r in rows if r["method"] != "gram-tf32")
    assert all(r["distance_tflops"] > 0 for r in rows if r["method"] == "triton-tf32")
    assert {(r["versus"], r["phase"]) for r in report["ratios"] if r["batch"] == 70} >= {
        ("pml-loop", "full_ms"), ("gram-tf32", "forward_ms")}
    assert report_path.with_suffix(".png").stat().st_size > 1000
    xbm = report["xbm"]  # cross-batch memory: checked against the reference, then timed against PML's
    assert xbm["check"]["ok"] and xbm["check"]["memory_mined"]
    assert [(r["memory_size"], r["method"]) for r in xbm["rows"]] == [
        (q, m) for q in (96, 160) for m in ("triton-tf32", "torch-backend", "pml-xbm")]
    assert all(r["full_ms"] > 0 for r in xbm["rows"])
    assert {(r["memory_size"], r["muldml"]) for r in xbm["ratios"]} == {
        (q, m) for q in (96, 160) for m in ("triton-tf32", "torch-backend")}


def test_gpu_sweep_fails_on_a_kernel_mismatch(tmp_path, monkeypatch):
    sweep = load("gpu_sweep")
    monkeypatch.setattr(sweep, "check_kernel", lambda *args: {"tf32": {"ok": False}})
    assert sweep.main(["--device", "cpu", "--batches", "20", "--repeats", "1", "--slice-dim", "16",
                       "--methods", "triton-tf32", "--out", str(tmp_path)]) == 1
    assert [p.name for p in tmp_path.glob("*.json")] == ["cpu-%dcores-failed-check.json" % os.cpu_count()]


def test_gpu_sweep_targets_say_met_or_missed_by_how_much():
    sweep = load("gpu_sweep")
    rows = [
        {"batch": 8192, "method": "triton-tf32", "forward_ms": 1.5, "full_ms": 2.0},
        {"batch": 8192, "method": "gram-tf32", "forward_ms": 1.0},
        {"batch": 8192, "method": "vectorised", "forward_ms": 9.0, "full_ms": 30.0},
        {"batch": 96, "method": "triton-tf32", "forward_ms": 0.2, "full_ms": 0.4, "graph_full_ms": 0.1},
        {"batch": 96, "method": "pml-loop", "forward_ms": 3.0, "full_ms": 6.0},
    ]
    found = {t["target"]: t for t in sweep.targets(rows) if t["method"] == "triton-tf32"}
    gram = found["forward <= 1.3x TF32 Gram at B=8192"]
    assert gram["value"] == 1.5 and not gram["met"]
    assert found["full_ms >= 5x faster than vectorised at B=8192"]["value"] == 15.0
    assert found["full_ms >= 5x faster than vectorised at B=8192"]["met"]
    assert found["full_ms >= 20x faster than pml-loop at B=96"] == {
        "target": "full_ms >= 20x faster than pml-loop at B=96", "method": "triton-tf32", "value": 15.0, "met": False}
    assert found["graph_full_ms >= 20x faster than pml-loop at B=96"]["met"]
    ratio = [r for r in sweep.ratios(rows) if r["versus"] == "gram-tf32"]
    assert ratio == [{"batch": 8192, "triton": "triton-tf32", "versus": "gram-tf32", "phase": "forward_ms",
                      "versus_precision": "tf32", "ratio": 1.0 / 1.5}]
