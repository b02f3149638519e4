"""Ahead-of-time GPU compilation of the kernels, no GPU needed.

Builds PTX and a cubin for a CUDA target through triton.compile(ASTSource(...)) and
reads `ptxas -v`'s report (registers, spill bytes, shared memory). Run it in a process
where TRITON_INTERPRET is unset. Used by tests/test_gpu_compile.py and `python -m kernels.aot`.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels import triplet

# Argument types of the kernels' runtime (non-constexpr) arguments, by name.
_ARG_TYPES = {
    "X": "*fp32", "LABELS": "*i64", "MARGINS": "*fp32", "POS": "*i32", "NEG": "*i32",
    "DIST": "*fp32", "NORMS": "*fp32", "SUMS": "*fp32", "ACTIVE": "*i32", "COUNT": "*i32",
    "GRAD": "*fp32", "WEIGHTS": "*fp32", "GRAD_OUT": "*fp32",
    "stride_row": "i32", "stride_label": "i32", "stride_col": "i32", "B": "i32", "D": "i32", "EPS": "fp32", "SCALE": "fp32",
}
KERNELS = {"forward": triplet._triplet_forward_kernel, "backward": triplet._triplet_backward_kernel}


@dataclass
class CompileReport:
    """What ptxas says about one compiled kernel."""

    kernel: str
    arch: str
    config: dict
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    shared_bytes: int  # Triton's static shared memory for the launch
    uses_wgmma: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _ptxas() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def compile_kernel(
    kernel: str, config: triplet.LaunchConfig, capability: int, input_dtype: str = "fp32", **flags
) -> CompileReport:
    """Compile `kernel` ("forward" or "backward") for sm_<capability> and report on it.

    input_dtype: element type of the embeddings ("fp32", "fp16", "bf16").
    flags: the kernel's constexpr switches, DUAL, NORMALIZE and (forward) PRECISION.
    """
    fn = KERNELS[kernel]
    constexprs = {"BLOCK_M": config.block_m, "BLOCK_D": config.block_d, **flags}
    if kernel == "forward":
        constexprs["BLOCK_N"] = config.block_n
    types = {**_ARG_TYPES, "X": f"*{input_dtype}"}
    signature = {name: "constexpr" if name in constexprs else types[name] for name in fn.arg_names}
    compiled = triton.compile(
        ASTSource(fn, signature, constexprs),
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )
    ptx = compiled.asm["ptx"]
    arch = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        result = subprocess.run(
            [_ptxas(), f"-arch={arch}", "-v", path, "-o", os.path.join(tmp, "kernel.cubin")],
            capture_output=True, text=True, check=True,
        )
    report = result.stdout + result.stderr
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    registers = re.search(r"Used (\d+) registers", report)
    return CompileReport(
        kernel=kernel,
        arch=arch,
        config={**asdict(config), **flags, "input_dtype": input_dtype},
        registers=int(registers.group(1)),
        spill_stores=int(spills.group(1)),
        spill_loads=int(spills.group(2)),
        shared_bytes=int(compiled.metadata.shared),
        uses_wgmma="wgmma" in ptx,
    )


def launcher_builds() -> list[tuple[str, triplet.LaunchConfig, dict]]:
    """Every (kernel, config, compile arguments) the launcher can run: all tile configs ×
    all constexpr switches in fp32, and the half-precision inputs at the default switches."""
    builds = []
    for kernel, config in triplet.all_launch_configs():
        precisions = ("ieee", "tf32") if kernel == "forward" else (None,)
        for dual in (True, False):
            for normalize in (True, False):
                for precision in precisions:
                    flags = {"DUAL": dual, "NORMALIZE": normalize}
                    if precision:
                        flags["PRECISION"] = precision
                    builds.append((kernel, config, flags))
                    if dual and normalize and precision in ("ieee", None):
                        builds += [(kernel, config, {**flags, "input_dtype": t}) for t in ("fp16", "bf16")]
    return builds


if __name__ == "__main__":
    for capability in (80, 90):
        for kernel, config, flags in launcher_builds():
            r = compile_kernel(kernel, config, capability, **flags)
            print(f"{r.arch} {kernel:8s} {r.config} regs={r.registers} spill={r.spill_stores}/{r.spill_loads} "
                  f"smem={r.shared_bytes} wgmma={r.uses_wgmma}")
