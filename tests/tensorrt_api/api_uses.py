"""Every TensorRT attribute, enum member, method and keyword the project's code uses, by an AST walk.

A use is an attribute chain rooted at a name that holds a TensorRT object (`trt.BuilderFlag.FP16`,
`config.set_timing_cache(cache, ignore_mismatch=False)`, `launch.grid_x = ...`), with the version
gates around it (`if has_precision_flags(trt):`, `hasattr(trt.BuilderFlag, "TF32")`). The probe
resolves each use against a real `tensorrt` module. New code is covered as long as it keeps the
receiver names below (the project's convention in its TensorRT modules); `ROOT_TYPES` says which
TensorRT type each name holds.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "acar_deploy"

# receiver name -> dotted TensorRT type ("tensorrt" / "tensorrt.plugin" for the modules themselves)
ROOT_TYPES = {
    "trt": "tensorrt",
    "tensorrt": "tensorrt",
    "trtp": "tensorrt.plugin",
    "builder": "tensorrt.Builder",
    "network": "tensorrt.INetworkDefinition",
    "parser": "tensorrt.OnnxParser",
    "config": "tensorrt.IBuilderConfig",
    "profile": "tensorrt.IOptimizationProfile",
    "layer": "tensorrt.ILayer",
    "runtime": "tensorrt.Runtime",
    "cache": "tensorrt.ITimingCache",
    "ctx": "tensorrt.IExecutionContext",
    "self.engine": "tensorrt.ICudaEngine",
    "self.context": "tensorrt.IExecutionContext",
    "launch": "tensorrt.plugin.KernelLaunchParams",
    "q": "tensorrt.plugin.TensorDesc",
    "k": "tensorrt.plugin.TensorDesc",
    "v": "tensorrt.plugin.TensorDesc",
    "batch_indices": "tensorrt.plugin.TensorDesc",
    "expr": "tensorrt.plugin.ShapeExpr",
}
# Calls whose truth value depends on the TensorRT version (evaluated by the probe on each version).
GATE_FUNCTIONS = {"hasattr", "has_precision_flags", "tensorrt_major", "tensorrt_version", "supports_aot_plugins"}


@dataclass
class Segment:
    name: str
    call: bool = False
    store: bool = False
    nargs: int = 0
    kwargs: list[str] = field(default_factory=list)


@dataclass
class Use:
    file: str
    line: int
    root: str
    segments: list[Segment]
    gates: list[tuple[str, bool]]  # (gate source, required truth value)

    def text(self) -> str:
        return self.root + "".join(f".{s.name}" + ("()" if s.call else "") for s in self.segments)

    def to_json(self) -> dict:
        return asdict(self)


def tensorrt_modules(package: Path = PACKAGE) -> list[Path]:
    """Modules that import TensorRT (directly or through the project's `import_tensorrt`)."""
    return sorted(p for p in package.rglob("*.py")
                  if "import tensorrt" in (text := p.read_text()) or "import_tensorrt(" in text)


def _root(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name) and node.id in ROOT_TYPES:
        return node.id
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
            and f"self.{node.attr}" in ROOT_TYPES):
        return f"self.{node.attr}"
    return None


def _flatten(node: ast.AST, chain: list[ast.AST]) -> tuple[str, list[Segment]] | None:
    root = _root(node)
    if root is not None:
        chain.append(node)
        return root, []
    if isinstance(node, ast.Call):
        inner = _flatten(node.func, chain)
        if inner is None or not inner[1]:
            return None
        inner[1][-1].call = True
        inner[1][-1].nargs = len(node.args)
        inner[1][-1].kwargs = [k.arg for k in node.keywords if k.arg]
        chain.append(node)
        return inner
    if isinstance(node, ast.Attribute):
        inner = _flatten(node.value, chain)
        if inner is None:
            return None
        inner[1].append(Segment(node.attr, store=isinstance(node.ctx, ast.Store)))
        chain.append(node)
        return inner
    return None


def _gate_sources(test: ast.AST) -> list[str]:
    parts = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) else [test]
    return [ast.unparse(p) for p in parts
            if isinstance(p, ast.Call) and isinstance(p.func, ast.Name) and p.func.id in GATE_FUNCTIONS
            and (p.func.id != "hasattr" or _flatten(p.args[0], []) is not None)]


class _Walker(ast.NodeVisitor):
    def __init__(self, file: str):
        self.file = file
        self.uses: list[Use] = []
        self.gates: list[tuple[str, bool]] = []
        self.seen: set[int] = set()

    def _record(self, node: ast.AST) -> None:
        if id(node) in self.seen:
            return
        chain: list[ast.AST] = []
        flat = _flatten(node, chain)
        if flat is not None and flat[1]:
            self.seen.update(id(n) for n in chain)
            self.uses.append(Use(self.file, node.lineno, flat[0], flat[1], list(self.gates)))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._record(node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self._record(node)
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        gates = _gate_sources(node.test)
        self.gates.extend((g, True) for g in gates)
        for stmt in node.body:
            self.visit(stmt)
        del self.gates[len(self.gates) - len(gates):]
        single = len(gates) == 1 and ast.unparse(node.test) == gates[0]
        if single:
            self.gates.append((gates[0], False))
        for stmt in node.orelse:
            self.visit(stmt)
        if single:
            self.gates.pop()

    def _visit_block(self, stmts: list[ast.stmt]) -> None:
        """`if not <gate>: return` gates the rest of the block on <gate>."""
        pushed = 0
        for stmt in stmts:
            self.visit(stmt)
            if (isinstance(stmt, ast.If) and not stmt.orelse and isinstance(stmt.test, ast.UnaryOp)
                    and isinstance(stmt.test.op, ast.Not) and isinstance(stmt.body[-1], (ast.Return, ast.Raise))):
                gates = _gate_sources(stmt.test.operand)
                if len(gates) == 1 and ast.unparse(stmt.test.operand) == gates[0]:
                    self.gates.append((gates[0], True))
                    pushed += 1
        del self.gates[len(self.gates) - pushed:]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for item in [*node.decorator_list, node.args, *([node.returns] if node.returns else [])]:
            self.visit(item)
        self._visit_block(node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        gates = _gate_sources(node.test)
        self.gates.extend((g, True) for g in gates)
        self.visit(node.body)
        del self.gates[len(self.gates) - len(gates):]
        self.visit(node.orelse)


def collect_uses(package: Path = PACKAGE) -> list[Use]:
    uses = []
    for path in tensorrt_modules(package):
        walker = _Walker(str(path.relative_to(package.parent)))
        walker.visit(ast.parse(path.read_text(), str(path)))
        uses.extend(walker.uses)
    return uses
