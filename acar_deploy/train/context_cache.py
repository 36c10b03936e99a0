"""Head-only fine-tuning (`train.freeze_backbone: true`): each clip's context map is computed once.

With the backbone frozen (eval mode, no gradient) a training sample's context map depends only on
its keyframe and whether it is flipped: box jitter and labels act on the RoIs, not on the clip. When
the context maps of every (keyframe, flip) of this process's share fit `train.context_cache_mib`,
`ContextCache` computes each one the first time it is drawn and serves it from memory afterwards,
so later epochs neither decode video nor run the backbone: only the head trains, at the cost of
the head. When they do not fit, training uses the normal loader and runs the frozen backbone under
`no_grad` every step (no backward through it either way).

Each context map is computed for its clip alone; `collate_keyframes` pads the maps of a batch the
way it pads clips (equal whenever the clips of a batch share a size, as in one AVA-style dataset).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


class ContextCache:
    """(keyframe index, flip) -> context map `[C, h, w]` on the CPU, filled as samples are drawn."""

    def __init__(self, dataset: Any, model: Any, device: Any, collate: Any):
        self.dataset = dataset
        self.model = model  # the unwrapped ACARModel (its backbone frozen)
        self.device = device
        self.collate = collate
        self.contexts: dict[tuple[int, bool], Any] = {}

    def context(self, index: int, flip: bool) -> Any:
        import torch

        key = (index, flip)
        if key not in self.contexts:
            clip, _ = self.dataset.clip(index, flip)  # the clip only: no second draw of boxes or bank window
            with torch.no_grad():
                self.contexts[key] = self.model.context(clip[None].to(self.device))[0].cpu()
        return self.contexts[key]

    def batches(self, indices: Sequence[int], batch_size: int) -> Iterator[dict[str, Any]]:
        """The loader's batches for this epoch's `indices`, with context maps in place of the clips.

        Draws one number from torch's RNG first, as a DataLoader iterator does for its workers' seed,
        so dropout sees the same random stream as on the loader path (a run may switch paths on resume).
        """
        import torch

        torch.empty((), dtype=torch.int64).random_()
        for start in range(0, len(indices), batch_size):
            items = []
            for index in indices[start: start + batch_size]:
                item = self.dataset.sample(index, decode=False)
                item["clip"] = self.context(index, item["flip"])
                items.append(item)
            yield self.collate(items)


def context_cache_for(dataset: Any, model: Any, device: Any, collate: Any, samples: int, flip: bool,
                      budget_mib: int) -> ContextCache | None:
    """A cache when every context map of `samples` keyframes (x2 with flip) fits `budget_mib`, else None."""
    if budget_mib <= 0 or samples == 0:
        return None
    cache = ContextCache(dataset, model, device, collate)
    first = cache.context(0, False)
    needed = first.numel() * first.element_size() * samples * (2 if flip else 1)
    return cache if needed <= budget_mib * 2**20 else None


__all__ = ["ContextCache", "context_cache_for"]
