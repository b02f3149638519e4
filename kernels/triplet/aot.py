"""Launch-faithful GPU builds of the kernels, no GPU needed.

What a GPU would run depends on the arguments of each launch: the JIT turns ints equal
to 1 into constants and marks ints divisible by 16 and 16-byte-aligned pointers as such,
and the autotuner adds its configurations. So this module

1. records the launches of real calls of the loss (forward and backward) under Triton's
   interpreter, in a child process with TRITON_INTERPRET=1: every precision, input dtype
   and switch, aligned and ragged shapes, strided input, int32 and int64 labels, one row
   block and several;
2. replays each launch through the JIT's own binder for a CUDA target (the specialisation
   above), over every configuration the autotuner may pick, and builds it with
   triton.compile for sm_80 and sm_90a;
3. reads ptxas's report (registers, spill bytes) and the SASS (cuobjdump, both shipped
   inside Triton): HGMMA (wgmma, Hopper tensor cores), HMMA (mma.sync tensor cores),
   FFMA (CUDA-core fma), and the deepest `wgmma.wait_group N` (0: no MMA overlaps the next).

    python -m kernels.triplet.aot            # table, from the repository root
    python -m kernels.triplet.aot --json     # the same as JSON (tests/kernels/triplet/test_aot.py)
    python -m kernels.triplet.aot --save-launches L.json   # record only (e.g. with one Triton) …
    python -m kernels.triplet.aot --launches L.json        # … and build them (e.g. with another)

Run it where TRITON_INTERPRET is unset.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

ARCHS = (80, 90)
KERNEL_NAMES = ("stats", "prepare", "mine", "prepare_memory", "mine_memory", "hinge", "finish", "backward")
MEMORY_KERNELS = ("prepare_memory", "mine_memory")  # launched only with a cross-batch memory
TUNED = {"mine": "MINE", "mine_memory": "MINE_MEMORY"}  # autotuned kernels: their table in fused.py


@dataclass(frozen=True)
class Case:
    """One recorded call of the loss: forward and backward."""

    name: str
    batch: int = 96
    slice_dim: int = 256
    num_slices: int = 2
    dtype: str = "float32"
    precision: str = "tf32"
    dual: bool = True
    normalize: bool = True
    labels: str = "int64"
    column_stride: int = 1
    memory: int = 0  # rows of a cross-batch memory (0: none)


CASES = [
    Case("default"),
    Case("tf32x3", precision="tf32x3"),
    Case("bf16-mining", precision="bf16"),
    Case("fp16-input", dtype="float16"),
    Case("bf16-input", dtype="bfloat16"),
    Case("fp64-input", dtype="float64"),
    Case("traditional", dual=False),
    Case("unnormalised", normalize=False),
    Case("traditional-unnormalised", dual=False, normalize=False),
    Case("int32-labels", labels="int32"),
    Case("ragged", batch=50, slice_dim=20),
    Case("strided", column_stride=2),
    Case("large", batch=384),  # several row blocks: off-diagonal mining tiles
    Case("memory", memory=300),  # cross-batch memory: three memory tiles, the last ragged
    Case("memory-tf32x3", precision="tf32x3", memory=300),
    Case("memory-bf16-mining", precision="bf16", memory=300),
]


# ---------------------------------------------------------------- recording (interpreter)

def _describe(value):
    """A launch argument as JSON: tensors by dtype and 16-byte alignment, scalars as is."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch."), "aligned": value.data_ptr() % 16 == 0}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"cannot record a launch argument of type {type(value).__name__}")


class _Recorder:
    """Stands in for a kernel: logs each launch's arguments, then runs the kernel."""

    def __init__(self, name, kernel, log, case, precision=None):
        self.name, self.kernel, self.log, self.case, self.precision = name, kernel, log, case, precision

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append({
                "kernel": self.name, "case": self.case[0], "precision": self.precision,
                "args": [_describe(a) for a in args], "kwargs": {k: _describe(v) for k, v in kwargs.items()},
            })
            return self.kernel[grid](*args, **kwargs)

        return launch


