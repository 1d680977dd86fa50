"""The GPT's decode step for a batch of streams at different lengths, over one preallocated KV cache.

Each stream owns a row ("slot") of the cache and its own length; a step writes every stream's new key
and value at that stream's own position and masks the positions beyond it, so the streams share the
weight reads of one forward pass and nothing else. Rows are kept contiguous (a leaving stream's row is
filled by the last one), so a step never gathers or copies the cache.

The step is GPT-2's block written out (ln_1 -> attention -> residual -> ln_2 -> MLP -> residual, then
ln_f), calling the blocks' own submodules, so it runs whatever GPT_PRECISION made of their linear layers.
XTTS adds its position embeddings before the transformer (GPT-2's own are null), so a row's position
matters only through its cache length.

Prompts are prefilled the same way (`prefill_together`): several prompts' chunks go through the blocks'
linear layers as one run of positions (sharing each weight read), and attention is computed row by row.

Batch-invariant: a row's numbers do not depend on the other rows. The linear layers and norms work
token by token (int8's activations are quantized per row, and int8 products are summed exactly), and
attention runs per row over that row's own positions, never over a span padded to the longest row
(CPU attention kernels sum in blocks whose layout follows the span, so padding moved the rounding).
So in int8 a stream, or a long-form job's sentence, is bit for bit the same alone or beside any others
(tests/test_batching.py), as long as its prompt is cut into the same chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP
from TTS.tts.layers.xtts.gpt import GPT

from services.engine.block_parts import block_parts
from services.engine.gpt_sampler import PrefixKV, cache_after, cached_kv
from services.engine.precision import run_transformer, transformer_dtype

# Cache lengths grow in steps of this many positions (a reallocation copies every row once).
_LENGTH_STEP = 256


class SlotKVCache:
    """Keys and values [rows, heads, capacity, head_dim] per layer; row i belongs to one stream."""

    def __init__(self, gpt: GPT, device: torch.device) -> None:
        transformer = gpt.gpt
        self.layers = len(transformer.h)
        self.heads = transformer.config.n_head
        self.head_dim = transformer.config.n_embd // self.heads
        self.dtype = transformer_dtype(gpt)
        self.device = device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []
        """Positions filled in each row; row i is in use while i < len(lengths)."""
        self.peak_bytes = 0
        """The most memory the cache has held (for the benchmark)."""

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def allocated_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def add_row(self, prompt: PrefixKV) -> int:
        """A new row holding a prompt's keys and values ([1, heads, length, head_dim] per layer)."""
        self.lengths.append(0)
        row = len(self.lengths) - 1
        self.fill(row, prompt)
        return row

    def fill(self, row: int, prompt: PrefixKV) -> None:
        """Replace a row's contents with a prompt's keys and values (a new sentence in the same row)."""
        length = prompt[0][0].shape[2]
        self.reserve(length + 1)
        for layer, (keys, values) in enumerate(prompt):
            self.keys[layer][row, :, :length] = keys[0]
            self.values[layer][row, :, :length] = values[0]
        self.lengths[row] = length

    def remove_row(self, row: int) -> int | None:
        """Free a row; the last row moves into it. Returns the row that moved (now `row`), if any."""
        last = len(self.lengths) - 1
        moved = None
        if row != last:
            length = self.lengths[last]
            for tensors in (self.keys, self.values):
                for layer in tensors:
                    layer[row, :, :length] = layer[last, :, :length]
            self.lengths[row] = length
            moved = last
        self.lengths.pop()
        if not self.lengths:  # nobody left: give the memory back
            self.keys, self.values = [], []
        return moved

    def reserve(self, length: int) -> None:
        """Make room for `length` positions in every row in use."""
        rows = len(self.lengths)
        allocated_rows = self.keys[0].shape[0] if self.keys else 0
        if rows <= allocated_rows and length <= self.capacity:
            return
        new_rows = max(rows, allocated_rows, 1)
        if rows > allocated_rows:
            new_rows = max(rows, 2 * allocated_rows)
        new_capacity = max(self.capacity, -(-length // _LENGTH_STEP) * _LENGTH_STEP)
        shape = (new_rows, self.heads, new_capacity, self.head_dim)
        old_keys, old_values = self.keys, self.values
        self.keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)]
        self.values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)]
        for old, new in ((old_keys, self.keys), (old_values, self.values)):
            for old_layer, new_layer in zip(old, new, strict=False):
                new_layer[: old_layer.shape[0], :, : old_layer.shape[2]] = old_layer
        self.peak_bytes = max(self.peak_bytes, self.allocated_bytes())


