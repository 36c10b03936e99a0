"""Engine cache logic with a fake builder: hits on identical inputs, rebuilds when anything changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from acar_deploy.engines.builds.cache import EngineCache, EngineCacheKey


class CountingBuilder:
    def __init__(self):
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"plan #{self.calls}".encode()


BASE = EngineCacheKey(
    graph_sha256="a" * 64,
    settings={"precision": "fp16", "profiles": {"rois": [[1, 5], [8, 5], [32, 5]]}, "workspace_bytes": 1 << 30},
    tensorrt_version="10.13.0",
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
)


def test_second_build_with_same_inputs_is_a_hit(tmp_path):
    builder = CountingBuilder()
    first = EngineCache(tmp_path).get_or_build(BASE, builder)
    second = EngineCache(tmp_path).get_or_build(replace(BASE, settings=dict(BASE.settings)), builder)
    assert (first.hit, second.hit) == (False, True)
    assert builder.calls == 1
    assert second.plan == first.plan == b"plan #1"
    assert first.path == second.path and first.path.read_bytes() == b"plan #1"


@pytest.mark.parametrize(
    "changed",
    [
        replace(BASE, graph_sha256="b" * 64),
        replace(BASE, settings={**BASE.settings, "precision": "int8"}),
        replace(BASE, settings={**BASE.settings, "profiles": {"rois": [[1, 5], [16, 5], [32, 5]]}}),
        replace(BASE, tensorrt_version="11.0.0"),
        replace(BASE, gpu_name="NVIDIA A100-SXM4-40GB"),
        replace(BASE, compute_capability="8.0"),
    ],
    ids=["graph", "precision", "profile", "tensorrt-version", "device-name", "compute-capability"],
)
def test_any_change_rebuilds_and_keeps_both(tmp_path, changed):
    builder = CountingBuilder()
    cache = EngineCache(tmp_path)
    cache.get_or_build(BASE, builder)
    result = cache.get_or_build(changed, builder)
    assert not result.hit and builder.calls == 2 and result.plan == b"plan #2"
    assert cache.get_or_build(BASE, builder).plan == b"plan #1"  # the old entry is still valid
    assert cache.get_or_build(changed, builder).plan == b"plan #2"
    assert builder.calls == 2


def test_key_digest_ignores_dict_order_only():
    reordered = replace(BASE, settings=dict(reversed(list(BASE.settings.items()))))
    assert reordered.digest == BASE.digest
    assert replace(BASE, settings={**BASE.settings, "workspace_bytes": 2 << 30}).digest != BASE.digest


def test_entry_whose_recorded_key_differs_is_rebuilt(tmp_path):
    builder = CountingBuilder()
    cache = EngineCache(tmp_path)
    path = cache.get_or_build(BASE, builder).path
    path.with_suffix(".json").write_text('{"graph_sha256": "tampered"}')
    result = cache.get_or_build(BASE, builder)
    assert not result.hit and builder.calls == 2


def test_no_cache_dir_always_builds():
    builder = CountingBuilder()
    cache = EngineCache(None)
    assert [cache.get_or_build(BASE, builder).hit for _ in range(2)] == [False, False]
    assert builder.calls == 2
