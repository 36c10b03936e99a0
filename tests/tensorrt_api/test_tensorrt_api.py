"""Conformance of the project's TensorRT code with the real TensorRT Python bindings (10.x and 11.x).

Each version's checks run in a subprocess that imports that version's real `tensorrt` package (see
bindings_cache.py and api_probe.py; README.md says what is and is not exercised). Nothing is built or
executed on a GPU here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from api_uses import ROOT_TYPES, collect_uses  # noqa: E402
from bindings_cache import VERSION_WITHOUT_AOT, VERSIONS, BindingsUnavailable, prepare  # noqa: E402

pytestmark = pytest.mark.trt_api

VERSION_IDS = [v for _, v in VERSIONS]
SCALE = 0.125  # the probe's ACAR_HR2O scale attribute
CHANNELS, HEIGHT, WIDTH, ACTORS = 24, 4, 5, 7  # the probe's shapes; ACTORS is the runtime R


@cache
def _bindings(version: str):
    distribution = dict((v, d) for d, v in (*VERSIONS, VERSION_WITHOUT_AOT))[version]
    try:
        return prepare(distribution, version)
    except BindingsUnavailable as exc:
        return exc


@cache
def _probe_cached(version: str, group: str, payload_json: str) -> dict:
    bindings = _bindings(version)
    result = subprocess.run([sys.executable, str(HERE / "api_probe.py"), group], input=payload_json,
                            capture_output=True, text=True, env=bindings.env(), timeout=120)
    marker = result.stdout.rfind("@@PROBE@@")
    if result.returncode != 0 or marker < 0:
        raise AssertionError(f"probe {group} on TensorRT {version} crashed (rc {result.returncode}):\n"
                             f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout[marker + len("@@PROBE@@"):])


def probe(version: str, group: str, payload: dict | None = None) -> dict:
    bindings = _bindings(version)
    if isinstance(bindings, BindingsUnavailable):
        pytest.skip(f"TensorRT {version} bindings unavailable: {bindings}")
    return _probe_cached(version, group, json.dumps(payload or {}, sort_keys=True))


def _plugin(version: str, *required: str) -> dict:
    """The plugin probe's steps; fails naming the first earlier step that failed."""
    steps = probe(version, "plugin", {"scale": SCALE, "channels": CHANNELS, "height": HEIGHT, "width": WIDTH})["steps"]
    for name in required:
        step = steps.get(name)
        assert step is not None and step.get("ok"), f"TensorRT {version}: step {name!r} failed: {step}"
    return steps


@pytest.mark.parametrize("version", VERSION_IDS)
def test_probe_imports_the_requested_version(version):
    assert probe(version, "build_path")["tensorrt_version"] == version


# --- finding 1 (and 3): NVIDIA's validators accept every plugin definition --------------------


@pytest.mark.parametrize("version", VERSION_IDS)
def test_hr2o_plugin_passes_tensorrt_plugin_validators(version):
    steps = _plugin(version, "register")
    assert steps["definition"]["ok"]
    assert steps["definition"]["tensors"] == ["q", "k", "v", "batch_indices"]
    assert list(steps["definition"]["attrs"]) == ["scale"]


# --- finding 5: the creator builds the plugin from the parser's float32 field -----------------


@pytest.mark.parametrize("version", VERSION_IDS)
def test_creator_builds_the_aot_plugin_from_onnx_fields(version):
    steps = _plugin(version, "register", "creator", "create")
    assert steps["create"]["class"] == "_TemplateAOTPlugin"
    scale = steps["create"]["attrs"]["scale"]
    assert float(scale if not isinstance(scale, list) else scale[0]) == pytest.approx(SCALE)


# --- finding 2: the AOT function as TensorRT calls it, with shape expressions -----------------


