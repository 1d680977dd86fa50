"""`*_PRECISION=auto`: the CPU's flags read once, and the default each device gets from them."""

from __future__ import annotations

import pytest
import torch

from config import Settings
from services.engine.hardware import CpuFeatures, auto_gpt_precision, cpu_features, parse_cpuinfo
from services.engine.model_loader import LoadedModel, ModelChoice, load_model

XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: a second core is not read
"""
OLD_LAPTOP = "model name\t: Intel(R) Core(TM) i5-4300U\nflags\t\t: fpu sse avx avx2 fma\n"


@pytest.mark.unit
def test_cpuinfo_gives_the_model_and_the_flags_that_decide_kernels() -> None:
    cpu = parse_cpuinfo(XEON_AMX)
    assert cpu.model == "Intel(R) Xeon(R) Processor"
    assert cpu.int8_dot_products and cpu.native_bf16
    assert cpu.summary == (
        "Intel(R) Xeon(R) Processor (avx2, avx512f, avx512_vnni, avx512_bf16, amx_int8, amx_bf16, amx_tile)"
    )
    old = parse_cpuinfo(OLD_LAPTOP)
    assert not old.int8_dot_products and not old.native_bf16
    assert old.summary == "Intel(R) Core(TM) i5-4300U (avx2)"
    assert parse_cpuinfo("") == CpuFeatures("unknown CPU", frozenset())


@pytest.mark.unit
def test_auto_runs_the_gpt_in_int8_on_every_cpu_and_float32_on_a_gpu() -> None:
    for text in (XEON_AMX, OLD_LAPTOP, ""):
        precision, reason = auto_gpt_precision(torch.device("cpu"), parse_cpuinfo(text))
        assert precision == "int8" and "int8" in reason
    assert "hardware" in auto_gpt_precision(torch.device("cpu"), parse_cpuinfo(XEON_AMX))[1]
    precision, reason = auto_gpt_precision(torch.device("cuda"), parse_cpuinfo(XEON_AMX))
    assert precision == "float32" and "GPU bench" in reason


@pytest.mark.unit
def test_auto_is_the_default_and_a_named_precision_is_kept() -> None:
    assert Settings(_env_file=None).GPT_PRECISION == "auto"  # type: ignore[call-arg]
    assert Settings(_env_file=None, GPT_PRECISION="float32").GPT_PRECISION == "float32"  # type: ignore[call-arg]


@pytest.mark.engine
def test_the_loader_resolves_auto_and_says_why(tiny_loaded: LoadedModel) -> None:
    loaded = load_model(ModelChoice(dummy="tiny", use_cpu=True, gpt_precision="auto"))
    assert loaded.gpt_precision == "int8"
    assert loaded.gpt_precision_reason.startswith("auto on the CPU: int8")
    assert loaded.cpu == cpu_features().summary
    named = tiny_loaded  # loaded with GPT_PRECISION=float32
    assert (named.gpt_precision, named.gpt_precision_reason) == ("float32", "set")
