"""Engine cache: a built plan is reused only when everything that shaped it is the same.

The key is the sha256 of the parsed graph, the build settings that reach the builder, the
TensorRT version and the GPU (name + compute capability). Entries are `<digest>.plan` with a
`<digest>.json` beside it holding the key in clear, so a stale cache can be inspected. The builder
is a function passed in, so the cache logic is tested without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from acar_deploy.artifacts import atomic_file, write_json


@dataclass(frozen=True)
class EngineCacheKey:
    graph_sha256: str
    settings: dict[str, Any]  # JSON-able build settings that reach the builder
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    @property
    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CacheResult:
    plan: bytes
    hit: bool
    path: Path | None


class EngineCache:
    """`EngineCache(dir).get_or_build(key, build)`; `dir=None` disables caching."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None

    def plan_path(self, key: EngineCacheKey) -> Path | None:
        return self.root / f"{key.digest}.plan" if self.root is not None else None

    def lookup(self, key: EngineCacheKey) -> bytes | None:
        path = self.plan_path(key)
        if path is None or not path.is_file():
            return None
        try:
            recorded = json.loads(path.with_suffix(".json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if recorded != json.loads(json.dumps(asdict(key), default=str)):  # digest collision or tampering
            return None
        return path.read_bytes()

    def store(self, key: EngineCacheKey, plan: bytes) -> Path | None:
        path = self.plan_path(key)
        if path is None:
            return None
        with atomic_file(path, force=True) as fh:
            fh.write(plan)
        write_json(path.with_suffix(".json"), asdict(key))
        return path

    def get_or_build(self, key: EngineCacheKey, build: Callable[[], bytes]) -> CacheResult:
        cached = self.lookup(key)
        if cached is not None:
            return CacheResult(cached, True, self.plan_path(key))
        plan = bytes(build())
        return CacheResult(plan, False, self.store(key, plan))
