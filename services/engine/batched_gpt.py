"""The GPT's decode step for a batch of streams at different lengths, over one preallocated KV cache.

Each stream owns a row ("slot") of the cache and its own length; a step writes every stream's new key
and value at that stream's own position and masks the positions beyond it, so the streams share the
weight reads of one forward pass and nothing else. Rows are kept contiguous (a leaving stream's row is
filled by the last one), so a step never gathers or copies the cache.

The step is GPT-2's block written out (ln_1 -> attention -> residual -> ln_2 -> MLP -> residual, then
ln_f), calling the blocks' own submodules, so it runs whatever GPT_PRECISION made of their linear layers.
XTTS adds its position embeddings before the transformer (GPT-2's own are null), so a row's position
matters only through its cache length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from TTS.tts.layers.xtts.gpt import GPT

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

    Rows not `active` (a paused stream, one between sentences) are computed but their lengths do not
    advance, so the key and value written for them are overwritten by their next real step.
    """
    transformer = gpt.gpt
    rows = inputs.shape[0]
    stop = first_row + rows
    row_lengths = cache.lengths[first_row:stop]
    cache.reserve(max(row_lengths) + 1)
    device = inputs.device
    lengths = torch.tensor(row_lengths, device=device)
    row_index = torch.arange(first_row, stop, device=device)
    span = max(row_lengths) + 1
    # row i attends to its positions 0..lengths[i] (its new one included) and to nothing beyond
    mask = (torch.arange(span, device=device)[None, :] <= lengths[:, None])[:, None, None, :]
    heads, head_dim = cache.heads, cache.head_dim
    x = inputs.to(cache.dtype)[:, None, :]
    for layer, block in enumerate(transformer.h):
        attention = block.attn
        query, key, value = attention.c_attn(block.ln_1(x)).split(attention.split_size, dim=2)
        keys, values = cache.keys[layer], cache.values[layer]
        keys[row_index, :, lengths] = key.reshape(rows, heads, head_dim)
        values[row_index, :, lengths] = value.reshape(rows, heads, head_dim)
        attended = F.scaled_dot_product_attention(
            query.reshape(rows, 1, heads, head_dim).transpose(1, 2),
            keys[first_row:stop, :, :span],
            values[first_row:stop, :, :span],
            attn_mask=mask,
        )
        x = x + attention.c_proj(attended.transpose(1, 2).reshape(rows, 1, heads * head_dim))
        x = x + block.mlp(block.ln_2(x))
    for row, advance in enumerate(active, start=first_row):
        if advance:
            cache.lengths[row] += 1
    return transformer.ln_f(x)[:, 0].float()
