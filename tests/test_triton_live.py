"""A real Triton server (the bundled CPU one) serving a repository built from a tiny `acar_tiny` export.

Everything runs on 127.0.0.1 with ports the OS picked; every wait has a bound; the fixture kills only
the process group of the server it started and checks that nothing of it is left. The reference is
ONNX Runtime run in this process on the same two graphs the repository holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from acar_deploy.errors import InputError  # noqa: E402
from acar_deploy.model.scores import action_scores  # noqa: E402
from acar_deploy.serve.local_triton import (  # noqa: E402
    ServeSettings,
    TritonServerProcess,
    find_runtime,
    free_port,
    prepare_bundled,
)
from acar_deploy.serve.triton import InstanceKind, TritonSettings, build_model_repository  # noqa: E402
from acar_deploy.serve.triton_client import TritonProtocol, infer_pipeline, open_client  # noqa: E402

SIZE = (64, 64)
MAX_BATCH = 4
TIMEOUT_S = 60.0
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the bundled tritonserver is a Linux binary")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_gone(pgid: int, timeout_s: float = 15.0) -> bool:
    """Killed stubs are reaped by init a moment later: wait (bounded) for the group to empty."""
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _group_alive(pgid)


class LiveServer:
    """The module's server; `restart` replaces a killed one on new ports."""

    def __init__(self, repository, runtime) -> None:
        self.repository, self.runtime = repository, runtime
        self.process: TritonServerProcess | None = None
        self.groups: list[int] = []

    def start(self) -> None:
        settings = ServeSettings(self.repository, http_port=free_port(), grpc_port=free_port(), ready_timeout_s=180)
        self.process = TritonServerProcess(settings, self.runtime).start()
        self.groups.append(self.process.process.pid)
        self.endpoints = self.process.wait_ready()

    def url(self, protocol: TritonProtocol) -> str:
        return self.endpoints.http if protocol is TritonProtocol.http else self.endpoints.grpc

    def stats(self, model: str) -> dict:
        _, client, _ = open_client(self.endpoints.http, TritonProtocol.http, TIMEOUT_S)
        try:
            stats = client.get_inference_statistics(model)["model_stats"][0]
        finally:
            client.close()
        return {"executions": int(stats.get("execution_count", 0)), "inferences": int(stats.get("inference_count", 0))}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    export = pytest.importorskip("acar_deploy.export")
    root = tmp_path_factory.mktemp("live")
    settings = export.ExportSettings(parts=export.Parts.split, input_size=SIZE, validate=False)
    export.export_model(root / "export", config="acar_tiny", settings=settings)
    # Two pipeline instances issue backbone requests concurrently; the queue delay lets the batcher merge them.
    repo = build_model_repository(
        root / "export", root / "repo",
        settings=TritonSettings(max_batch=MAX_BATCH, instances=2, max_queue_delay_us=100_000),
    )
    server = LiveServer(repo.path, prepare_bundled(install=True))
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.stop(timeout_s=30)
        assert all(_group_gone(g) for g in server.groups), "a tritonserver process outlived the fixture"


@pytest.fixture(scope="module")
def reference(live):
    """ORT in this process on the repository's own backbone and head graphs."""
    backbone = ort.InferenceSession(str(live.repository / "acar_backbone" / "1" / "model.onnx"),
                                    providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(live.repository / "acar_head" / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])

    def run(clips: np.ndarray, rois: np.ndarray) -> np.ndarray:
        context = backbone.run(["context"], {"clips": clips})[0]
        return head.run(["logits"], {"context": context, "rois": rois})[0]

    return run