def record_launches(cases: list[Case] = CASES) -> list[dict]:
    """Run each case's forward and backward under the interpreter; return its launches."""
    import torch

    from muldml.kernels.triplet import fused
    from muldml.losses import multi_threshold_triplet_loss

    assert fused.INTERPRET, "recording needs TRITON_INTERPRET=1 before the kernels are imported"
    log, current = [], [""]
    for name in KERNEL_NAMES:
        if name in TUNED:
            table = getattr(fused, TUNED[name])
            for precision, kernel in list(table.items()):
                table[precision] = _Recorder(name, kernel, log, current, precision)
            continue
        attr = f"_{name}_kernel"
        setattr(fused, attr, _Recorder(name, getattr(fused, attr), log, current))
    for case in cases:
        current[0] = case.name
        gen = torch.Generator().manual_seed(0)
        width = case.num_slices * case.slice_dim
        x = torch.randn(case.batch, width * case.column_stride, generator=gen)[:, :: case.column_stride]
        x = x.to(getattr(torch, case.dtype)).requires_grad_(True)
        labels = torch.randint(0, 5, (case.batch,), generator=gen).to(getattr(torch, case.labels))
        margins = [0.15 + 0.1 * i for i in range(case.num_slices)]
        memory = None
        if case.memory:
            rows = torch.nn.functional.normalize(torch.randn(case.memory, case.num_slices, case.slice_dim,
                                                             generator=gen), dim=2).reshape(case.memory, width)
            memory = (rows, torch.randint(0, 5, (case.memory,), generator=gen).to(labels.dtype))
        out = multi_threshold_triplet_loss(x, labels, margins, case.slice_dim, dual=case.dual,
                                           normalize=case.normalize, backend="triton", precision=case.precision,
                                           memory=memory)
        out.loss.backward()
    return log


# ---------------------------------------------------------------- building (no interpreter)

class _ArgStandIn:
    """What the JIT's binder reads of a tensor argument: its dtype and address alignment."""

    def __init__(self, dtype: str, aligned: bool):
        import torch

        self.dtype = getattr(torch, dtype)
        self._ptr = 16 if aligned else 4

    def data_ptr(self) -> int:
        return self._ptr


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


@dataclass
class Build:
    """One launch-faithful build and what ptxas and the SASS say about it."""

    kernel: str
    arch: str
    cases: list
    precision: str | None
    config: dict  # constexprs, num_warps, num_stages
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    shared_bytes: int
    hgmma: int  # wgmma instructions in the SASS (Hopper tensor cores)
    hmma: int  # mma.sync instructions (Ampere-style tensor cores)
    ffma: int  # fp32 FMA on CUDA cores
    instructions: int  # SASS instructions in all (static count)
    wait_depth: int | None  # deepest wgmma.wait_group N; None without wgmma
    compile_s: float


def _specialise(launch: dict, target):
    """Bind a recorded launch as the JIT would: returns (fn, ASTSource, options, config)."""
    import triton
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    from muldml.kernels.triplet import fused

    args = [_ArgStandIn(a["tensor"], a["aligned"]) if isinstance(a, dict) else a for a in launch["args"]]
    kwargs = dict(launch["kwargs"])
    if "INTERPRETED" in kwargs:  # the one argument set for the interpreter only
        kwargs["INTERPRETED"] = False
    if launch["kernel"] in TUNED:
        tuner = getattr(fused, TUNED[launch["kernel"]])[launch["precision"]]
        fn, variants = tuner.fn, [c.all_kwargs() for c in tuner.configs]
    else:
        fn, variants = getattr(fused, f"_{launch['kernel']}_kernel"), [{}]
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    for extra in variants:
        call = {**kwargs, **extra}
        bound, specialization, options = binder(*args, **call)
        options, signature, constexprs, attrs = fn._pack_args(backend, call, bound, specialization, options)
        config = {fn.arg_names[k[0]]: v for k, v in constexprs.items() if not isinstance(v, triton.runtime.jit.JITFunction)}
        config.update(num_warps=options.num_warps, num_stages=options.num_stages)
        yield fn, ASTSource(fn, signature, constexprs, attrs), options, config