@pytest.mark.parametrize("version", VERSION_IDS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_aot_launch_parameters_match_the_kernel(version, dtype):
    steps = _plugin(version, "register", "creator", "create")
    aot = steps["aot"][dtype]
    assert aot["ok"], f"AOT function failed: {aot.get('error')}"
    positions = HEIGHT * WIDTH
    assert aot["compiled_with"] == [[dtype, CHANNELS, pytest.approx(SCALE)]]
    assert aot["output_types"] == [f"DataType.{'FLOAT' if dtype == 'fp32' else 'HALF'}"]
    assert aot["output_shape_R7"] == [ACTORS, CHANNELS, HEIGHT, WIDTH]
    # one program per (position, actor), 4 warps, no shared memory: kernel.metadata of the fake compile
    assert aot["launch_R7"] == {"grid_x": positions, "grid_y": ACTORS, "grid_z": 1, "block_x": 128, "block_y": 1,
                                "block_z": 1, "shared_mem": 0}
    assert aot["extra_args_R7"] == [ACTORS, positions]  # num_actors, num_positions (the kernel's i32 args)
    assert aot["extra_arg_types"] == ["SymInt32", "SymInt32"]
    assert aot["kernel_name"] == f"hr2o_{dtype}_{CHANNELS}"
    assert aot["ptx_parameters"] == 7


@pytest.mark.parametrize("version", VERSION_IDS)
def test_autotune_offers_fp32_and_fp16_with_int32_clip_labels(version):
    steps = _plugin(version, "register", "autotune")
    combos = {tuple(c) for c in steps["autotune"]["combinations"]}
    f32, f16, i32 = "DataType.FLOAT", "DataType.HALF", "DataType.INT32"
    assert (f32, f32, f32, i32, f32) in combos
    assert (f16, f16, f16, i32, f16) in combos
    assert all(c[3] == i32 for c in combos)


# --- finding 4: the build path registers the plugins before the parser runs -------------------


@pytest.mark.parametrize("version", VERSION_IDS)
def test_build_path_registers_plugins_before_parsing(version):
    result = probe(version, "build_path")
    events = [e[0] for e in result["events"]]
    assert "parse" in events, f"the build stopped before parsing: {result['error']}"
    parse = result["events"][events.index("parse")]
    assert "init_libnvinfer_plugins" in events[: events.index("parse")]
    assert "acar::ACAR_HR2O" in parse[1], f"plugin creators at parse time: {parse[1]}"
    assert result["error"]["type"] == "InputError"  # the probe's parser reports failure after recording


@pytest.mark.parametrize("version", VERSION_IDS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_bank_part_profiles_reach_the_builder_as_valid_dims(version, precision):
    """acfb exports: build_plan of bank_kv and bank_head with M from the bank profile; every set_shape
    argument converts to the real tensorrt.Dims and obeys set_shape's documented rules. Recorders stand
    in for the builder and parser: this checks the calls, it does not build an engine."""
    result = probe(version, "bank_profiles", {"entries": [1, 64, 256], "precision": precision})
    assert result["plans"] == {"bank_kv": "plan", "bank_head": "plan"}
    shapes = {e[1]: e[2] for e in result["events"] if e[0] == "set_shape"}
    assert all(e[3] for e in result["events"] if e[0] == "set_shape")
    assert shapes["bank_entries"] == [[1, 16, 1, 2], [64, 16, 1, 2], [256, 16, 1, 2]]
    assert shapes["bank_keys"] == shapes["bank_values"] == [[2, 1, 16, 1, 2], [2, 64, 16, 1, 2], [2, 256, 16, 1, 2]]
    assert shapes["bank_window"] == [[1, 1], [8, 64], [32, 256]]
    kinds = [e[0] for e in result["events"]]
    assert kinds.count("add_optimization_profile") == kinds.count("build_serialized_network") == 2
    flags = {e[1] for e in result["events"] if e[0] == "set_flag"}
    if precision == "fp16" and not version.startswith("11."):  # TensorRT 10: BuilderFlag.FP16; 11: strongly typed
        assert flags == {"BuilderFlag.FP16"}
    else:
        assert not flags


def test_tensorrt_without_aot_plugins_refuses_a_plugin_graph_in_one_line():
    """Finding 3: TensorRT < 10.9 has no tensorrt.plugin.aot_impl; building an HR2O graph names the version."""
    version = VERSION_WITHOUT_AOT[1]
    result = probe(version, "build_path")
    assert result["error"]["type"] == "InputError"
    assert f"TensorRT {version}" in result["error"]["message"] and ">= 10.9" in result["error"]["message"]
    assert "parse" not in [e[0] for e in result["events"]]


# --- every TensorRT attribute / enum / method / keyword the code uses -------------------------


USES = collect_uses()


def test_ast_walk_finds_the_tensorrt_uses():
    texts = {u.text() for u in USES}
    # an independent list of uses read off the code: the walk must find at least these
    for expected in ("trt.BuilderFlag.FP16", "config.set_timing_cache()", "trtp.KernelLaunchParams()",
                     "ctx.execute_async_v3()", "trt.TensorIOMode.INPUT", "builder.build_serialized_network()"):
        assert expected in texts
    gated = {u.text(): u.gates for u in USES}
    assert gated["trt.BuilderFlag.FP16"] == [("has_precision_flags(trt)", True)]


@pytest.mark.parametrize("version", VERSION_IDS)
def test_every_tensorrt_use_exists_in_this_version(version):
    payload = {"roots": ROOT_TYPES, "uses": [u.to_json() for u in USES]}
    results = probe(version, "surface", payload)["uses"]
    failures = [f"{r['use']['file']}:{r['use']['line']}: {r['result']['message']}"
                for r in results if r["result"]["status"] == "fail"]
    assert not failures, f"TensorRT {version}:\n" + "\n".join(failures)
    by_text = {}
    for r in results:
        text = r["use"]["root"] + "".join("." + s["name"] + ("()" if s["call"] else "") for s in r["use"]["segments"])
        by_text.setdefault(text, []).append(r["result"]["status"])
    # version gates honoured: TensorRT 11 has no precision flags, 10.x has them and they are checked
    expected = "gated-off" if version.startswith("11.") else "ok"
    assert set(by_text["trt.BuilderFlag.FP16"]) == {expected}
    assert set(by_text["trt.BuilderFlag.INT8"]) == {expected}


@pytest.mark.parametrize("version", VERSION_IDS[-1:])
def test_surface_check_catches_a_wrong_use(version):
    """The checker itself can fail: a made-up enum member, a method read as a property, a bad keyword."""
    def use(root, *segs, gates=()):
        return {"file": "x.py", "line": 1, "root": root, "gates": list(gates),
                "segments": [{"name": n, "call": c, "store": False, "nargs": 0, "kwargs": list(kw)} for n, c, kw in segs]}

    uses = [
        use("trt", ("BuilderFlag", False, ()), ("FP16", False, ())),
        use("expr", ("constant_value", False, ())),
        use("config", ("set_timing_cache", True, ("ignore_mismatches",))),
        use("trt", ("BuilderFlag", False, ()), ("FP16", False, ()), gates=[("hasattr(trt.BuilderFlag, 'FP16')", True)]),
    ]
    results = [r["result"] for r in probe(version, "surface", {"roots": ROOT_TYPES, "uses": uses})["uses"]]
    assert [r["status"] for r in results] == ["fail", "fail", "fail", "gated-off"]
    assert "is a method" in results[1]["message"]
