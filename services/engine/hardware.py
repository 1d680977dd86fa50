"""What this machine's processor can do, and the defaults picked from it at start-up (`*_PRECISION=auto`).

The CPUs behind a deployment vary (AMD EPYC with AVX-512 VNNI and BF16, Intel Xeon with AMX int8/bf16,
older AVX2-only parts), and the fastest path differs between them: the choice is made once, from the flags
the kernel reports, and `/health` and the start-up log say what was chosen and why.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from services.engine.precision import GptPrecision

# The flags that decide a kernel, in the order a reader wants them named.
_NAMED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class CpuFeatures:
    """The processor's model name and the instruction-set flags that matter to our kernels."""

    model: str
    flags: frozenset[str]

    @property
    def summary(self) -> str:
        """The model and the deciding flags it has, for the log and /health."""
        named = [flag for flag in _NAMED_FLAGS if flag in self.flags]
        return f"{self.model} ({', '.join(named) or 'no AVX2'})"

    @property
    def int8_dot_products(self) -> bool:
        """VNNI or AMX: int8 matrix products in hardware (else int8 still saves memory bandwidth)."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def native_bf16(self) -> bool:
        """bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX); without it bf16 is emulated and slow."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The first processor's model name and flags from /proc/cpuinfo's text."""
    model, flags = "unknown CPU", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuFeatures(model, flags)


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's CPU (Linux; elsewhere an unknown CPU with no flags, so the safe defaults apply)."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return CpuFeatures("unknown CPU", frozenset())


def auto_gpt_precision(device: torch.device, cpu: CpuFeatures) -> tuple[GptPrecision, str]:
    """GPT_PRECISION=auto: the precision for this device, and why.

    On a CPU every decode step reads all of the GPT's weights, so int8 (a quarter of float32's bytes) is
    the fastest everywhere measured (issue 11: RTF 1.8 against 3.0 over HTTP), with a fidelity bound in
    tests/test_precision.py; VNNI or AMX make its products cheap too. On a GPU float32 stays until the
    GPU bench has shown float16's speed and fidelity there.
    """
    if device.type != "cpu":
        return "float32", f"auto on {device.type}: float32 until the GPU bench has shown float16"
    how = "int8 products in hardware" if cpu.int8_dot_products else "a quarter of float32's weight reads"
    return "int8", f"auto on the CPU: int8 ({how}; {cpu.summary})"
