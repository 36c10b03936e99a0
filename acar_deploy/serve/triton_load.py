"""Load a served pipeline with Triton's perf_analyzer and read Triton's own statistics alongside.

perf_analyzer comes from the tritonclient 2.41.0 wheel (pip-installed with --no-deps into the cache):
the perf-analyzer 2.60 wheel needs glibc 2.38, the 2.41 binary runs on glibc 2.36. It needs libb64 and
libcudart, which are taken from the bundled server's wheel (loaded only; no GPU is used).
Per concurrency the result holds perf_analyzer's client view (throughput, p50/p90/p99) and, from the
server's statistics endpoint, how long requests of each model waited in its queue vs. computed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.errors import InputError
from acar_deploy.serve.local_triton import bundled_dir, default_cache_dir, pip_install, prepare_bundled
from acar_deploy.serve.triton_client import TritonProtocol

PERF_ANALYZER_REQUIREMENT = "tritonclient==2.41.0"
# The sonames perf_analyzer asks for -> the files the pytriton wheel ships them as (prefix match).
_BORROWED_LIBS = {"libb64.so.0d": "libb64-", "libcudart.so.12": "libcudart-"}


@dataclass(frozen=True)
class PerfAnalyzer:
    binary: Path
    lib_dir: Path


def prepare_perf_analyzer(cache_dir: Path | None = None, install: bool = True) -> PerfAnalyzer:
    """perf_analyzer 2.41 in the cache, with the two libraries it borrows from the bundled server."""
    cache_dir = cache_dir or default_cache_dir()
    root = cache_dir / f"perf-analyzer-{PERF_ANALYZER_REQUIREMENT.split('==')[1]}"
    binary, lib_dir = root / "bin" / "perf_analyzer", root / "borrowed-libs"
    if not binary.is_file():
        if not install:
            raise InputError(f"{binary}: perf_analyzer is not installed; run with install=True (needs the index)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=cache_dir))
        try:
            pip_install(["--no-deps", "--target", str(tmp), PERF_ANALYZER_REQUIREMENT], PERF_ANALYZER_REQUIREMENT)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    prepare_bundled(cache_dir, install=install)
    wheel_libs = bundled_dir(cache_dir) / "server" / "nvidia_pytriton.libs"
    lib_dir.mkdir(exist_ok=True)
    for soname, prefix in _BORROWED_LIBS.items():
        found = sorted(wheel_libs.glob(f"{prefix}*"))
        if not found:
            raise InputError(f"{wheel_libs}: no {prefix}* library for perf_analyzer's {soname}")
        link = lib_dir / soname
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(found[0])
    return PerfAnalyzer(binary, lib_dir)


@dataclass(frozen=True)
class LoadSettings:
    http_url: str  # host:port; statistics are always read over HTTP
    grpc_url: str
    model: str = "acar"
    protocol: TritonProtocol = TritonProtocol.http
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    measurement_interval_ms: int = 3000
    measurement_requests: int = 0  # > 0: windows of this many requests (count_windows), for slow models
    max_trials: int = 10
    stability_percent: int = 50  # perf_analyzer's default 10 rarely settles on a shared 2-core machine
    timeout_s: float = 300.0  # per concurrency level


@dataclass(frozen=True)
class ModelTimes:
    """Per request of one model during one level, from Triton's statistics (milliseconds)."""

    requests: int
    executions: int
    queue_ms: float
    compute_ms: float  # compute_input + compute_infer + compute_output


@dataclass(frozen=True)
class LoadLevel:
    concurrency: int
    throughput: float  # inferences per second (client side)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    models: dict[str, ModelTimes]
    command: str  # the perf_analyzer command line that measured this level

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_input_data(folder: Path, clips: np.ndarray, rois: np.ndarray) -> list[str]:
    """perf_analyzer's binary input folder (one raw file per input) and the matching --shape options."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = []
    for name, array in (("clips", clips), ("rois", rois)):
        np.ascontiguousarray(array, dtype=np.float32).tofile(folder / name)
        shapes += ["--shape", f"{name}:{','.join(str(d) for d in array.shape)}"]
    return shapes


def server_statistics(http_url: str) -> dict[str, dict[str, int]]:
    """Cumulative counts and nanoseconds per model from GET /v2/models/stats."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/stats", timeout=10) as response:  # noqa: S310
        stats = json.loads(response.read())["model_stats"]
    result = {}
    for model in stats:
        inference = model.get("inference_stats", {})
        result[model["name"]] = {
            "requests": int(inference.get("success", {}).get("count", 0)),
            "executions": int(model.get("execution_count", 0)),
            "queue_ns": int(inference.get("queue", {}).get("ns", 0)),
            "compute_ns": sum(int(inference.get(k, {}).get("ns", 0))
                              for k in ("compute_input", "compute_infer", "compute_output")),
        }
    return result


def _times(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, ModelTimes]:
    times = {}
    for name, end in after.items():
        start = before.get(name, dict.fromkeys(end, 0))
        requests = end["requests"] - start["requests"]
        if requests <= 0:
            continue
        times[name] = ModelTimes(
            requests, end["executions"] - start["executions"],
            (end["queue_ns"] - start["queue_ns"]) / requests / 1e6,
            (end["compute_ns"] - start["compute_ns"]) / requests / 1e6,
        )
    return times


def _read_csv(path: Path) -> dict[str, float]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InputError(f"{path}: perf_analyzer wrote no measurement")
    row = rows[-1]
    return {
        "throughput": float(row["Inferences/Second"]),
        **{f"p{p}_ms": float(row[f"p{p} latency"]) / 1000 for p in (50, 90, 99)},
    }


def run_load(settings: LoadSettings, analyzer: PerfAnalyzer, clips: np.ndarray, rois: np.ndarray) -> list[LoadLevel]:
    """One perf_analyzer run per concurrency level on the same request (clips, rois)."""
    levels = []
    url = settings.http_url if settings.protocol is TritonProtocol.http else settings.grpc_url
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
        p for p in (str(analyzer.lib_dir), os.environ.get("LD_LIBRARY_PATH", "")) if p)}
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        shapes = write_input_data(Path(tmp) / "inputs", clips, rois)
        for concurrency in settings.concurrency:
            report = Path(tmp) / f"c{concurrency}.csv"
            command = [
                str(analyzer.binary), "-m", settings.model, "-u", url, "-i", settings.protocol.value,
                "--input-data", str(Path(tmp) / "inputs"), *shapes,
                "--concurrency-range", f"{concurrency}:{concurrency}",
                *(["--measurement-mode", "count_windows", "--measurement-request-count",
                   str(settings.measurement_requests)] if settings.measurement_requests > 0 else
                  ["--measurement-interval", str(settings.measurement_interval_ms)]),
                "--max-trials", str(settings.max_trials), "--stability-percentage", str(settings.stability_percent),
                "-f", str(report),
            ]
            before = server_statistics(settings.http_url)
            try:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=settings.timeout_s)
            except subprocess.TimeoutExpired as exc:
                raise InputError(f"perf_analyzer at concurrency {concurrency} ran over {settings.timeout_s:.0f} s") from exc
            after = server_statistics(settings.http_url)
            if done.returncode != 0 or not report.is_file():
                last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
                raise InputError(f"perf_analyzer failed at concurrency {concurrency}: {last[0]}")
            levels.append(LoadLevel(concurrency, **_read_csv(report), models=_times(before, after),
                                    command=" ".join(command)))
    return levels