def _measure(compiled, arch: str) -> dict:
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        ptx_path, cubin_path = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx_path, "w") as f:
            f.write(ptx)
        report = subprocess.run([_tool("ptxas"), f"-arch={arch}", "-v", ptx_path, "-o", os.path.join(tmp, "v.cubin")],
                                capture_output=True, text=True, check=True)
        with open(cubin_path, "wb") as f:
            f.write(compiled.asm["cubin"])  # the cubin Triton built: what would be loaded
        sass = subprocess.run([_tool("cuobjdump"), "-sass", cubin_path], capture_output=True, text=True,
                              check=True).stdout
    text = report.stdout + report.stderr
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    waits = [int(n) for n in re.findall(r"wgmma\.wait_group\.sync\.aligned\s+(\d+)", ptx)]
    return dict(
        registers=int(re.search(r"Used (\d+) registers", text).group(1)),
        spill_stores=int(spills.group(1)), spill_loads=int(spills.group(2)),
        shared_bytes=int(compiled.metadata.shared),
        hgmma=len(re.findall(r"\bHGMMA\.", sass)), hmma=len(re.findall(r"\bHMMA\.", sass)),
        ffma=len(re.findall(r"\bFFMA\b", sass)),
        instructions=len(re.findall(r"/\*[0-9a-f]{4,}\*/\s+[A-Z@]", sass)),
        wait_depth=max(waits) if waits else None,
    )


def build_all(launches: list[dict]) -> list[Build]:
    """Compile every distinct specialisation among `launches` for each arch in ARCHS."""
    import triton
    from triton.backends.compiler import GPUTarget

    builds: dict[tuple, Build] = {}
    for capability in ARCHS:
        target = GPUTarget("cuda", capability, 32)
        arch = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
        for launch in launches:
            for fn, src, options, config in _specialise(launch, target):
                key = (capability, src.hash(), str(options.__dict__))
                if key in builds:
                    if launch["case"] not in builds[key].cases:
                        builds[key].cases.append(launch["case"])
                    continue
                start = time.perf_counter()
                compiled = triton.compile(src, target=target, options=options.__dict__)
                seconds = time.perf_counter() - start
                builds[key] = Build(kernel=launch["kernel"], arch=arch, cases=[launch["case"]],
                                    precision=launch["precision"], config=config, compile_s=round(seconds, 2),
                                    **_measure(compiled, arch))
    return list(builds.values())


def recorded_launches() -> list[dict]:
    """Record in a child process under the interpreter (it must be set before import)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = ("import json, sys; from muldml.kernels.triplet.aot import record_launches; "
            "json.dump(record_launches(), sys.stdout)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"recording the launches failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def table(builds: list[Build]) -> str:
    head = f"{'arch':7} {'kernel':14} {'precision':9} {'tiles / warps / stages':28} {'regs':>4} {'spill':>7} " \
           f"{'smem':>6} {'HGMMA':>5} {'HMMA':>5} {'FFMA':>5} {'SASS':>5} {'wait':>4}  cases"
    lines = [head]
    for b in sorted(builds, key=lambda b: (b.arch, KERNEL_NAMES.index(b.kernel), b.precision or "", b.cases[0])):
        c = b.config
        tiles = "×".join(str(c[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_R", "BLOCK_D") if k in c)
        shape = f"{tiles}{' sym' if c.get('SYMMETRIC') else ''} / {c['num_warps']} / {c['num_stages']}"
        wait = "-" if b.wait_depth is None else str(b.wait_depth)
        cases = ",".join(b.cases)
        lines.append(f"{b.arch:7} {b.kernel:14} {b.precision or '-':9} {shape:28} {b.registers:4d} "
                     f"{b.spill_stores:3d}/{b.spill_loads:<3d} {b.shared_bytes:6d} {b.hgmma:5d} {b.hmma:5d} "
                     f"{b.ffma:5d} {b.instructions:5d} {wait:>4}  {cases[:60]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Launch-faithful sm_80 / sm_90a builds of the loss kernels.")
    parser.add_argument("--json", action="store_true", help="print the builds as JSON instead of a table")
    parser.add_argument("--save-launches", metavar="FILE", help="record the launches into FILE and stop")
    parser.add_argument("--launches", metavar="FILE", help="build the launches recorded in FILE")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: building for a GPU needs the compiler, not the interpreter")
    import triton

    start = time.perf_counter()
    if args.launches:
        with open(args.launches) as f:
            launches = json.load(f)
    else:
        launches = recorded_launches()
    if args.save_launches:
        with open(args.save_launches, "w") as f:
            json.dump(launches, f)
        return 0
    builds = build_all(launches)
    if args.json:
        json.dump({"triton": triton.__version__, "builds": [asdict(b) for b in builds]}, sys.stdout)
    else:
        print(table(builds))
        print(f"triton {triton.__version__}: {len(builds)} builds in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
