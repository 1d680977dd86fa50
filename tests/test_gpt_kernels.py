"""The GPT's int8 kernels (services/engine/gpt_kernels.py): batch-invariant, and within a bound of float32.

A stream's numbers must not depend on which other streams share its batch: a row computed alone must equal
that row inside a batch whose other rows are wildly different (huge, tiny, offset, heavy-tailed), to float
tolerance. OpenVINO quantizes activations per token (in groups of 128 inputs), so it passes; a kernel that
quantizes with one scale per call (torch.ao's dynamic linear) does not, and the same check says so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from services.engine import gpt_kernels
from services.engine.batched_gpt import SlotKVCache, decode_step, prefill
from services.engine.block_parts import block_parts
from services.engine.model_loader import LoadedModel
from services.engine.precision import apply_gpt_precision, run_transformer

pytestmark = pytest.mark.engine

needs_openvino = pytest.mark.skipif(gpt_kernels.openvino_missing() is not None, reason="OpenVINO cannot run here")
WIDTH = 1024
# int8 weights per channel, activations per token: measured 40-45 dB on ordinary rows and on the full GPT's
# hidden states, 35 dB on a heavy-tailed row (x^5)
MIN_INT8_SNR_DB = 33.0


def snr_db(signal: torch.Tensor, reference: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).sum() / (signal - reference).pow(2).sum().clamp_min(1e-30)))


def random_conv(inputs: int, outputs: int, seed: int) -> Conv1D:
    generator = torch.Generator().manual_seed(seed)
    conv = Conv1D(outputs, inputs)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(inputs, outputs, generator=generator) * 0.02)
        conv.bias.copy_(torch.randn(outputs, generator=generator) * 0.01)
    return conv


def mixed_batch(rows: int = 4) -> torch.Tensor:
    """Row 0 an ordinary activation; the others as unlike it as a batch could make them."""
    generator = torch.Generator().manual_seed(1)
    ordinary = torch.randn(WIDTH, generator=generator)
    others = [
        torch.randn(WIDTH, generator=generator) * 1e3,
        torch.randn(WIDTH, generator=generator) * 1e-3 + 5.0,
        torch.randn(WIDTH, generator=generator) ** 5,
    ]
    return torch.stack([ordinary, *(others * rows)[: rows - 1]])


def batch_vs_alone(kernel: Callable[[torch.Tensor], torch.Tensor], rows: int = 4) -> float:
    """The largest difference between row 0 alone and row 0 in the batch, relative to its size."""
    batch = mixed_batch(rows)
    with torch.inference_mode():
        alone = kernel(batch[:1])[0]
        together = kernel(batch)[0]
    return float((together - alone).abs().max() / alone.abs().max())


class _GptMlp(nn.Module):
    """GPT-2's MLP as transformers builds it (c_fc -> gelu_new -> c_proj), for the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.c_fc = random_conv(WIDTH, 4 * WIDTH, seed=2)
        self.c_proj = random_conv(4 * WIDTH, WIDTH, seed=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(nn.functional.gelu(self.c_fc(x), approximate="tanh"))


@needs_openvino
@pytest.mark.parametrize("rows", [4, 100])
def test_a_row_in_a_batch_is_computed_as_alone(rows: int) -> None:
    """Four rows (a batched step) and a hundred (a prefill's size): bit for bit, or float rounding at most."""
    linear = gpt_kernels.openvino_linear(random_conv(WIDTH, 3 * WIDTH, seed=0))
    mlp = gpt_kernels.openvino_mlp(_GptMlp(), "gelu_new")
    assert batch_vs_alone(linear, rows) < 1e-6
    assert batch_vs_alone(mlp, rows) < 1e-6


def test_the_check_catches_one_activation_scale_per_call() -> None:
    """torch.ao's dynamic int8 linear quantizes a call's activations on one range: the batch moves row 0."""
    conv = random_conv(WIDTH, 3 * WIDTH, seed=0)
    linear = nn.Linear(WIDTH, 3 * WIDTH)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        linear.bias.copy_(conv.bias)
    per_call = torch.ao.nn.quantized.dynamic.Linear.from_float(_with_qconfig(linear))
    assert batch_vs_alone(per_call) > 1e-2


def _with_qconfig(linear: nn.Linear) -> nn.Linear:
    linear.qconfig = torch.ao.quantization.default_dynamic_qconfig  # type: ignore[assignment]
    return linear


@needs_openvino
def test_int8_stays_within_its_bound_of_float32() -> None:
    conv, mlp = random_conv(WIDTH, 3 * WIDTH, seed=0), _GptMlp()
    batch = mixed_batch(8)
    with torch.inference_mode():
        for reference, kernel in (
            (conv, gpt_kernels.openvino_linear(conv)),
            (mlp, gpt_kernels.openvino_mlp(mlp, "gelu_new")),
        ):
            for row in batch:
                snr = snr_db(kernel(row[None])[0], reference(row[None])[0])
                assert MIN_INT8_SNR_DB <= snr < 100, snr  # < 100: the weights really are int8


@needs_openvino
def test_the_decode_step_on_openvino_equals_a_full_forward_pass_per_row(tiny_loaded: LoadedModel) -> None:
    """Prefill (many positions in a call) and the batched step (one per row) run the same kernels."""
    gpt = copy.deepcopy(tiny_loaded.model.gpt)
    choice = apply_gpt_precision(gpt, "int8", torch.device("cpu"), kernel="openvino-int8")
    assert choice.kernel == "openvino-int8"
    assert isinstance(gpt.gpt.h[0].mlp, gpt_kernels.OpenVinoKernel)
    width = gpt.gpt.config.n_embd
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        cache = SlotKVCache(gpt, torch.device("cpu"))
        histories = [torch.randn(1, length, width, generator=generator) for length in (40, 71, 55)]
        histories[1] = histories[1] * 50  # a loud row next to quiet ones
        for history in histories:
            cache.add_row(prefill(gpt, history, None)[1])
        for _ in range(3):
            inputs = torch.randn(len(histories), width, generator=generator)
            hidden = decode_step(gpt, cache, inputs, [True] * len(histories))
            for row, history in enumerate(histories):
                histories[row] = torch.cat([history, inputs[row][None, None]], dim=1)
                expected = run_transformer(gpt, histories[row])[0, -1]
                assert torch.allclose(hidden[row], expected, atol=1e-4), row
    # OpenVINO's calls are opaque to tracing: the blocks run eagerly around them
    assert not any(isinstance(before, torch.jit.ScriptModule) for before, _ in block_parts(gpt))


def test_int8_runs_torchs_rowwise_kernels_unless_openvino_is_named(
    tiny_loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured faster as a whole step on this CPU class (see choose_int8_kernel); OpenVINO's only when named."""
    gpt = copy.deepcopy(tiny_loaded.model.gpt)
    choice = apply_gpt_precision(gpt, "int8", torch.device("cpu"))
    assert choice.kernel == "torch-rowwise-int8" and "rowwise" in choice.reason
    assert not isinstance(gpt.gpt.h[0].mlp, gpt_kernels.OpenVinoKernel)
    for dot_products in (True, False):
        assert gpt_kernels.choose_int8_kernel(dot_products, "a CPU").kernel == "torch-rowwise-int8"
    monkeypatch.setattr(gpt_kernels, "openvino_missing", lambda: "openvino is not importable (test)")
    with pytest.raises(ValueError, match="not importable"):
        apply_gpt_precision(copy.deepcopy(tiny_loaded.model.gpt), "int8", torch.device("cpu"), kernel="openvino-int8")
