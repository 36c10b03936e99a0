"""Parity thresholds: built-in defaults < a YAML next to the model config < command-line flags.

Like mmdeploy's regression YAMLs, the tolerance of each runtime+precision is pinned beside the
model config, one line per engine kind:

    # acar_r50.parity.yaml
    default:   {max_map_drop: 0.5}
    ort-fp32:  {max_map_drop: 0.1, atol: 1.0e-3, rtol: 1.0e-3}
    ort-int8:  {max_map_drop: 0.5, atol: 0.05}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError


@dataclass(frozen=True)
class ParityThresholds:
    """A gate fails when any set threshold is exceeded; None means "not gated"."""

    max_map_drop: float | None = 0.5  # |mAP(eager) - mAP(engine)| in points (x100)
    atol: float | None = None  # with rtol: every element within atol + rtol * |eager|
    rtol: float | None = None
    min_within: float = 1.0  # fraction of elements that must be within atol + rtol*|ref|
    min_cosine: float | None = None  # per output, cosine similarity of the flattened outputs
    max_top1_changed: float | None = None  # fraction of boxes whose top action changed

    @property
    def numeric_gated(self) -> bool:
        return self.atol is not None or self.rtol is not None

    def merged(self, values: dict[str, Any]) -> ParityThresholds:
        return replace(self, **{k: v for k, v in values.items() if v is not None})


KEYS = tuple(f.name for f in fields(ParityThresholds))

# fp32 engines compute the same math as eager: anything beyond float rounding is a bug. Lower
# precisions are gated on the task metric unless a tolerance is pinned for them.
BUILTIN: dict[str, dict[str, float]] = {
    "fp32": {"atol": 1e-3, "rtol": 1e-3},
}


def engine_kind(metadata: dict[str, Any]) -> tuple[str, str]:
    """(`ort`|`trt`|..., `fp32`|`fp16`|`int8`) from runner metadata (the values engine.json uses)."""
    runtime = str(metadata.get("runtime") or "unknown").lower()
    precision = str(metadata.get("precision") or "fp32").lower()
    return runtime, precision


def threshold_file_for(config: str | os.PathLike | None) -> Path | None:
    """`<config>.parity.yaml` beside a config file (`foo.yaml` -> `foo.parity.yaml` or `foo.yaml.parity.yaml`)."""
    if config is None:
        return None
    path = Path(config)
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return None
    for candidate in (path.with_suffix(".parity.yaml"), path.with_name(path.name + ".parity.yaml")):
        if candidate.is_file():
            return candidate
    return None


def load_threshold_file(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read `{kind: {key: value}}`, naming the file and line of anything malformed."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the parity thresholds file ({exc.strerror or exc})") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InputError(f"{where}: invalid YAML ({getattr(exc, 'problem', None) or exc}); fix the file") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise InputError(f"{path}:{root.start_mark.line + 1}: expected a mapping like 'ort-int8: {{max_map_drop: 0.5}}'")
    table: dict[str, dict[str, float]] = {}
    for key_node, value_node in root.value:
        kind = str(key_node.value)
        line = key_node.start_mark.line + 1
        if not isinstance(value_node, yaml.MappingNode):
            raise InputError(f"{path}:{line}: '{kind}' must map to {{key: value}}, e.g. {{atol: 0.05}}")
        entry: dict[str, float] = {}
        for k_node, v_node in value_node.value:
            k, kline = str(k_node.value), k_node.start_mark.line + 1
            if k not in KEYS:
                raise InputError(f"{path}:{kline}: unknown threshold '{k}' under '{kind}'; known: {', '.join(KEYS)}")
            try:
                entry[k] = float(yaml.safe_load(yaml.serialize(v_node)))
            except (TypeError, ValueError):
                raise InputError(f"{path}:{kline}: '{kind}.{k}' must be a number, got {v_node.value!r}") from None
        table[kind] = entry
    return table


def resolve_thresholds(
    metadata: dict[str, Any],
    config: str | os.PathLike | None = None,
    thresholds_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[ParityThresholds, list[str]]:
    """The thresholds for this engine and where each layer came from (for the report)."""
    runtime, precision = engine_kind(metadata)
    sources = ["built-in defaults"]
    result = ParityThresholds().merged(BUILTIN.get(precision, {}))
    path = Path(thresholds_file) if thresholds_file is not None else threshold_file_for(config)
    if thresholds_file is not None and not Path(thresholds_file).is_file():
        raise InputError(f"{thresholds_file}: parity thresholds file not found")
    if path is not None:
        table = load_threshold_file(path)
        for key in ("default", precision, f"{runtime}-{precision}"):
            if key in table:
                result = result.merged(table[key])
                sources.append(f"{path} [{key}]")
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None}
        if given:
            result = result.merged(given)
            sources.append("command line: " + ", ".join(f"{k}={v}" for k, v in given.items()))
    return result, sources
