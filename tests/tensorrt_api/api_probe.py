"""Runs one group of conformance checks inside a process that imported one real `tensorrt` version.

Usage (by test_tensorrt_api.py, with the version's site dir on PYTHONPATH and its stand-in libraries
on LD_LIBRARY_PATH): `python api_probe.py GROUP < input.json`; prints one JSON object. Nothing here
builds, parses or runs a network: the C++ entry points (plugin registry, ONNX parser, builder, the
shape-expression builder) are replaced by small Python recorders before the project's code runs;
everything else -- `tensorrt.plugin`'s registration, validation, plugin creation and AOT launch code,
the pybind11 classes, enums and signatures -- is NVIDIA's own.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import tempfile
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import tensorrt as trt

MISSING = object()


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc).splitlines()[0] if str(exc) else "",
            "where": traceback.format_exc().strip().splitlines()[-3:][0].strip()}


# --- stand-ins for the C++ plugin registry -------------------------------------------------------


class RecordingRegistry:
    """What `trt.get_plugin_registry()` returns here: keeps the creators `tensorrt.plugin` registers."""

    def __init__(self) -> None:
        self.creators: dict[tuple[str, str, str], Any] = {}

    def register_creator(self, creator: Any, namespace: str = "") -> bool:
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str = "") -> Any:
        return self.creators.get((name, version, namespace))


def install_registry() -> RecordingRegistry:
    registry = RecordingRegistry()
    trt.get_plugin_registry = lambda: registry
    return registry


# --- surface: every attribute the code uses ------------------------------------------------------


def _resolve_type(dotted: str) -> Any:
    import importlib

    if dotted in ("tensorrt", "tensorrt.plugin"):
        return importlib.import_module(dotted)
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


_SIG = re.compile(r"^(\w+)\((.*)\)\s*->\s*([\w.\[\], ]+)\s*$")


def _pybind_overloads(member: Any) -> list[tuple[list[str], str]]:
    """(parameter names without self, return type) per overload, from a pybind11 docstring."""
    overloads = []
    for line in (getattr(member, "__doc__", "") or "").splitlines():
        line = re.sub(r"^\d+\.\s*", "", line.strip())
        match = _SIG.match(line)
        if not match:
            continue
        params = [p.split(":")[0].strip() for p in _split_params(match.group(2))]
        overloads.append(([p for p in params if p and p != "self"], match.group(3).strip()))
    return overloads


def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def _is_pybind(cls: Any) -> bool:
    return isinstance(cls, type) and cls.__module__.startswith("tensorrt.tensorrt")


def _lookup(obj: Any, name: str, store: bool) -> tuple[Any, str]:
    """(member, kind) with kind in module-member / property / method / class / value / instance-attr."""
    if isinstance(obj, ModuleType):
        member = getattr(obj, name, MISSING)
        return member, "class" if isinstance(member, type) else "module-member"
    static = inspect.getattr_static(obj, name, MISSING)
    if static is MISSING:
        if not _is_pybind(obj):  # plain Python class of tensorrt.plugin: attributes live on instances
            try:
                instance = obj()
                if store:
                    setattr(instance, name, 1)
                    return True, "instance-attr"
                value = getattr(instance, name, MISSING)
                return value, "instance-attr" if value is not MISSING else "missing"
            except AttributeError:
                return MISSING, "missing"
            except Exception:  # noqa: BLE001 - cannot instantiate: report as unknown
                return MISSING, "missing"
        return MISSING, "missing"
    if isinstance(static, property) or type(static).__name__ in ("property", "pybind11_static_property"):
        return static, "property"
    if isinstance(static, type):
        return static, "class"
    if callable(static) or isinstance(static, (staticmethod, classmethod)):
        return static, "method"
    return static, "value"


def check_use(use: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
    for gate, wanted in use["gates"]:
        try:
            holds = bool(eval(gate, dict(scope)))  # noqa: S307 - gate source from the project's own code
        except Exception:  # noqa: BLE001 - an unevaluable gate does not exempt the use
            continue
        if holds != wanted:
            return {"status": "gated-off", "gate": gate}
    obj: Any = _resolve_type(ROOTS[use["root"]])
    path = use["root"]
    segments = use["segments"]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        member, kind = _lookup(obj, seg["name"], seg["store"])
        where = f"{path}.{seg['name']}"
        owner = obj.__name__ if hasattr(obj, "__name__") else type(obj).__name__
        if member is MISSING:
            return {"status": "fail", "message": f"{where}: {owner} has no attribute {seg['name']!r}"}
        if seg["store"]:
            if kind == "property" and getattr(member, "fset", True) is None:
                return {"status": "fail", "message": f"{where}: read-only property of {owner}"}
            return {"status": "ok"}
        if kind == "method" and not seg["call"] and last and not isinstance(obj, ModuleType):
            return {"status": "fail", "message": f"{where}: {owner}.{seg['name']} is a method; it must be called"}
        if kind == "property" and seg["call"]:
            return {"status": "fail", "message": f"{where}(): {owner}.{seg['name']} is a property, not a method"}
        if seg["call"] and kind in ("method", "module-member", "class"):
            problem = _check_call(member, seg, where)
            if problem:
                return {"status": "fail", "message": problem}
        path = where + ("()" if seg["call"] else "")
        nxt = _next_object(member, kind, seg["call"])
        if nxt is None:
            return {"status": "ok", "checked_to": path} if last else {"status": "ok", "stopped_at": path}
        obj = nxt
    return {"status": "ok"}


def _check_call(member: Any, seg: dict[str, Any], where: str) -> str | None:
    target = member.__init__ if isinstance(member, type) and not _is_pybind(member) else member
    overloads = _pybind_overloads(member) if not inspect.isfunction(target) and not inspect.ismethod(target) else []
    if overloads:
        for params, _ in overloads:
            if set(seg["kwargs"]) <= set(params) and seg["nargs"] + len(seg["kwargs"]) <= len(params):
                return None
        return f"{where}({seg['nargs']} args, keywords {seg['kwargs']}): no overload accepts this: {overloads}"
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    names = set(signature.parameters)
    unknown = [k for k in seg["kwargs"] if k not in names]
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        return f"{where}: unknown keyword(s) {unknown}; accepts {sorted(names)}"
    return None


def _next_object(member: Any, kind: str, called: bool) -> Any:
    if called:
        if isinstance(member, type):
            return member
        for _, returns in _pybind_overloads(member):
            name = returns.split(".")[-1]
            candidate = getattr(trt, name, None)
            if isinstance(candidate, type):
                return candidate
        return None
    if kind == "class":
        return member
    if kind in ("value", "module-member") and type(member).__module__.startswith("tensorrt"):
        return type(member)
    return None


ROOTS: dict[str, str] = {}


def group_surface(payload: dict[str, Any]) -> dict[str, Any]:
    import tensorrt.plugin as trtp

    from acar_deploy.engines.runners import trt as engines_trt
    from acar_deploy.export import tensorrt_plugins

    ROOTS.update(payload["roots"])
    scope: dict[str, Any] = {"trt": trt, "trtp": trtp, "hasattr": hasattr}
    for module in (tensorrt_plugins, engines_trt):  # the project's version gates, as the code calls them
        scope.update({n: getattr(module, n) for n in ("has_precision_flags", "tensorrt_major", "tensorrt_version",
                                                      "supports_aot_plugins") if hasattr(module, n)})
    return {"uses": [dict(use=u, result=check_use(u, scope)) for u in payload["uses"]]}


# --- plugins: registration, creation as the ONNX parser does it, the AOT launch ------------------


class FakeDim:
    """A model of `trt.IDimensionExpr`: a constant, a named runtime dimension, or an operation."""

    OPS = {"SUM": lambda a, b: a + b, "PROD": lambda a, b: a * b, "SUB": lambda a, b: a - b,
           "FLOOR_DIV": lambda a, b: a // b, "CEIL_DIV": lambda a, b: -(-a // b), "MAX": max, "MIN": min,
           "EQUAL": lambda a, b: int(a == b), "LESS": lambda a, b: int(a < b)}

    def __init__(self, value: int | None = None, name: str | None = None, op: str | None = None, args=()):
        self.value, self.name, self.op, self.args = value, name, op, args

    def is_constant(self) -> bool:
        return self.value is not None or (self.op is not None and all(a.is_constant() for a in self.args))

    def get_constant_value(self) -> int:
        return self.evaluate({})

    def evaluate(self, env: dict[str, int]) -> int:
        if self.value is not None:
            return self.value
        if self.name is not None:
            return env[self.name]
        return self.OPS[self.op](*(a.evaluate(env) for a in self.args))


class FakeExprBuilder:
    """A model of `trt.IExprBuilder` (constant, operation) over FakeDim."""

    def constant(self, value: int) -> FakeDim:
        return FakeDim(int(value))

    def operation(self, op: Any, a: FakeDim, b: FakeDim) -> FakeDim:
        return FakeDim(op=op.name, args=(a, b))


class Recorder:
    """Stands in for the C++ launch-parameter struct and the symbolic-argument setter."""

    def __init__(self) -> None:
        self.items: dict[Any, Any] = {}
        self.nbSymExprs = 0

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("items", "nbSymExprs"):
            object.__setattr__(self, name, value)
        else:
            self.items[name] = value

    def __setitem__(self, index: int, value: Any) -> None:
        self.items[index] = value


class FakeCompiledKernel:
    """What `triton.compile` returns, for the AOT function (no GPU compile on this machine)."""

    def __init__(self, dtype_name: str, channels: int, scale: float):
        from acar_deploy.export.tensorrt_plugins import KERNEL_ARGUMENTS

        params = ", ".join(f".param .u64 p{i}" for i in range(KERNEL_ARGUMENTS))
        self.metadata = type("Metadata", (), {"name": f"hr2o_{dtype_name}_{channels}", "num_warps": 4, "shared": 0})()
        self.asm = {"ptx": f".visible .entry hr2o_{dtype_name}_{channels}({params})\n{{ ret; }}"}
        self.compiled_with = (dtype_name, channels, scale)


def _prepared_hr2o_model(scale: float) -> Any:
    """A one-node ACAR_HR2O graph as the build parses it (prepare_for_tensorrt applied)."""
    from onnx import helper

    from acar_deploy.export.plugin_nodes import (
        CUSTOM_DOMAIN,
        HR2O_OP,
        plugin_attributes,
        prepare_for_tensorrt,
    )

    node = helper.make_node(HR2O_OP, ["q", "k", "v", "b"], ["u"], domain=CUSTOM_DOMAIN, scale=scale,
                            **plugin_attributes())
    graph = helper.make_graph([node], "g", [], [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(CUSTOM_DOMAIN, 1)])
    return prepare_for_tensorrt(model)


def _onnx_plugin_fields(scale: float) -> tuple[list[Any], Any, dict[str, Any]]:
    """The PluginFields the ONNX parser hands the creator for the prepared ACAR_HR2O node.

    The parser consumes plugin_version, plugin_namespace and aot; every other attribute becomes a
    field: FLOAT -> one-element float32 array (kFLOAT32), INT -> int32 array, STRING -> CHAR bytes.
    """
    import numpy as np
    from onnx import AttributeProto

    from acar_deploy.export.plugin_nodes import (
        HR2O_OP,
    )

    prepared = next(n for n in _prepared_hr2o_model(scale).graph.node if n.op_type == HR2O_OP)
    values = {a.name: a for a in prepared.attribute}
    fields = []
    for name, attr in values.items():
        if name in ("plugin_version", "plugin_namespace", "aot"):
            continue
        if attr.type == AttributeProto.FLOAT:
            fields.append(trt.PluginField(name, np.array([attr.f], np.float32), trt.PluginFieldType.FLOAT32))
        elif attr.type == AttributeProto.INT:
            fields.append(trt.PluginField(name, np.array([attr.i], np.int32), trt.PluginFieldType.INT32))
        elif attr.type == AttributeProto.STRING:
            fields.append(trt.PluginField(name, attr.s, trt.PluginFieldType.CHAR))
    aot = values.get("aot")
    request = trt.QuickPluginCreationRequest.STRICT_AOT if aot is not None and aot.i else trt.QuickPluginCreationRequest.STRICT_JIT
    return fields, request, {"namespace": values["plugin_namespace"].s.decode(), "version": values["plugin_version"].s.decode()}


def group_plugin(payload: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": {}}
    steps = out["steps"]
    registry = install_registry()
    try:
        from acar_deploy.export import tensorrt_plugins as plugins

        plugins.register_hr2o_plugin()
        steps["register"] = {"ok": True}
    except BaseException as exc:  # noqa: BLE001
        steps["register"] = {"ok": False, "error": _error(exc)}
        return out
    import tensorrt.plugin as trtp
    from tensorrt.plugin import _lib

    plugin_id = plugins.HR2O_PLUGIN_ID
    definition = _lib.QDP_REGISTRY.get(plugin_id)
    steps["definition"] = {
        "ok": definition is not None and definition.aot_impl_func is not None and definition.autotune_func is not None,
        "tensors": list(definition.input_tensor_names) if definition else None,
        "attrs": {k: str(v) for k, v in definition.input_attrs.items()} if definition else None,
    }
    try:
        steps["autotune"] = _autotune(definition, trtp)
    except BaseException as exc:  # noqa: BLE001
        steps["autotune"] = {"ok": False, "error": _error(exc)}
    name = plugin_id.split("::")[1]
    scale = float(payload.get("scale", 0.125))
    fields, request, node_plugin = _onnx_plugin_fields(scale)
    creator = registry.get_creator(name, node_plugin["version"], node_plugin["namespace"])
    steps["creator"] = {"ok": creator is not None, "looked_up": [name, node_plugin["version"], node_plugin["namespace"]],
                        "registered": [list(k) for k in registry.creators]}
    if creator is None:
        return out
    try:
        plugin = creator.create_plugin(name, node_plugin["namespace"], trt.PluginFieldCollection(fields),
                                       trt.TensorRTPhase.BUILD, request)
        attrs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in plugin.attrs.items()}
        steps["create"] = {"ok": True, "class": type(plugin).__name__, "attrs": attrs}
    except BaseException as exc:  # noqa: BLE001
        steps["create"] = {"ok": False, "error": _error(exc)}
        return out

    channels, height, width = payload.get("channels", 24), payload.get("height", 4), payload.get("width", 5)
    results = {}
    for dtype_name, dtype in (("fp32", trt.float32), ("fp16", trt.float16)):
        try:
            results[dtype_name] = _aot_launch(plugin, plugins, trtp, dtype, channels, height, width)
        except BaseException as exc:  # noqa: BLE001
            results[dtype_name] = {"ok": False, "error": _error(exc)}
    steps["aot"] = results
    return out


def _aot_launch(plugin: Any, plugins: Any, trtp: Any, dtype: Any, channels: int, height: int, width: int) -> dict:
    """What TensorRT does at build time: output types, output shapes, then get_launch_params."""
    from tensorrt.plugin import _tensor

    builder = FakeExprBuilder()
    trt.IDimensionExpr = FakeDim  # tensorrt.plugin wraps builder results only if isinstance(_, IDimensionExpr)
    input_types = [dtype, dtype, dtype, trt.int32]
    output_types = plugin.get_output_data_types(input_types, [4, 4, 4, 1])
    # get_output_shapes: one ShapeExpr per input dimension; R (actors) is a runtime dimension.
    _tensor.SymIntExpr._exprBuilder = builder
    descs = []
    for rank in (4, 4, 4, 1):
        desc = trtp.TensorDesc()
        desc.dtype = input_types[len(descs)]
        dims = ["R", channels, height, width][:rank]
        shape = trtp.ShapeExprs(rank)
        for j, d in enumerate(dims):
            expr = trtp.ShapeExpr(1)
            expr._int_expr = FakeDim(name=d) if isinstance(d, str) else FakeDim(d)
            shape[j] = expr
        desc.shape_expr = shape
        desc._immutable = True
        descs.append(desc)
    plugin.input_descs = descs
    outputs = plugin.register_function(*descs, **plugin.attrs)
    plugin.output_descs = outputs if isinstance(outputs, tuple) else (outputs,)
    out_shape = [FakeDimOf(e) for e in plugin.output_descs[0].shape_expr]
    _tensor.SymIntExpr._exprBuilder = None

    in_out = []
    for t in [*input_types, *output_types]:
        d = trt.DynamicPluginTensorDesc()
        d.desc.type = t
        d.desc.format = trt.TensorFormat.LINEAR
        in_out.append(d)
    compiled = []

    def fake_compile(dtype_name: str, ch: int, sc: float) -> FakeCompiledKernel:
        kernel = FakeCompiledKernel(dtype_name, ch, sc)
        compiled.append(kernel.compiled_with)
        return kernel

    plugins.compile_hr2o_kernel = fake_compile
    captured: list[Any] = []

    class SymExprRecord:  # stands in for the C++-backed SymExprImpl (it holds an IDimensionExpr)
        def __init__(self, expr: Any):
            captured.append(type(expr).__name__)
            self.expr = expr._expr

    original = _tensor.SymExprImpl
    _tensor.SymExprImpl = SymExprRecord
    launch, setter = Recorder(), Recorder()
    try:
        plugin.set_tactic(0)
        plugin.get_launch_params(None, in_out, 4, launch, setter, builder)
    finally:
        _tensor.SymExprImpl = original
    env = {"R": 7}
    kernel_name, ptx = plugin.get_kernel([d.desc for d in in_out[:4]], [d.desc for d in in_out[4:]])
    return {
        "ok": True,
        "output_types": [str(t) for t in output_types],
        "output_shape_R7": [d.evaluate(env) for d in out_shape],
        "compiled_with": [list(c) for c in compiled],
        "launch_R7": {k: v.expr.evaluate(env) for k, v in launch.items.items()},
        "extra_args_R7": [setter.items[i].expr.evaluate(env) for i in range(setter.nbSymExprs)],
        "extra_arg_types": captured[-setter.nbSymExprs:] if setter.nbSymExprs else [],
        "kernel_name": kernel_name.decode() if isinstance(kernel_name, bytes) else kernel_name,
        "ptx_parameters": plugins.ptx_entry_parameter_count(ptx.decode() if isinstance(ptx, bytes) else ptx),
    }


def FakeDimOf(expr: Any) -> FakeDim:  # noqa: N802 - reads like a cast
    return expr._expr


def _autotune(definition: Any, trtp: Any) -> dict[str, Any]:
    descs = [trtp.TensorDesc() for _ in range(4)]
    combinations = definition.autotune_func(*descs, (trtp.TensorDesc(),))
    expanded = [c for comb in combinations for c in comb._get_combinations()]
    return {"ok": True, "combinations": [[str(t) for t in c.types] for c in expanded]}


# --- build path: plugins registered before the parser runs ---------------------------------------


def group_build_path(payload: dict[str, Any]) -> dict[str, Any]:
    registry = install_registry()
    events: list[Any] = []

    class Parser:
        num_errors = 1

        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def _parse(self, *args: Any, **kwargs: Any) -> bool:
            events.append(("parse", sorted("::".join((k[2], k[0])) for k in registry.creators)))
            return False

        parse = parse_from_file = _parse

        def get_error(self, i: int) -> str:
            return "stopped by the conformance probe after parsing"

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int = 0) -> object:
            return object()

    trt.OnnxParser = Parser
    trt.Builder = Builder
    trt.init_libnvinfer_plugins = lambda logger, namespace: events.append(("init_libnvinfer_plugins", namespace)) or True

    from acar_deploy.engines.runners import trt as engines_trt
    from acar_deploy.engines.settings import Precision

    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "head.onnx"
        graph.write_bytes(_prepared_hr2o_model(0.125).SerializeToString())
        request = engines_trt.TrtBuildRequest(onnx_path=graph, precision=Precision.FP16, profiles={},
                                              workspace_bytes=1 << 20, fp32_layers=(), timing_cache=None)
        try:
            engines_trt.build_plan(request)
            error = None
        except BaseException as exc:  # noqa: BLE001
            error = _error(exc)
    return {"events": events, "error": error}


# --- bank parts: optimization profiles over M reach the builder as real Dims ----------------------


def group_bank_profiles(payload: dict[str, Any]) -> dict[str, Any]:
    """`build_plan` of an acfb export's bank_kv / bank_head with profiles from `profile_shapes`: the
    builder, config and parser are recorders (no libnvinfer), each min/opt/max goes through the real
    `tensorrt.Dims` and IOptimizationProfile.set_shape's documented rules (same rank, 0 <= min <= opt <= max)."""
    import onnx

    from acar_deploy.engines.runners import trt as engines_trt
    from acar_deploy.engines.settings import Precision, ShapeRange
    from acar_deploy.export.specs import make_spec
    from acar_deploy.formats.manifest import BankGeometry, ExportGeometry

    events: list[Any] = []

    class Profile:
        def set_shape(self, name: str, lo: Any, mid: Any, hi: Any) -> None:
            dims = [trt.Dims(tuple(s)) for s in (lo, mid, hi)]
            shapes = [tuple(d) for d in dims]
            ok = len({len(d) for d in dims}) == 1 and all(0 <= a <= b <= c for a, b, c in zip(*shapes, strict=True))
            events.append(("set_shape", name, [list(x) for x in shapes], ok))

    class Config:
        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            events.append(("memory_pool", str(pool), size))

        def clear_flag(self, flag: Any) -> None:
            events.append(("clear_flag", str(flag)))

        def set_flag(self, flag: Any) -> None:
            events.append(("set_flag", str(flag)))

        def add_optimization_profile(self, profile: Any) -> int:
            events.append(("add_optimization_profile", isinstance(profile, Profile)))
            return 0

    class Parser:
        num_errors = 0

        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            events.append(("parse", Path(path).name))
            return True

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int = 0) -> object:
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            events.append(("build_serialized_network",))
            return b"plan"

    trt.OnnxParser = Parser
    trt.Builder = Builder
    trt.init_libnvinfer_plugins = lambda logger, namespace: True

    geometry = ExportGeometry(input_size=(64, 64), context_size=(4, 4), context_channels=24, num_classes=9,
                              bank=BankGeometry(channels=16, size=(1, 2), depth=2))
    entries = ShapeRange(*payload["entries"])
    plans = {}
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "part.onnx"
        onnx.save_model(onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], [])), str(graph))
        for part in ("bank_kv", "bank_head"):
            inputs = tuple(t.to_dict() for t in make_spec(part, geometry).inputs)
            profiles = engines_trt.profile_shapes(inputs, ShapeRange(1, 1, 2), ShapeRange(1, 8, 32), part, entries)
            request = engines_trt.TrtBuildRequest(onnx_path=graph, precision=Precision(payload["precision"]),
                                                  profiles=profiles, workspace_bytes=1 << 20, fp32_layers=(),
                                                  timing_cache=None)
            try:
                plans[part] = engines_trt.build_plan(request).decode()
            except BaseException as exc:  # noqa: BLE001
                plans[part] = _error(exc)
    return {"events": events, "plans": plans}


GROUPS = {"surface": group_surface, "plugin": group_plugin, "build_path": group_build_path,
          "bank_profiles": group_bank_profiles}

if __name__ == "__main__":
    payload = json.loads(sys.stdin.read() or "{}")
    result = GROUPS[sys.argv[1]](payload)
    result["tensorrt_version"] = trt.__version__
    print("\n@@PROBE@@" + json.dumps(result, default=str))
