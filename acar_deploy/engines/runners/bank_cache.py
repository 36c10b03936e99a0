"""Bank keys/values of the current window, projected once per entry (the deploy path of an acfb head).

K and V depend only on a bank entry and the weights. Consecutive keyframes of a video share 2w of
their 2w + 1 window seconds, so a runner keeps the K/V of the previous window's entries (keyed by
the entry's bytes) and runs the `bank_kv` graph only on entries it has not seen: each entry is
projected once while it stays in the window instead of once per keyframe. Memory stays one window.
K/V stored in the bank by `acar-deploy bank project` (fed as `bank_keys`/`bank_values`) bypass it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

Projection = Callable[[np.ndarray], tuple[Any, Any]]


def _stack_on_host(rows: list[np.ndarray]) -> np.ndarray:
    return np.stack(rows, axis=1)


class BankProjectionCache:
    """`keys_values(entries, project)` -> keys, values `[depth, M, C, h, w]`; `project` runs on new entries only.

    `stack` joins the per-entry rows: numpy by default; the TensorRT runner passes a torch stack so
    its K/V stay on the GPU (copying a window's K/V to the head every keyframe would move them all).
    """

    def __init__(self, stack: Callable[[list[Any]], Any] = _stack_on_host) -> None:
        self._stack = stack
        self._rows: dict[bytes, tuple[Any, Any]] = {}
        self.projected = 0  # entries sent to `project` so far (the saving is calls * M - projected)

    def keys_values(self, entries: np.ndarray, project: Projection) -> tuple[Any, Any]:
        entries = np.ascontiguousarray(entries, dtype=np.float32)
        if entries.shape[0] == 0:
            return project(entries)
        digests = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in entries]
        new: dict[bytes, int] = {}
        for index, digest in enumerate(digests):
            if digest not in self._rows and digest not in new:
                new[digest] = index
        rows = {d: self._rows[d] for d in digests if d in self._rows}
        if new:
            keys, values = project(entries[list(new.values())])
            self.projected += len(new)
            for position, digest in enumerate(new):
                rows[digest] = (keys[:, position], values[:, position])
        self._rows = rows  # the current window only
        return self._stack([rows[d][0] for d in digests]), self._stack([rows[d][1] for d in digests])

    def clear(self) -> None:
        self._rows = {}
