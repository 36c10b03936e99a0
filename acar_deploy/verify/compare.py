"""Element-wise comparison of an engine's outputs with eager's (the reference), per output name."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

REL_EPS = 1e-6  # relative error is |d| / (|ref| + REL_EPS), so exact zeros in the reference stay finite


@dataclass(frozen=True)
class OutputDiff:
    """How far one output is from the reference, over all compared elements."""

    name: str
    elements: int
    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    within: float  # fraction of elements with |d| <= atol + rtol * |ref|
    atol: float
    rtol: float
    worst_index: tuple[int, ...]  # where |d| - (atol + rtol*|ref|) is largest
    worst_value: float
    worst_reference: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def compare_output(name: str, reference: np.ndarray, value: np.ndarray, atol: float = 0.0, rtol: float = 0.0) -> OutputDiff:
    """Max/mean absolute error, max relative error, cosine similarity and fraction within tolerance."""
    ref = np.asarray(reference, np.float64)
    val = np.asarray(value, np.float64)
    if ref.shape != val.shape:
        raise ValueError(f"output {name!r}: shape {list(val.shape)} differs from the reference {list(ref.shape)}")
    if ref.size == 0:
        return OutputDiff(name, 0, 0.0, 0.0, 0.0, 1.0, 1.0, atol, rtol, (), 0.0, 0.0)
    diff = np.abs(val - ref)
    bound = atol + rtol * np.abs(ref)
    excess = diff - bound
    worst = np.unravel_index(int(np.argmax(excess)), ref.shape)
    ref_flat, val_flat = ref.ravel(), val.ravel()
    norms = float(np.linalg.norm(ref_flat) * np.linalg.norm(val_flat))
    cosine = float(ref_flat @ val_flat / norms) if norms > 0 else float(np.array_equal(ref_flat, val_flat))
    return OutputDiff(
        name=name,
        elements=int(ref.size),
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        max_rel=float((diff / (np.abs(ref) + REL_EPS)).max()),
        cosine=cosine,
        within=float((diff <= bound).mean()),
        atol=float(atol),
        rtol=float(rtol),
        worst_index=tuple(int(i) for i in worst),
        worst_value=float(val[worst]),
        worst_reference=float(ref[worst]),
    )


def top_action_changed(reference_scores: np.ndarray, scores: np.ndarray) -> float:
    """Fraction of boxes (rows) whose highest-scoring action differs from the reference's."""
    if len(reference_scores) == 0:
        return 0.0
    return float((np.argmax(reference_scores, 1) != np.argmax(scores, 1)).mean())
