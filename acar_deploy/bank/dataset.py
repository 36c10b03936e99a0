"""Keyframe samples with their bank window, and the batch inputs of an ACFB model.

Each sample gets the bank entries of its window ([t - w, t + w], or [t - w, t] when causal) from
the video's memory-mapped arrays; a batch concatenates the windows of its clips and a `[R, M]`
mask lets each RoI attend only its own clip's window. When training flips a clip, its window's
maps are flipped along the width too (the entries were extracted unflipped), so positions match.
With K/V stored in the bank (inference only, `FeatureBank.use_stored_kv`), samples also carry the
window's keys/values and a batch concatenates them along the entry axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acar_deploy.bank.window import FeatureBank
from acar_deploy.data.dataset import KeyframeDataset, collate_keyframes
from acar_deploy.errors import InputError


@dataclass
class BankKeyframeDataset:
    """A KeyframeDataset whose items also carry `bank` `[m, C, h, w]` (the stored precision)."""

    keyframes: KeyframeDataset
    bank: FeatureBank
    half_width: int
    causal: bool = False

    def __len__(self) -> int:
        return len(self.keyframes)

    def set_epoch(self, epoch: int) -> None:
        self.keyframes.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index)

    def sample(self, index: int, decode: bool = True) -> dict[str, Any]:
        """`KeyframeDataset.sample` plus the window (`decode=False`: without the clip)."""
        import torch

        item = self.keyframes.sample(index, decode)
        window = self.bank.window(item["video_id"], int(item["timestamp"]), self.half_width, self.causal)
        entries = torch.from_numpy(window.features)
        item["bank"] = entries.flip(-1) if item["flip"] else entries
        if window.keys is not None:
            if item["flip"]:  # K/V of a flipped entry are not the flipped K/V (3x3 convs): never mix them
                raise InputError(f"{self.bank.path}: stored keys/values cannot be used with flip augmentation")
            item["bank_kv"] = (torch.from_numpy(window.keys), torch.from_numpy(window.values))
        return item

    def clip(self, index: int, flip: bool) -> tuple[Any, tuple[int, int]]:
        return self.keyframes.clip(index, flip)


def collate_with_bank(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`collate_keyframes` plus `bank_entries` `[M, C, h, w]` and `bank_clip` `[M]` (owner sample index);
    with stored K/V also `bank_keys`, `bank_values` `[depth, M, C, h, w]`."""
    import torch

    batch = collate_keyframes(items)
    batch["bank_entries"] = torch.cat([it["bank"] for it in items], 0)
    batch["bank_clip"] = torch.cat([torch.full((len(it["bank"]),), b, dtype=torch.int64) for b, it in enumerate(items)])
    if items and all("bank_kv" in it for it in items):
        batch["bank_keys"] = torch.cat([it["bank_kv"][0] for it in items], 1)
        batch["bank_values"] = torch.cat([it["bank_kv"][1] for it in items], 1)
    return batch


def bank_inputs(batch: dict[str, Any], device: Any) -> tuple[Any, ...]:
    """(entries, window) for an ACFB model's forward, or () for a batch without a bank."""
    if "bank_entries" not in batch:
        return ()
    from acar_deploy.model.acfb import window_mask

    rois = batch["rois"]
    window = window_mask(rois[:, 0], batch["bank_clip"])
    return batch["bank_entries"].to(device, non_blocking=True), window.to(device)


def with_bank(dataset: KeyframeDataset, model_config: Any, bank: FeatureBank | None) -> tuple[Any, Any]:
    """(dataset, collate) for inference: an acfb model's samples carry their window; others unchanged."""
    if model_config.head.type != "acfb":
        return dataset, None
    if bank is None:
        raise InputError("an acfb model needs a feature bank of these videos: pass --bank "
                         "(acar-deploy bank extract --split val for the val split)")
    head = model_config.head
    return BankKeyframeDataset(dataset, bank, head.bank_window, head.bank_causal), collate_with_bank


def open_bank_for(path: Any, model_config: Any, split: str | None) -> FeatureBank:
    """Open a bank and check it fits the model (channels) and, unless None, the split it is used for."""
    path = Path(path)
    bank = FeatureBank(path)
    channels = bank.manifest.feature_shape[0]
    if model_config.head.type != "acfb":
        raise InputError(f"{path}: a feature bank needs a model with head.type acfb, "
                         f"the config has {model_config.head.type!r}")
    if channels != model_config.head.hidden_dim:
        raise InputError(f"{path / 'bank.json'}: field 'feature_shape' has {channels} channels but the model's "
                         f"head.hidden_dim is {model_config.head.hidden_dim}; extract the bank with a matching model")
    if split is not None and bank.manifest.split != split:
        raise InputError(f"{path / 'bank.json'}: field 'split' is {bank.manifest.split!r}, expected {split!r} here")
    bank.check_arrays()
    return bank


__all__ = ["BankKeyframeDataset", "bank_inputs", "collate_with_bank", "open_bank_for", "with_bank"]
