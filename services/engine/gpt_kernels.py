"""The kernels behind GPT_PRECISION=int8 (and int4): OpenVINO compiled models, or torch's rowwise int8.

Every decode step, and every prefill, runs each transformer block's attention projections (`attn.c_attn`,
`attn.c_proj`) and its MLP (`mlp`, two linear layers and a GELU); those modules are what this file
replaces, so `batched_gpt.decode_step` and the blocks' own forward (prefill) run the same kernels.

`openvino-int8`: each projection, and each MLP as a whole (one call for its two layers), is an OpenVINO
model built in memory: int8 weights with one scale per output channel (the Constant(i8) -> Convert ->
Multiply pattern OpenVINO's CPU plugin runs as compressed weights), float32 inference precision, and
activations quantized to int8 on the fly per token, in groups of 128 inputs
(DYNAMIC_QUANTIZATION_GROUP_SIZE): a row's numbers depend on that row alone, so a stream in a batch is
computed exactly as alone (tests/test_gpt_kernels.py). Under OpenVINO's default bf16 inference hint it
does not quantize activations, and compressed weights run 1.6-2.4x slower, so the hint is f32.
Measured on 2 shared Xeon cores (AMX), full size, whole decode step at 300 cached positions
(bench/reference/full-cpu-2cores-gpt-kernels.json): with OMP_WAIT_POLICY=PASSIVE about as fast as torch's
rowwise int8 at 1 and 8 rows, 20% faster at 4 rows and in prefill, 45 against 40 dB SNR to float32,
compiled in half the time; with torch's OpenMP threads spinning (the default) 2.5-4x faster at 1 row.

`torch-rowwise-int8`: precision.RowwiseQuantizedLinear through torch.ao's fbgemm kernels, the fallback
where OpenVINO is not installed or the CPU lacks int8 dot products (VNNI/AMX), which its dynamic
quantization needs to pay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

logger = logging.getLogger(__name__)

GptKernel = Literal[
    "torch-float32", "torch-bfloat16", "torch-float16", "torch-rowwise-int8", "openvino-int8", "openvino-int4"
]

# Activations are quantized per token in groups of this many inputs (1024 = 8 groups).
ACTIVATION_GROUP = 128
# int4 weights: one scale per output channel and group of this many inputs.
INT4_WEIGHT_GROUP = 128
# GPT-2's activation names -> OpenVINO's Gelu approximation.
_GELU_MODES = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "erf"}


@dataclass(frozen=True)
class KernelChoice:
    """The kernel the GPT's linear layers run on, and why (for the start-up log and /health)."""

    kernel: GptKernel
    reason: str


def openvino_missing() -> str | None:
    """Why OpenVINO's CPU plugin cannot run here, or None when it can."""
    try:
        import openvino as ov
    except ImportError as error:  # pragma: no cover - openvino is in requirements.txt
        return f"openvino is not importable ({error})"
    try:
        if "CPU" not in ov.Core().available_devices:
            return "OpenVINO has no CPU device here"
    except Exception as error:  # any failure of the runtime means: do not use it
        return f"OpenVINO's runtime failed ({error.__class__.__name__}: {error})"
    return None


def choose_int8_kernel(int8_dot_products: bool, cpu_summary: str) -> KernelChoice:
    """torch's rowwise int8: on the Xeon (AMX) these figures come from, the whole server measured faster with it.

    OpenVINO's int8 kernels are faster per linear layer, but called three times per block (90 calls a
    decode step, each a hand-over to OpenVINO's threads) the step lost: 76/81/107 ms at 1/4/8 rows
    against torch's 53/76/112 ms (quiet machine, full size, 150 cached positions; /tmp step bench in
    issue 22's note). They stay available (`apply_gpt_precision(..., kernel="openvino-int8")`, bench/gpt_kernels.py)
    for the whole-step OpenVINO model that would remove the hand-overs.
    """
    how = "int8 products in hardware" if int8_dot_products else "no VNNI/AMX: int8 still reads a quarter of the bytes"
    return KernelChoice("torch-rowwise-int8", f"torch's rowwise int8 ({how}); {cpu_summary}")


