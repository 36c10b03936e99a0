"""The official AVA loss: BCE on pose-softmax + sigmoid scores (not BCE-with-logits)."""

from __future__ import annotations

from typing import Any


def ava_loss(logits: Any, targets: Any) -> Any:
    """Mean binary cross-entropy between `action_scores(logits)` and multi-hot targets, in fp32."""
    import torch.nn.functional as F

    from acar_deploy.model.scores import action_scores

    return F.binary_cross_entropy(action_scores(logits.float()), targets.float())
