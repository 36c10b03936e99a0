"""OpenAI Triton kernel of the ACAR_HR2O node (compiled to PTX ahead of time for TensorRT).

One program per (position, actor i): online softmax over the actors j with the same clip label,
`u_i = sum_j softmax_j(scale * <q_i, k_j>) v_j`, accumulated in fp32 for fp32 and fp16 tensors.
Tensors are contiguous NCHW `[R, C, h, w]`; clip labels int32 `[R]`. Importing this module needs
`triton` (GPU machines only).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def hr2o_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    clip_ptr,
    num_actors,
    num_positions,
    u_ptr,
    CHANNELS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    SCALE: tl.constexpr,
):
    position = tl.program_id(0)
    actor = tl.program_id(1)
    channel = tl.arange(0, BLOCK_C)
    channel_ok = channel < CHANNELS
    row = CHANNELS * num_positions
    offsets = channel * num_positions + position
    query = tl.load(q_ptr + actor * row + offsets, mask=channel_ok, other=0.0).to(tl.float32)
    clip_i = tl.load(clip_ptr + actor)
    running_max = tl.full([], -1.0e30, tl.float32)
    running_sum = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_C], tl.float32)
    for j in range(0, num_actors):
        clip_j = tl.load(clip_ptr + j)
        key = tl.load(k_ptr + j * row + offsets, mask=channel_ok, other=0.0).to(tl.float32)
        score = tl.sum(query * key, axis=0) * SCALE
        score = tl.where(clip_j == clip_i, score, -float("inf"))
        new_max = tl.maximum(running_max, score)
        decay = tl.exp(running_max - new_max)
        weight = tl.exp(score - new_max)
        value = tl.load(v_ptr + j * row + offsets, mask=channel_ok, other=0.0).to(tl.float32)
        acc = acc * decay + weight * value
        running_sum = running_sum * decay + weight
        running_max = new_max
    out = acc / running_sum
    tl.store(u_ptr + actor * row + offsets, out.to(u_ptr.dtype.element_ty), mask=channel_ok)
