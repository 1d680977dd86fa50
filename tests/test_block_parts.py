"""The blocks' work around attention, traced into TorchScript for the decode step: bit for bit the blocks' own
modules, at any number of rows, in float32 and int8 (OpenVINO's kernels stay eager: tests/test_gpt_kernels.py)."""

from __future__ import annotations

import pytest
import torch

from services.engine.block_parts import _After, _Before, block_parts
from services.engine.model_loader import LoadedModel

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("model", ["tiny_loaded", "tiny_int8_loaded"])
def test_the_traced_parts_compute_bit_for_bit_as_the_blocks_at_any_row_count(
    request: pytest.FixtureRequest, model: str
) -> None:
    loaded: LoadedModel = request.getfixturevalue(model)
    gpt = loaded.model.gpt
    heads = gpt.gpt.config.n_head
    width = gpt.gpt.config.n_embd
    parts = block_parts(gpt)
    assert all(isinstance(part, torch.jit.ScriptModule) for pair in parts for part in pair)  # traced: in use
    assert block_parts(gpt) is parts  # once per model
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for rows in (1, 3, 8):  # traced with one row
            x = torch.randn(rows, 1, width, generator=generator)
            attended = torch.randn(rows, heads, 1, width // heads, generator=generator)
            for block, (before, after) in zip(gpt.gpt.h, parts, strict=True):
                eager_before, eager_after = _Before(block, heads), _After(block)
                for traced, eager in zip(before(x), eager_before(x), strict=True):
                    assert traced.shape == eager.shape and torch.equal(traced, eager)
                assert torch.equal(after(x, attended), eager_after(x, attended))