class PromptCache:
    """One prompt's keys and values while it is prefilled: [1, heads, prefix + positions, head_dim] per layer,
    allocated once for the whole prompt (the voice's prefix copied in first), `length` positions filled."""

    def __init__(self, gpt: GPT, prefix: PrefixKV, positions: int) -> None:
        transformer = gpt.gpt
        heads = transformer.config.n_head
        head_dim = transformer.config.n_embd // heads
        self.length = prefix[0][0].shape[2] if prefix else 0
        shape = (1, heads, self.length + positions, head_dim)
        device = transformer.ln_f.weight.device
        self.keys = [torch.empty(shape, dtype=transformer_dtype(gpt), device=device) for _ in transformer.h]
        self.values = [torch.empty_like(keys) for keys in self.keys]
        for layer, (keys, values) in enumerate(prefix):
            self.keys[layer][:, :, : self.length] = keys
            self.values[layer][:, :, : self.length] = values

    def kv(self) -> PrefixKV:
        """The filled positions' keys and values per layer (views)."""
        return tuple(
            (keys[:, :, : self.length], values[:, :, : self.length])
            for keys, values in zip(self.keys, self.values, strict=True)
        )


def prefill_together(gpt: GPT, caches: list[PromptCache], chunks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Run each prompt's next positions (`chunks[i]` [T_i, C] embeddings after what `caches[i]` holds) in one
    forward pass; returns each one's last hidden state [1, C] (float32, after ln_f) and extends its cache.

    The chunks' positions are concatenated into one run for the linear layers; attention is causal within
    each prompt and sees only its own cache. Each cache must have room for its chunk.
    """
    transformer = gpt.gpt
    heads = transformer.config.n_head
    head_dim = transformer.config.n_embd // heads
    sizes = [chunk.shape[0] for chunk in chunks]
    starts = [cache.length for cache in caches]
    assert all(cache.keys[0].shape[2] >= start + size for cache, start, size in zip(caches, starts, sizes, strict=True))
    offsets = [sum(sizes[:index]) for index in range(len(sizes))]
    device = chunks[0].device
    # query t of a prompt attends to its cached positions and its chunk's positions up to t
    masks = [
        torch.arange(start + size, device=device)[None, :] <= (start + torch.arange(size, device=device))[:, None]
        for start, size in zip(starts, sizes, strict=True)
    ]
    dtype = transformer_dtype(gpt)
    x = torch.cat(chunks).to(dtype)[None]
    total = x.shape[1]
    for layer, block in enumerate(transformer.h):
        attention = block.attn
        query, key, value = _wide(attention.c_attn, block.ln_1(x)).split(attention.split_size, dim=2)
        query, key, value = (t.reshape(total, heads, head_dim).transpose(0, 1) for t in (query, key, value))
        attended = torch.empty(heads, total, head_dim, dtype=dtype, device=device)
        for cache, start, size, offset, mask in zip(caches, starts, sizes, offsets, masks, strict=True):
            keys, values = cache.keys[layer], cache.values[layer]
            keys[0, :, start : start + size] = key[:, offset : offset + size]
            values[0, :, start : start + size] = value[:, offset : offset + size]
            attended[:, offset : offset + size] = F.scaled_dot_product_attention(
                query[None, :, offset : offset + size],
                keys[:, :, : start + size],
                values[:, :, : start + size],
                attn_mask=mask,
            )[0]
        x = x + _wide(attention.c_proj, attended.transpose(0, 1).reshape(1, total, heads * head_dim))
        x = x + _wide_mlp(block.mlp, block.ln_2(x))
    for cache, size in zip(caches, sizes, strict=True):
        cache.length += size
    hidden = transformer.ln_f(x)[0]
    return [hidden[offset + size - 1 : offset + size].float() for offset, size in zip(offsets, sizes, strict=True)]


def _wide(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A linear layer on many positions: its `forward_wide` where the precision gave it one (int8's bfloat16
    weights for prompts, precision.RowwiseQuantizedLinear), else its forward."""
    forward_wide = getattr(layer, "forward_wide", None)
    return forward_wide(x) if forward_wide is not None else layer(x)


def _wide_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """GPT-2's MLP (c_fc, activation, c_proj; dropout is off in eval) through `_wide`; an MLP the kernels
    replaced whole (OpenVINO's) runs as it is."""
    if not isinstance(mlp, GPT2MLP):
        return mlp(x)
    return _wide(mlp.c_proj, mlp.act(_wide(mlp.c_fc, x)))


def prefill(gpt: GPT, prompt: torch.Tensor, prefix_kv: PrefixKV | None) -> tuple[torch.Tensor, PrefixKV]:
    """Run one stream's prompt embeddings [1, T, C] after its cached conditioning prefix (if any).

    Returns the last position's hidden state [1, C] (float32, before XTTS's final norm) and the keys and
    values of every prompt position, prefix included, for the stream's cache row.
    """
    cache = cache_after(prefix_kv)
    hidden = run_transformer(gpt, prompt, past_key_values=cache, use_cache=True)
    return hidden[:, -1], cached_kv(cache)


def decode_step(
    gpt: GPT, cache: SlotKVCache, inputs: torch.Tensor, active: list[bool], first_row: int = 0
) -> torch.Tensor:
    """One position for rows first_row .. first_row + len(inputs) - 1: inputs [n, C] -> hidden [n, C]
    (float32, after ln_f). A contiguous range of rows is a view of the cache: nothing is copied.

    Rows not `active` (a paused stream, one between sentences) go through the linear layers but not
    attention, and their lengths do not advance, so the key and value written for them are overwritten by
    their next real step; their hidden state means nothing.
    """
    transformer = gpt.gpt
    rows = inputs.shape[0]
    stop = first_row + rows
    row_lengths = cache.lengths[first_row:stop]
    cache.reserve(max(row_lengths) + 1)
    x = inputs.to(cache.dtype)[:, None, :]
    with torch.jit.optimized_execution(False):  # see block_parts: no re-specialising as the row count changes
        x = _blocks(gpt, cache, x, row_lengths, active, first_row)
    for row, advance in enumerate(active, start=first_row):
        if advance:
            cache.lengths[row] += 1
    return transformer.ln_f(x)[:, 0].float()


def _blocks(
    gpt: GPT, cache: SlotKVCache, x: torch.Tensor, row_lengths: list[int], active: list[bool], first_row: int
) -> torch.Tensor:
    """decode_step's pass through the blocks (the lengths are those before this step)."""
    rows = x.shape[0]
    device = x.device
    lengths = torch.tensor(row_lengths, device=device)
    row_index = torch.arange(first_row, first_row + rows, device=device)
    heads, head_dim = cache.heads, cache.head_dim
    for layer, (before_attention, after_attention) in enumerate(block_parts(gpt)):
        query, key, value = before_attention(x)
        keys, values = cache.keys[layer], cache.values[layer]
        keys[row_index, :, lengths] = key
        values[row_index, :, lengths] = value
        # row by row, over its own positions 0..length (its new one included): see the module's docstring
        attended = torch.zeros(rows, heads, 1, head_dim, dtype=cache.dtype, device=device)
        for offset, (length, advance) in enumerate(zip(row_lengths, active, strict=True)):
            if advance:  # a row that does not advance is ignored: its attention is not worth computing
                row = first_row + offset
                attended[offset] = F.scaled_dot_product_attention(
                    query[offset : offset + 1],
                    keys[row : row + 1, :, : length + 1],
                    values[row : row + 1, :, : length + 1],
                )[0]
        x = after_attention(x, attended)
    return x
