"""GPU readiness without a GPU: what the launcher launches builds for sm_80 and sm_90a.

kernels/triplet/aot.py records the launches of real calls (every precision, input dtype and
switch) under the interpreter, binds them with the JIT's own specialisation for a CUDA
target over every autotuner configuration (symmetric mining tiles and full ones), and
compiles them. Here: no build spills, shared memory fits the card, and the mining runs on
tensor cores (wgmma on sm_90a, mma.sync on sm_80) with its MMAs overlapping the next K step
on sm_90a for tf32 and bf16.

Runs in a subprocess without TRITON_INTERPRET (set for the other tests); about six
minutes on two shared CPU cores.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Shared memory a block may use: A100 (sm_80) 163 KiB, H100/H200 (sm_90) 227 KiB.
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90a": 227 * 1024}


@pytest.fixture(scope="module")
def builds():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    repo = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-m", "kernels.triplet.aot", "--json"], env=env, cwd=repo,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)["builds"]


def test_every_recorded_launch_built_for_both_archs(builds):
    from muldml.kernels.triplet.aot import CASES, KERNEL_NAMES, MEMORY_KERNELS

    for arch in SHARED_LIMIT:
        for kernel in KERNEL_NAMES:
            cases = {c for b in builds if b["arch"] == arch and b["kernel"] == kernel for c in b["cases"]}
            # The memory's kernels run only in the calls with a cross-batch memory.
            assert cases == {c.name for c in CASES if c.memory or kernel not in MEMORY_KERNELS}, (arch, kernel, cases)
    # Integers equal to 1 became constants, as the JIT does: contiguous input has stride_col == 1.
    default = [b for b in builds if b["kernel"] == "hinge" and "default" in b["cases"]]
    assert default and all(b["config"].get("stride_col") == 1 for b in default)


def test_no_register_spills(builds):
    spilling = [b for b in builds if b["spill_stores"] or b["spill_loads"]]
    assert not spilling, json.dumps(spilling, indent=1)
    assert all(0 < b["registers"] <= 255 for b in builds)


def test_shared_memory_within_card_limit(builds):
    for b in builds:
        assert b["shared_bytes"] <= SHARED_LIMIT[b["arch"]], b


def test_mining_runs_on_tensor_cores(builds):
    mining = [b for b in builds if b["kernel"] in ("mine", "mine_memory")]
    assert {b["precision"] for b in mining if b["kernel"] == "mine_memory"} == {"tf32", "tf32x3", "bf16"}
    assert {b["precision"] for b in mining} == {"tf32", "tf32x3", "bf16"}
    for b in mining:
        if b["arch"] == "sm_90a":
            assert b["hgmma"] > 0 and b["hmma"] == 0, b
        else:
            assert b["hmma"] > 0 and b["hgmma"] == 0, b
    # The default forward (tf32 mining of fp32 input): wgmma, pipelined over ≥ 2 stages with
    # one group in flight while the next loads, and no FMA loop for the products.
    default = [b for b in mining if "default" in b["cases"] and b["arch"] == "sm_90a"]
    assert default and all(b["wait_depth"] >= 1 and b["config"]["num_stages"] >= 2 for b in default), default
    for b in default:  # CUDA-core FMAs: the epilogue's two scores per element of the tile, no more
        c = b["config"]
        assert b["ffma"] <= 2 * c["BLOCK_M"] * c["BLOCK_N"] // (32 * c["num_warps"]), b
    assert all(b["wait_depth"] >= 1 for b in mining if b["arch"] == "sm_90a" and b["precision"] == "bf16")
    # The row kernels have no products to put on tensor cores.
    assert not any(b["hgmma"] or b["hmma"] for b in builds if b["kernel"] not in ("mine", "mine_memory"))
