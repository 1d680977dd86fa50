"""The GPT's weight precision (GPT_PRECISION) and the vocoder's (VOCODER_PRECISION).

At batch 1 every decode step reads all of the GPT's weights, so their size sets the speed (on 2 EPYC
cores, 60 linear layers of 1024x4096: fp32 60 ms, bf16 35 ms, int8 7.4 ms). Only the transformer blocks
change precision: the embeddings, the final norms, the heads that make logits, the conditioning encoder
and the sampler stay float32. bfloat16 and float16 cast the blocks (the KV cache follows); int8 is
dynamic quantization of their linear layers (int8 weights, activations quantized per step and per row),
on the kernels services/engine/gpt_kernels.py picks at start-up: OpenVINO's where the CPU has int8 dot
products (VNNI/AMX) and OpenVINO runs, else torch.ao's fbgemm/x86 kernels (RowwiseQuantizedLinear below;
torchao's int8 configs need a newer torch than the 2.9 pinned here).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from transformers.models.gpt2.modeling_gpt2 import GPT2Model
from transformers.pytorch_utils import Conv1D
from TTS.tts.layers.xtts.gpt import GPT
from TTS.tts.layers.xtts.hifigan_decoder import HifiDecoder

from services.engine import gpt_kernels
from services.engine.gpt_kernels import GptKernel, KernelChoice

GptPrecision = Literal["float32", "bfloat16", "float16", "int8"]
VocoderPrecision = Literal["float32", "bfloat16"]
_FLOAT_TYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _conv1d_as_linear(conv: Conv1D) -> nn.Linear:
    """GPT-2's Conv1D is a linear layer with its weight transposed; quantization only knows nn.Linear."""
    linear = nn.Linear(conv.nx, conv.nf, device=conv.weight.device)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        linear.bias.copy_(conv.bias)
    return linear


def apply_gpt_precision(
    gpt: GPT,
    precision: GptPrecision,
    device: torch.device,
    kernel: GptKernel | None = None,
    bf16_prefill: bool | None = None,
) -> KernelChoice:
    """Convert the GPT's transformer blocks in place (call once, after loading, before any generation).

    For int8 the kernel is chosen here, by what this machine has (gpt_kernels.choose_int8_kernel), unless
    `kernel` names one. Returns the kernel the blocks' linear layers now run on, and why.

    With torch's rowwise int8, prompts are prefilled with bfloat16 copies of the weights where the CPU
    multiplies bfloat16 matrices in hardware (AMX; `bf16_prefill` None) or when `bf16_prefill` says so:
    see RowwiseQuantizedLinear.
    """
    if precision == "float32":
        return KernelChoice("torch-float32", "float32 weights through torch")
    transformer = gpt.gpt
    if precision == "int8" and device.type != "cpu":
        raise ValueError("GPT_PRECISION=int8 runs on the CPU only; on a GPU use float16 or bfloat16")
    if precision == "int8":
        choice = _int8_kernel(kernel)
        unsupported = gpt_kernels.supports_openvino(transformer) if choice.kernel != "torch-rowwise-int8" else None
        if unsupported is not None:
            choice = KernelChoice("torch-rowwise-int8", f"{unsupported}; {choice.reason}")
        if choice.kernel == "openvino-int8":
            gpt_kernels.apply_openvino(transformer, bits=8)
            return choice
    # Quantization only knows nn.Linear, and oneDNN's bfloat16 kernels behind F.linear beat addmm on the
    # transposed Conv1D layout (measured: 75 vs 98 ms a token, full size, 2 cores).
    for block in transformer.h:
        for owner in (block.attn, block.mlp):
            for name, child in list(owner.named_children()):
                if isinstance(child, Conv1D):
                    setattr(owner, name, _conv1d_as_linear(child))
    if precision == "int8":
        if bf16_prefill is None:
            bf16_prefill, why = _auto_bf16_prefill()
        else:
            why = "named"
        wide = _bf16_copies(transformer) if bf16_prefill else {}
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
            warnings.simplefilter("ignore", DeprecationWarning)
            from torch.ao.quantization import quantize_dynamic

            quantize_dynamic(transformer.h, {nn.Linear}, dtype=torch.qint8, inplace=True)
        for block in transformer.h:
            for owner in (block.attn, block.mlp):
                for name, child in list(owner.named_children()):
                    if isinstance(child, DynamicQuantizedLinear):
                        setattr(owner, name, RowwiseQuantizedLinear(child, wide.get((id(owner), name))))
        prefill = f"prompts prefilled with bfloat16 weights ({why})" if bf16_prefill else f"prompts in int8 ({why})"
        return KernelChoice(choice.kernel, f"{choice.reason}; {prefill}")
    dtype = _FLOAT_TYPES[precision]
    transformer.to(dtype)
    # XTTS replaces GPT-2's position embeddings with a function returning float32 zeros, which would
    # promote every block's input back to float32: make its zeros the blocks' dtype.
    transformer.wpe = _NullPositions(transformer.embed_dim, dtype)
    return KernelChoice(f"torch-{precision}", f"{precision} weights through torch")  # type: ignore[arg-type]


