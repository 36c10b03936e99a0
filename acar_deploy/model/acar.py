"""ACAR-Net: SlowFast backbone -> temporally pooled context map -> ACAR (or linear) head.

The model is split where the export splits it: `context(clips)` is the backbone part and
`head(context, rois)` the head part; `forward` chains the two.
"""

from __future__ import annotations

import torch
from torch import nn

from acar_deploy.model.acfb import ACFBHead
from acar_deploy.model.config import ModelConfig, get_config
from acar_deploy.model.heads import build_head
from acar_deploy.model.slowfast import SlowFast


class ACARModel(nn.Module):
    """clips `[B, 3, T, H, W]` (normalised per `config.input`), rois `[R, 5]` -> logits `[R, classes]`.

    rois rows are `(batch_index, x1, y1, x2, y2)` with coordinates normalised to [0, 1].
    State dict keys are `backbone.<official SlowFast key>` and `head.<official head key>`.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = SlowFast(config.backbone, num_frames=config.input.num_frames)
        self.head = ACFBHead(config.head) if config.head.type == "acfb" else build_head(config.head)

    def context(self, clips: torch.Tensor) -> torch.Tensor:
        """Temporal mean of each pathway, slow then fast, on channels: `[B, C_ctx, h, w]`."""
        slow, fast = self.backbone(clips)
        return torch.cat([slow.mean(dim=2), fast.mean(dim=2)], dim=1)

    def forward(self, clips: torch.Tensor, rois: torch.Tensor, *bank: torch.Tensor) -> torch.Tensor:
        """`bank` (acfb heads only): entries `[M, hidden, h', w']` and window `[R, M]` bool.

        A 4-D `clips` is taken as context maps `[B, C_ctx, h, w]` already computed by `context`
        (frozen-backbone training keeps them), so the head alone runs through the same module call.
        """
        context = clips if clips.dim() == 4 else self.context(clips)
        return self.head(context, rois, *bank)


def build_model(config: ModelConfig | str) -> ACARModel:
    """A randomly initialised model (torch's default init) for a config or built-in name, in eval mode."""
    return ACARModel(get_config(config)).eval()