def quantize_rows(weight: torch.Tensor, bits: int = 8, group: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization of a weight [out, in]: int8 values and float32 scales, one per output channel
    ([out, 1]), or per channel and group of `group` inputs ([out, in / group, 1], values [out, in / group, group])."""
    levels = 2 ** (bits - 1) - 1
    rows = weight.detach().float()
    if group is not None:
        rows = rows.reshape(rows.shape[0], -1, group)
    scale = rows.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / levels
    values = torch.round(rows / scale).clamp_(-levels, levels).to(torch.int8)
    return values.numpy(), scale.numpy()


def _compressed_weight(weight: torch.Tensor, bits: int) -> Any:
    """An OpenVINO node computing the float weight [out, in] from its int8 or int4 form (compressed in memory)."""
    import openvino as ov
    import openvino.opset13 as ops

    if bits == 8:
        values, scale = quantize_rows(weight)
        return ops.multiply(ops.convert(ops.constant(values), ov.Type.f32), ops.constant(scale))
    values, scale = quantize_rows(weight, bits=4, group=INT4_WEIGHT_GROUP)
    packed = _int4_constant(values)
    grouped = ops.multiply(ops.convert(packed, ov.Type.f32), ops.constant(scale))
    return ops.reshape(grouped, ops.constant(np.array(weight.shape, dtype=np.int64)), special_zero=False)


def _int4_constant(values: np.ndarray) -> Any:
    """An i4 Constant holding int8 `values` in [-7, 7] (two to a byte, low nibble first)."""
    import openvino as ov
    import openvino.opset13 as ops

    flat = values.reshape(-1).astype(np.int16) & 0xF
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    tensor = ov.Tensor(ov.Type.i4, ov.Shape(list(values.shape)))
    np.copyto(tensor.data.view(np.uint8).reshape(-1), packed)
    return ops.constant(tensor, shared_memory=False)


def _linear_node(inputs: Any, layer: Conv1D, bits: int) -> Any:
    """x @ W + b for a GPT-2 Conv1D (weight [in, out]), W compressed."""
    import openvino.opset13 as ops

    product = ops.matmul(inputs, _compressed_weight(layer.weight.t(), bits), False, True)
    return ops.add(product, ops.constant(layer.bias.detach().float().numpy()))


def _compile(build: Any, in_features: int) -> Any:
    import openvino as ov
    import openvino.opset13 as ops

    inputs = ops.parameter([-1, in_features], ov.Type.f32)
    model = ov.Model([build(inputs)], [inputs])
    config = {
        "INFERENCE_PRECISION_HINT": "f32",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": str(ACTIVATION_GROUP),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": str(torch.get_num_threads()),
    }
    return _core().compile_model(model, "CPU", config)


_CORE: Any = None


def _core() -> Any:
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


class OpenVinoKernel(nn.Module):
    """An OpenVINO compiled model as a torch module: float32 [..., in] -> float32 [..., out].

    Holds no torch parameters (the weights live in the compiled model), so it cannot be moved to another
    device or deep-copied; it runs on the thread that calls it, one call at a time (the model thread).
    """

    def __init__(self, compiled: Any, in_features: int, out_features: int, what: str) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.what = what
        self._request = compiled.create_infer_request()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().reshape(-1, self.in_features)
        if rows.dtype != torch.float32:
            rows = rows.float()
        self._request.infer({0: rows.contiguous().numpy()}, share_inputs=True)
        # the request reuses its output buffer on the next call: copy it out
        out = torch.from_numpy(self._request.get_output_tensor(0).data.copy())
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.what}, in_features={self.in_features}, out_features={self.out_features}"


def openvino_linear(layer: Conv1D, bits: int = 8) -> OpenVinoKernel:
    """One GPT-2 Conv1D (c_attn or attn.c_proj) as a compressed-weight OpenVINO model."""
    in_features, out_features = layer.weight.shape
    compiled = _compile(lambda inputs: _linear_node(inputs, layer, bits), in_features)
    return OpenVinoKernel(compiled, in_features, out_features, f"linear int{bits}")


def openvino_mlp(mlp: Any, activation: str, bits: int = 8) -> OpenVinoKernel:
    """GPT-2's MLP (c_fc -> GELU -> c_proj; dropout is off in inference) as one OpenVINO model."""
    import openvino.opset13 as ops

    mode = _GELU_MODES[activation]
    fc, proj = mlp.c_fc, mlp.c_proj
    in_features = fc.weight.shape[0]

    def build(inputs: Any) -> Any:
        hidden = ops.gelu(_linear_node(inputs, fc, bits), mode)
        return _linear_node(hidden, proj, bits)

    return OpenVinoKernel(_compile(build, in_features), in_features, proj.weight.shape[1], f"mlp int{bits}")


def supports_openvino(transformer: Any) -> str | None:
    """Why these blocks cannot run on the OpenVINO kernels (an unknown activation, layers not GPT-2's), or None."""
    activation = transformer.config.activation_function
    if activation not in _GELU_MODES:
        return f"the MLP's activation {activation!r} has no OpenVINO kernel here"
    for block in transformer.h:
        layers = (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)
        if not all(isinstance(layer, Conv1D) for layer in layers):
            return "the blocks' linear layers are not GPT-2's Conv1D"
        if getattr(block.attn, "is_cross_attention", False):
            return "cross-attention blocks"
    return None


def apply_openvino(transformer: Any, bits: int = 8) -> None:
    """Replace every block's c_attn, attn.c_proj and mlp with OpenVINO kernels (float32 Conv1D blocks in)."""
    activation = transformer.config.activation_function
    for block in transformer.h:
        attention = block.attn
        attention.c_attn = openvino_linear(attention.c_attn, bits)
        attention.c_proj = openvino_linear(attention.c_proj, bits)
        block.mlp = openvino_mlp(block.mlp, activation, bits)