def _request(seed: int, clips: int = 1, boxes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clip = rng.standard_normal((clips, 3, 32, *SIZE)).astype(np.float32)
    xy = np.sort(rng.uniform(0.05, 0.95, size=(boxes, 2, 2)), axis=1)  # [R, (min, max), (x, y)]
    index = np.arange(boxes, dtype=np.float32)[:, None] % clips
    rois = np.concatenate([index, xy[:, 0, :1], xy[:, 0, 1:], xy[:, 1, :1], xy[:, 1, 1:]], axis=1)
    return clip, rois.astype(np.float32)


def _check_answer(logits, scores, want_logits) -> None:
    assert logits.shape == want_logits.shape
    np.testing.assert_allclose(logits, want_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores, np.asarray(action_scores(want_logits)), rtol=0, atol=1e-5)


def test_every_model_is_ready(live):
    assert dict(live.endpoints.models) == {"acar": "READY", "acar_backbone": "READY", "acar_head": "READY"}
    assert live.endpoints.http.startswith("127.0.0.1:") and live.endpoints.metrics is None


@pytest.mark.parametrize("protocol", list(TritonProtocol))
def test_pipeline_matches_ort_over(protocol, live, reference):
    clips, rois = _request(seed=1, clips=2, boxes=3)
    logits, scores = infer_pipeline(live.url(protocol), clips, rois, protocol=protocol, timeout_s=TIMEOUT_S)
    _check_answer(logits, scores, reference(clips, rois))


def test_zero_boxes_answer_empty_without_running_the_models(live):
    clips, _ = _request(seed=2)
    before = {m: live.stats(m) for m in ("acar_backbone", "acar_head")}
    logits, scores = infer_pipeline(live.endpoints.http, clips, np.zeros((0, 5), np.float32), timeout_s=TIMEOUT_S)
    assert logits.shape == scores.shape == (0, logits.shape[1]) and logits.shape[1] > 0
    assert {m: live.stats(m) for m in before} == before


@pytest.mark.parametrize("case", ["box_index_out_of_range", "wrong_dtype", "too_many_clips"])
def test_bad_request_is_an_error_and_the_server_keeps_serving(case, live, reference):
    clips, rois = _request(seed=3)
    if case == "box_index_out_of_range":
        bad = rois.copy()
        bad[0, 0] = 1  # one clip: only index 0 exists
        with pytest.raises(InputError, match=r"rois\[:, 0\] must be clip indices in \[0, 1\)"):
            infer_pipeline(live.endpoints.http, clips, bad, timeout_s=TIMEOUT_S)
    elif case == "too_many_clips":
        many, _ = _request(seed=4, clips=MAX_BATCH + 1)
        with pytest.raises(InputError, match=f"clips batch {MAX_BATCH + 1} exceeds the backbone's max_batch_size"):
            infer_pipeline(live.endpoints.http, many, rois, timeout_s=TIMEOUT_S)
    else:
        module, client, _ = open_client(live.endpoints.http, TritonProtocol.http, TIMEOUT_S)
        try:
            tensors = []
            for name, array, dtype in (("clips", clips.astype(np.float64), "FP64"), ("rois", rois, "FP32")):
                tensors.append(module.InferInput(name, list(array.shape), dtype))
                tensors[-1].set_data_from_numpy(array)
            with pytest.raises(Exception, match="(?i)data-type|datatype|dtype|TYPE_FP32"):
                client.infer("acar", tensors)
        finally:
            client.close()
    logits, scores = infer_pipeline(live.endpoints.http, clips, rois, timeout_s=TIMEOUT_S)
    _check_answer(logits, scores, reference(clips, rois))


def test_concurrent_requests_all_match_and_the_backbone_batches_them(live, reference):
    requests = [_request(seed=100 + i, boxes=1 + i % 3) for i in range(16)]
    before = live.stats("acar_backbone")
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(infer_pipeline, live.endpoints.grpc if i % 2 else live.endpoints.http, clips, rois,
                               TritonProtocol.grpc if i % 2 else TritonProtocol.http, "acar", TIMEOUT_S)
                   for i, (clips, rois) in enumerate(requests)]
        answers = [f.result(timeout=TIMEOUT_S * 2) for f in futures]
    for (clips, rois), (logits, scores) in zip(requests, answers, strict=True):
        _check_answer(logits, scores, reference(clips, rois))
    after = live.stats("acar_backbone")
    assert after["inferences"] - before["inferences"] == 16  # one clip per request
    assert after["executions"] - before["executions"] < 16  # the dynamic batcher merged some


