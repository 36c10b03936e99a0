"""ACAR head with an Actor-Context Feature Bank (ACFB, paper section 3.3).

A first ACAR-Net (no bank) archives the first-order actor-context relation maps F_i of every actor
of every clip (`ACARHead.first_order_features`, the maps HR2O takes) as bank entries L_j. At time t
this head computes its own first-order maps F_i of the current clip and replaces HR2O's
self-attention by attention from the current actors to the bank entries of the window
[t - w, t + w] (or [t - w, t] when causal): Q_i = conv_q(F_i), K_j = conv_k(L_j), V_j = conv_v(L_j),
softmax over j per spatial position as the official HR2O does over actors. Layer l > 1 takes its
queries from layer l-1's output and its keys/values from the same bank entries with its own convs
(the paper's "HR2O is the same as before"); with a window that holds only the current clip's own
first-order maps, layer 1 is exactly HR2O, so a depth-1 head equals the ACAR head.

K and V depend only on the entry and the weights, so `project_bank` computes them once per entry
(deployment precomputes them; `forward_projected` consumes them). Parameter names equal
`ACARHead`'s, so a no-bank checkpoint initialises a bank model.

Batching: `window` `[R, M]` bool says which entries actor i may attend (its clip's window); an
actor with no entry in its window gets a zero message (the residual keeps its first-order map).
"""

from __future__ import annotations

import math

import torch

from acar_deploy.model.config import HeadConfig
from acar_deploy.model.heads import ACARHead


def bank_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """query `[R, C, H, W]`, key/value `[M, C, H, W]`, window `[R, M]` bool -> `[R, C, H, W]`.

    Per position: a_ij = softmax over allowed j of <q_i, k_j> / sqrt(C); output sum_j a_ij v_j.
    Rows with no allowed entry (or M == 0) give zeros, never NaN.
    """
    channels = query.shape[1]
    q = query.flatten(2).permute(2, 0, 1)  # [HW, R, C]
    k = key.flatten(2).permute(2, 1, 0)  # [HW, C, M]
    v = value.flatten(2).permute(2, 0, 1)  # [HW, M, C]
    logits = torch.matmul(q, k) / math.sqrt(channels)  # [HW, R, M]
    has_entry = window.any(dim=1, keepdim=True)
    logits = logits.masked_fill(~window.unsqueeze(0), float("-inf")).masked_fill(~has_entry.unsqueeze(0), 0.0)
    attention = torch.softmax(logits, dim=-1) * window.unsqueeze(0).to(logits.dtype)
    return torch.matmul(attention, v).permute(1, 2, 0).reshape(query.shape)


class ACFBHead(ACARHead):
    """context `[B, width, h, w]`, rois `[R, 5]`, bank entries `[M, hidden, h', w']`, window `[R, M]` -> logits."""

    def __init__(self, config: HeadConfig):
        super().__init__(config)

    def project_bank(self, entries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bank entries `[M, C, h', w']` -> keys, values `[depth, M, C, h', w']` (once per entry)."""
        entries = entries.to(self.conv1.weight.dtype)
        keys = torch.stack([layer.conv_k(entries) for layer in self.hr2o])
        values = torch.stack([layer.conv_v(entries) for layer in self.hr2o])
        return keys, values

    def bank_relations(self, first_order: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       window: torch.Tensor) -> torch.Tensor:
        """HR2O with bank keys/values: `[R, C, h', w']` -> `[R, C]`."""
        x = first_order
        for depth, layer in enumerate(self.hr2o):
            virtual = bank_attention(layer.conv_q(x), keys[depth], values[depth], window)
            x = x + layer.dp(layer.conv(torch.relu(layer.norm(virtual))))
        return self.gap(x).flatten(1)

    def forward_projected(self, context: torch.Tensor, rois: torch.Tensor, keys: torch.Tensor,
                          values: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """Logits `[R, classes]` from precomputed bank keys/values (`project_bank`)."""
        reduced = self.conv_reduce(context)
        actors = self.actor_features(reduced, rois)
        relations = self.bank_relations(self.first_order_features(reduced, actors, rois), keys, values, window)
        outputs = torch.cat([torch.relu(self.fc1(actors)), relations], dim=1)
        if self.dp is not None:
            outputs = self.dp(outputs)
        return self.fc2(outputs)

    def forward(self, context: torch.Tensor, rois: torch.Tensor, entries: torch.Tensor,
                window: torch.Tensor) -> torch.Tensor:
        keys, values = self.project_bank(entries)
        return self.forward_projected(context, rois, keys, values, window)


def window_mask(roi_clip: torch.Tensor, entry_clip: torch.Tensor) -> torch.Tensor:
    """`[R, M]` bool: RoI i may attend entry j when j was gathered for i's clip (batch index)."""
    return roi_clip.to(torch.int64)[:, None] == entry_clip.to(torch.int64)[None, :]


__all__ = ["ACFBHead", "bank_attention", "window_mask"]
