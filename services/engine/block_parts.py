"""Each transformer block's work before and after attention, as two TorchScript graphs (traced once per model).

A decode step of one row is about 1,000 small torch calls (layer norms, the rowwise int8 layers' few ops
each, residual adds, GELU), and at one row each costs more in Python dispatch than in arithmetic: traced,
the calls between two attentions run in TorchScript's interpreter instead (measured on 2 Xeon cores, full
size, int8: 518 -> 330 us for one block's after-attention part). Attention stays in Python, between the
parts, because it runs row by row over each row's own length (see batched_gpt).

The graphs call the very same modules and ops, so their numbers are bit for bit eager's
(tests/test_block_parts.py), and they work for any number of rows (traced shapes are read at run time).
They run with TorchScript's graph optimization off (`torch.jit.optimized_execution(False)` in
batched_gpt): its profiling executor specialises a graph to the shapes it saw and re-profiles when the row
count changes, which a continuous batch does all the time; the interpreter alone is what saves the time.
Only torch's own layers are traced; a block whose linear layers run elsewhere (OpenVINO's kernels) runs
eagerly, as tracing cannot see into them.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP, GPT2Block
from transformers.pytorch_utils import Conv1D
from TTS.tts.layers.xtts.gpt import GPT

from services.engine.precision import RowwiseQuantizedLinear, transformer_dtype

BeforeAttention = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
AfterAttention = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_PARTS: weakref.WeakKeyDictionary[GPT, list[tuple[BeforeAttention, AfterAttention]]] = weakref.WeakKeyDictionary()


class _Before(nn.Module):
    """x [rows, 1, C] -> query [rows, heads, 1, head_dim], key and value [rows, heads, head_dim]."""

    def __init__(self, block: GPT2Block, heads: int) -> None:
        super().__init__()
        self.ln_1 = block.ln_1
        self.c_attn = block.attn.c_attn
        self.split_size = block.attn.split_size
        self.heads = heads
        self.head_dim = block.attn.split_size // heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = x.shape[0]
        query, key, value = self.c_attn(self.ln_1(x)).split(self.split_size, dim=2)
        query = query.reshape(rows, 1, self.heads, self.head_dim).transpose(1, 2)
        return query, key.reshape(rows, self.heads, self.head_dim), value.reshape(rows, self.heads, self.head_dim)


class _After(nn.Module):
    """x [rows, 1, C] and attention's output [rows, heads, 1, head_dim] -> the block's output [rows, 1, C]."""

    def __init__(self, block: GPT2Block) -> None:
        super().__init__()
        self.c_proj = block.attn.c_proj
        self.ln_2 = block.ln_2
        self.mlp = block.mlp

    def forward(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        x = x + self.c_proj(attended.transpose(1, 2).reshape(rows, 1, -1))
        return x + self.mlp(self.ln_2(x))


def block_parts(gpt: GPT) -> list[tuple[BeforeAttention, AfterAttention]]:
    """Each block's (before, after) attention, traced on first use where only torch runs in them."""
    parts = _PARTS.get(gpt)
    if parts is None:
        transformer = gpt.gpt
        heads = transformer.config.n_head
        eager = [(_Before(block, heads), _After(block)) for block in transformer.h]
        if _traceable(gpt):
            dtype = transformer_dtype(gpt)
            parts = [_traced(before, after, dtype) for before, after in eager]
        else:
            parts = list(eager)
        _PARTS[gpt] = parts
    return parts


def _traceable(gpt: GPT) -> bool:
    """Whether every block runs on torch modules alone (OpenVINO's kernels are opaque to tracing)."""
    torch_linear = (nn.Linear, Conv1D, RowwiseQuantizedLinear)
    return all(
        isinstance(block.mlp, GPT2MLP)
        and all(
            isinstance(layer, torch_linear)
            for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)
        )
        for block in gpt.gpt.h
    )


def _traced(before: _Before, after: _After, dtype: torch.dtype) -> tuple[BeforeAttention, AfterAttention]:
    device = before.ln_1.weight.device
    x = torch.zeros(1, 1, before.heads * before.head_dim, dtype=dtype, device=device)
    attended = torch.zeros(1, before.heads, 1, before.head_dim, dtype=x.dtype, device=x.device)
    with warnings.catch_warnings():  # tracing warns of the shapes it reads: they are read again at run time
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return (
            torch.jit.trace(before, (x,), check_trace=False),  # type: ignore[return-value]
            torch.jit.trace(after, (x, attended), check_trace=False),
        )
