"""The real TensorRT Python bindings of several versions, in a git-ignored cache, importable on a CPU.

`tensorrt-cu12-bindings` (10.x) and `tensorrt-cu13-bindings` (11.x) are downloaded once with
`pip download --no-deps` and unpacked as a package named `tensorrt`. Their compiled module links
against libnvinfer, libnvinfer_plugin and libnvonnxparser; the library wheels on the registry are
stubs, so this module compiles stand-in shared libraries (gcc) with the SONAMEs and the few C symbols
the module asks for. The stand-ins only satisfy the dynamic loader: every function in them aborts,
and the conformance probe never calls them (it never builds, parses or runs anything).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("ACAR_TRT_BINDINGS_CACHE", REPO / ".cache" / "tensorrt-bindings"))

# (distribution, version): one 10.x >= 10.9 with the numpy-2 scalar bug (10.13), the newest 10.x and 11.4.
VERSIONS = (
    ("tensorrt-cu12-bindings", "10.13.3.9"),
    ("tensorrt-cu12-bindings", "10.16.1.11"),
    ("tensorrt-cu13-bindings", "11.4.0.106"),
)

# Has tensorrt.plugin but no aot_impl: the HR2O plugin must be refused with the version named.
VERSION_WITHOUT_AOT = ("tensorrt-cu12-bindings", "10.8.0.43")

# Every C symbol the bindings import from the three TensorRT libraries (nm -D --undefined-only tensorrt.so).
_LIBRARY_SYMBOLS = {
    "libnvinfer": ("createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL", "createInferRuntime_INTERNAL",
                   "getBuilderPluginRegistry", "getPluginRegistry"),
    "libnvinfer_plugin": ("initLibNvInferPlugins",),
    "libnvonnxparser": ("createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL", "getNvOnnxParserVersion"),
}


class BindingsUnavailable(RuntimeError):
    """The wheel could not be downloaded (no registry) or the stand-ins not compiled (no gcc)."""


@dataclass(frozen=True)
class Bindings:
    version: str
    site: Path  # holds the `tensorrt` package
    libs: Path  # holds the stand-in libnvinfer*.so.N

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.libs), env.get("LD_LIBRARY_PATH")) if p)
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), str(REPO)])
        env.pop("PYTHONHOME", None)
        return env


def prepare(distribution: str, version: str, cache: Path = CACHE) -> Bindings:
    """Download (once), unpack and provide stand-in libraries for one bindings version."""
    root = cache / version
    site, libs = root / "site", root / "libs"
    if not (site / "tensorrt" / "__init__.py").is_file():
        wheel = _download(distribution, version, root / "wheel")
        tmp = root / "site.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        (tmp / "tensorrt_bindings").rename(tmp / "tensorrt")  # what `import tensorrt` finds in a full install
        shutil.rmtree(site, ignore_errors=True)
        tmp.rename(site)
    major = version.split(".")[0]
    if not all((libs / f"{name}.so.{major}").is_file() for name in _LIBRARY_SYMBOLS):
        _compile_stand_ins(libs, major)
    return Bindings(version, site, libs)


def _download(distribution: str, version: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    pattern = f"{distribution.replace('-', '_')}-{version}-*.whl"
    found = sorted(dest.glob(pattern))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
           f"{distribution}=={version}"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BindingsUnavailable(f"pip download {distribution}=={version} failed: {exc}") from None
    found = sorted(dest.glob(pattern))
    if result.returncode != 0 or not found:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BindingsUnavailable(f"package registry unreachable or {distribution}=={version} missing: {tail[0]}")
    return found[0]


def _compile_stand_ins(libs: Path, major: str) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise BindingsUnavailable("no C compiler (gcc) to build the stand-in TensorRT libraries")
    libs.mkdir(parents=True, exist_ok=True)
    for name, symbols in _LIBRARY_SYMBOLS.items():
        source = libs / f"{name}.c"
        body = "".join(
            f'void *{s}(void) {{ fputs("stand-in {name}: {s} called\\n", stderr); abort(); }}\n' for s in symbols
        )
        source.write_text("#include <stdio.h>\n#include <stdlib.h>\n" + body)
        soname = f"{name}.so.{major}"
        subprocess.run([gcc, "-shared", "-fPIC", "-o", str(libs / soname), f"-Wl,-soname,{soname}", str(source)],
                       check=True, capture_output=True)