def _servers_on_port(http_port: int) -> list[int]:
    """Pids of tritonserver processes started with this (free, so unique to this test) HTTP port."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if argv and argv[0].endswith(b"tritonserver") and f"--http-port={http_port}".encode() in argv:
            pids.append(int(entry.name))
    return pids


def test_serve_command_is_ready_then_stops_on_ctrl_c(live):
    http, grpc = free_port(), free_port()
    command = [sys.executable, "-m", "acar_deploy.cli.main", "serve", str(live.repository),
               "--http-port", str(http), "--grpc-port", str(grpc), "--ready-timeout", "180"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 200
        while not any("Ctrl-C" in line for line in lines) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(line.startswith("ready: acar READY") for line in lines), (lines, process.poll())
        assert f"  HTTP  127.0.0.1:{http}\n" in lines and f"  gRPC  127.0.0.1:{grpc}\n" in lines
        clips, rois = _request(seed=5)
        logits, _ = infer_pipeline(f"127.0.0.1:{http}", clips, rois, timeout_s=TIMEOUT_S)
        assert logits.shape[0] == len(rois)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
        assert process.wait(timeout=150) == 0  # the command's stop: <= exit timeout + 10 s, then SIGKILL
        assert "server stopped (exit code 0)" in process.stderr.read()
        assert len(_servers_on_port(http)) == 0  # the command's server (its own process group) is gone too
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for pid in _servers_on_port(http):  # only if the command failed to stop its server
            os.killpg(pid, signal.SIGKILL)
    assert _group_gone(process.pid)


def test_without_a_server_the_message_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="run `acar-deploy serve --install`") as info:
        find_runtime(cache_dir=tmp_path / "cache")
    assert "\n" not in str(info.value)


def test_forced_gpu_kind_fails_on_a_cpu_server_with_the_servers_reason(live, tmp_path):
    """The default (KIND_AUTO) repository loaded above; the same graphs forced to KIND_GPU do not."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: KIND_GPU would load")
    export_dir = live.repository.parent / "export"
    repo = build_model_repository(export_dir, tmp_path / "gpu", settings=TritonSettings(kind=InstanceKind.gpu))
    settings = ServeSettings(repo.path, http_port=free_port(), grpc_port=free_port(), ready_timeout_s=120)
    server = TritonServerProcess(settings, live.runtime).start()
    try:
        with pytest.raises(InputError, match="has kind KIND_GPU but no GPUs are available"):
            server.wait_ready()
    finally:
        server.stop(timeout_s=30)
    assert _group_gone(server.process.pid)


def test_killed_server_gives_a_clear_error_and_a_restarted_one_serves(live, reference):
    """Last in the module: it replaces the module's server."""
    clips, rois = _request(seed=6)
    errors: list[Exception] = []
    answered = threading.Event()

    def keep_asking() -> None:
        for _ in range(200):
            try:
                infer_pipeline(live.endpoints.http, clips, rois, timeout_s=10)
                answered.set()
            except InputError as exc:
                errors.append(exc)
                return

    worker = threading.Thread(target=keep_asking, daemon=True)
    worker.start()
    assert answered.wait(timeout=TIMEOUT_S)
    killed = live.process
    killed.kill()
    worker.join(timeout=30)
    assert not worker.is_alive() and len(errors) == 1
    assert str(errors[0]).startswith(f"Triton at {live.endpoints.http}:")
    assert _group_gone(killed.process.pid)

    live.start()
    logits, scores = infer_pipeline(live.endpoints.http, clips, rois, timeout_s=TIMEOUT_S)
    _check_answer(logits, scores, reference(clips, rois))