def _auto_bf16_prefill() -> tuple[bool, str]:
    """Whether int8's prompts run on bfloat16 weights here: where AMX multiplies bfloat16 tiles.

    Prefill is a matrix product of many positions, bound by arithmetic, not by reading weights: on 2
    Xeon cores with AMX, 96 positions took 0.18 s in bfloat16 against 0.33-0.43 s in rowwise int8
    (fbgemm has no AMX path). Without AMX this was not measured, so int8 stays.
    """
    from services.engine.hardware import cpu_features  # hardware imports this module

    if "amx_bf16" in cpu_features().flags:
        return True, "auto: AMX multiplies bfloat16 in hardware, about 2x int8 for prompts"
    return False, "auto: no AMX bfloat16 here"


def _bf16_copies(transformer: GPT2Model) -> dict[tuple[int, str], nn.Linear]:
    """Each block's linear layers as they are before quantization, by (id of the module holding it, name)."""
    return {
        (id(owner), name): child
        for block in transformer.h
        for owner in (block.attn, block.mlp)
        for name, child in owner.named_children()
        if isinstance(child, nn.Linear)
    }


def _int8_kernel(kernel: GptKernel | None) -> KernelChoice:
    """The int8 kernel named, or the one measured fastest for the whole step (gpt_kernels.choose_int8_kernel)."""
    if kernel is not None:
        if kernel not in ("openvino-int8", "torch-rowwise-int8"):
            raise ValueError(f"{kernel} is not an int8 kernel")
        missing = gpt_kernels.openvino_missing() if kernel == "openvino-int8" else None
        if missing is not None:
            raise ValueError(f"the {kernel} kernel cannot run here: {missing}")
        return KernelChoice(kernel, "named")
    from services.engine.hardware import cpu_features  # hardware imports this module

    cpu = cpu_features()
    return gpt_kernels.choose_int8_kernel(cpu.int8_dot_products, cpu.summary)


class RowwiseQuantizedLinear(nn.Module):
    """torch.ao's dynamic int8 linear with each row's activations quantized on their own range.

    torch.ao picks one activation scale per call, from the whole input: in a batch, one stream's numbers
    would then depend on the other streams' activations. Mapping each row affinely onto [0, 1] first gives
    every row the same range, so each is quantized exactly as it would be alone (batch-invariant), and
    with a range fitted to it (measured: 36 vs 32 dB against float32 on a 1024x4096 layer):
    W x = span * W x' + min * rowsum(W) with x' = (x - min) / span.
    """

    def __init__(self, quantized: DynamicQuantizedLinear, wide: nn.Linear | None = None) -> None:
        super().__init__()
        weight = quantized.weight()
        bias = quantized.bias()
        self.in_features = quantized.in_features
        self.out_features = quantized.out_features
        self._packed = torch.ops.quantized.linear_prepack(weight, None)
        # plain attributes, not buffers: int8 runs on the CPU only, and nothing here is saved
        self.row_sums: torch.Tensor = weight.dequantize().sum(dim=1)
        self.offset: torch.Tensor | None = bias.detach().clone() if bias is not None else None
        self.wide_weight: torch.Tensor | None = wide.weight.detach().to(torch.bfloat16) if wide is not None else None
        """The float weights in bfloat16, for `forward_wide` (None: prompts run int8 too)."""

    def forward_wide(self, x: torch.Tensor) -> torch.Tensor:
        """The layer for many positions at once (a prompt's prefill): on bfloat16 weights where they were kept.

        A prompt's positions make a matrix product bound by arithmetic, which AMX does in bfloat16 about
        twice as fast as fbgemm's int8 here; a decode step's few rows are bound by reading the weights,
        where int8's quarter of the bytes wins. Each output row still depends on its own input row alone.
        """
        if self.wide_weight is None:
            return self(x)
        product = F.linear(x.to(torch.bfloat16), self.wide_weight).float()
        return product if self.offset is None else product.add_(self.offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        low, high = torch.aminmax(rows, dim=1, keepdim=True)
        span = (high - low).clamp_min_(1e-12)
        unit = torch.ops.quantized.linear_dynamic((rows - low).div_(span), self._packed, True)
        base = low * self.row_sums if self.offset is None else torch.addcmul(self.offset, low, self.row_sums)
        return base.addcmul_(unit, span).reshape(*x.shape[:-1], self.out_features)


class _NullPositions:
    """XTTS's null position embeddings (positions are added to the inputs before the transformer)."""

    def __init__(self, dim: int, dtype: torch.dtype) -> None:
        self.dim = dim
        self.dtype = dtype

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        return torch.zeros((*positions.shape[:2], self.dim), dtype=self.dtype, device=positions.device)


def apply_vocoder_precision(decoder: HifiDecoder, precision: VocoderPrecision) -> None:
    """Cast HiFi-GAN's weights (its speaker encoder, used for cloning, stays float32).

    bfloat16: 1.5-1.8x faster on AVX-512 BF16 CPUs, 31 dB SNR against float32 on random weights.
    """
    if precision != "float32":
        decoder.waveform_decoder.to(_FLOAT_TYPES[precision])


def transformer_dtype(gpt: GPT) -> torch.dtype:
    """The dtype the transformer blocks take as input (float32 for int8: activations stay float)."""
    return gpt.gpt.ln_f.weight.dtype


def run_transformer(gpt: GPT, inputs_embeds: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """The transformer's last hidden states, in float32 whatever the blocks' precision."""
    dtype = transformer_dtype(gpt)
    output = gpt.gpt(inputs_embeds=inputs_embeds.to(dtype), **kwargs)
    return output.last_hidden_state.float()
