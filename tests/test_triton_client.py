"""Triton client against fake in-process servers (KServe v2 HTTP with binary tensors, and gRPC).

Each fake server answers a bounded number of requests on 127.0.0.1 and stops by itself; it records
what arrived and answers with a fixed score matrix, so the test can check both the request the
client built and how it turned the response into top actions.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.http")
grpc = pytest.importorskip("grpc")

from google.protobuf import json_format  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from acar_deploy.cli.main import app  # noqa: E402
from acar_deploy.errors import InputError  # noqa: E402
from acar_deploy.formats import ExportManifest  # noqa: E402
from acar_deploy.serve.triton import PartSource, TritonSettings, TritonTensor, pipeline_config  # noqa: E402
from acar_deploy.serve.triton_client import TritonProtocol, parse_boxes, request_actions  # noqa: E402

LABEL_MAP = Path(__file__).resolve().parents[1] / "acar_deploy" / "data" / "ava_action_list_v2.1.pbtxt"
CLASSES = [
    {"id": int(i), "name": n} for n, i in re.findall(r'name: "([^"]+)"\s+id: (\d+)', LABEL_MAP.read_text())
]
NORMALIZATION = {"norm_value": 1.0, "mean": [110.6, 103.2, 96.3], "std": [38.8, 37.9, 40.0]}


def _served_config(height: int, width: int) -> dict:
    """The pipeline model's config as `acar-deploy triton` writes it, in Triton's JSON form."""
    c = len(CLASSES)
    backbone = PartSource(
        "backbone", Path("backbone.onnx"), "onnxruntime_onnx", "export",
        (TritonTensor("clips", "float32", (-1, 3, 32, height, width)),), (TritonTensor("context", "float32", (-1, 8, 4, 4)),),
    )
    head = PartSource(
        "head", Path("head.onnx"), "onnxruntime_onnx", "export",
        (TritonTensor("context", "float32", (-1, 8, 4, 4)), TritonTensor("rois", "float32", (-1, 5))),
        (TritonTensor("logits", "float32", (-1, c)),),
    )
    manifest = ExportManifest.from_dict({
        "format": "acar-deploy-export", "format_version": 1, "model_name": "standin", "config": {},
        "classes": CLASSES, "input_size": [height, width], "dynamic_size": False, "normalization": NORMALIZATION,
        "parts": {"fused": {"file": "acar.onnx"}},
    })
    config = pipeline_config({"backbone": backbone, "head": head}, manifest, TritonSettings(), 4)
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def _expected_top(scores: np.ndarray, top: int) -> list[list[tuple[int, str, float]]]:
    rows = []
    for row in scores:
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:top]
        rows.append([(CLASSES[i]["id"], CLASSES[i]["name"], float(row[i])) for i in order])
    return rows


def _as_tuples(results) -> list[list[tuple[int, str, float]]]:
    return [[(a.id, a.name, a.score) for a in r.actions] for r in results]


class FakeKServeHTTP:
    """KServe v2 over HTTP/1.0 for one model: GET config and POST infer with binary tensor data."""

    def __init__(self, config: dict, scores: np.ndarray, requests: int):
        self.received: dict[str, np.ndarray] = {}
        self.paths: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: bytes, headers: dict[str, str]):
                self.send_response(200)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                fake.paths.append(self.path)
                self._send(json.dumps(config).encode(), {"Content-Type": "application/json"})

            def do_POST(self):
                fake.paths.append(self.path)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                json_size = int(self.headers.get("Inference-Header-Content-Length", len(body)))
                header, offset = json.loads(body[:json_size]), json_size
                for tensor in header["inputs"]:
                    assert tensor["datatype"] == "FP32"
                    size = tensor.get("parameters", {}).get("binary_data_size")
                    if size is None:
                        data = np.asarray(tensor["data"], np.float32)
                    else:
                        data = np.frombuffer(body[offset : offset + size], np.float32)
                        offset += size
                    fake.received[tensor["name"]] = data.reshape(tensor["shape"])
                fake.received["requested"] = [o["name"] for o in header.get("outputs", [])]
                answer = scores[: len(fake.received["rois"])].astype(np.float32)
                raw = answer.tobytes()
                reply = json.dumps({"model_name": config["name"], "outputs": [{
                    "name": "scores", "datatype": "FP32", "shape": list(answer.shape),
                    "parameters": {"binary_data_size": len(raw)}}]}).encode()
                self._send(reply + raw, {"Content-Type": "application/octet-stream",
                                         "Inference-Header-Content-Length": str(len(reply))})

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 10
        self.url = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self._serve, args=(requests,), daemon=True)
        self.thread.start()

    def _serve(self, requests: int) -> None:
        with self.server:
            for _ in range(requests):
                self.server.handle_request()

    def join(self) -> None:
        self.thread.join(timeout=15)


@pytest.fixture()
def scores() -> np.ndarray:
    return np.random.default_rng(7).random((4, len(CLASSES)), dtype=np.float32)


def test_http_request_and_top_actions(scores):
    clip = np.random.default_rng(3).standard_normal((1, 3, 32, 16, 16), dtype=np.float32)
    boxes = parse_boxes("0.1,0.2,0.5,0.9; 0.5,0.1,0.95,1")
    server = FakeKServeHTTP(_served_config(16, 16), scores, requests=2)
    results = request_actions(server.url, boxes, clip=clip, protocol=TritonProtocol.http, top=4)
    server.join()

    assert server.paths == ["/v2/models/acar/config", "/v2/models/acar/infer"]
    np.testing.assert_array_equal(server.received["clips"], clip)
    np.testing.assert_array_equal(
        server.received["rois"], np.array([[0, 0.1, 0.2, 0.5, 0.9], [0, 0.5, 0.1, 0.95, 1.0]], np.float32)
    )
    assert server.received["requested"] == ["scores"]
    assert _as_tuples(results) == _expected_top(scores[:2], 4)
    assert [r.box for r in results] == [tuple(np.float32(v).item() for v in b) for b in boxes]


def test_http_zero_boxes(scores):
    clip = np.zeros((1, 3, 32, 16, 16), np.float32)
    server = FakeKServeHTTP(_served_config(16, 16), scores, requests=2)
    results = request_actions(server.url, parse_boxes(""), clip=clip)
    server.join()
    assert results == []
    assert server.received["rois"].shape == (0, 5)


def test_cli_prints_class_names(scores, tmp_path):
    clip_file = tmp_path / "clip.npy"
    np.save(clip_file, np.ones((3, 32, 16, 16), np.float32))  # [3, T, H, W]: the client adds the batch dim
    server = FakeKServeHTTP(_served_config(16, 16), scores, requests=2)
    result = CliRunner().invoke(
        app, ["triton-client", "--url", server.url, "--clip", str(clip_file), "--boxes", "0.2,0.2,0.6,0.8", "--top", "2"]
    )
    server.join()
    assert result.exit_code == 0, result.output
    (best, second), = _expected_top(scores[:1], 2)
    assert result.output.splitlines() == [
        "box 0 [0.200, 0.200, 0.600, 0.800]",
        f"  {best[2]:.3f}  {best[1]} (id {best[0]})",
        f"  {second[2]:.3f}  {second[1]} (id {second[0]})",
    ]
    assert server.received["clips"].shape == (1, 3, 32, 16, 16)


def test_static_size_mismatch_is_caught_before_inference(scores):
    server = FakeKServeHTTP(_served_config(16, 16), scores, requests=1)  # config only
    with pytest.raises(InputError, match=r"does not fit model 'acar' clips \[-1, 3, 32, 16, 16\]"):
        request_actions(server.url, parse_boxes("0,0,1,1"), clip=np.zeros((1, 3, 32, 16, 20), np.float32))
    server.join()
    assert server.paths == ["/v2/models/acar/config"]


def test_unreachable_server_is_one_line_input_error():
    with pytest.raises(InputError, match="Triton at 127.0.0.1:9"):
        request_actions("127.0.0.1:9", parse_boxes("0,0,1,1"), clip=np.zeros((1, 3, 32, 16, 16), np.float32),
                        timeout_s=2)


@pytest.mark.parametrize(
    "text, message",
    [("0.1,0.2,0.5", "four numbers"), ("0.5,0.2,0.1,0.9", "x1 < x2"), ("0,0,1,1.5", "x1 < x2"), ("a,b,c,d", "four")],
)
def test_bad_boxes(text, message):
    with pytest.raises(InputError, match=message):
        parse_boxes(text)


def test_grpc_request_and_top_actions(scores):
    config_dict = _served_config(16, 16)
    received: dict[str, np.ndarray] = {}

    class FakeGRPC(service_pb2_grpc.GRPCInferenceServiceServicer):
        def ModelConfig(self, request, context):
            response = service_pb2.ModelConfigResponse()
            json_format.ParseDict({"config": config_dict}, response)
            return response

        def ModelInfer(self, request, context):
            for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
                received[tensor.name] = np.frombuffer(raw, np.float32).reshape(list(tensor.shape))
            received["requested"] = [o.name for o in request.outputs]
            answer = scores[: len(received["rois"])]
            response = service_pb2.ModelInferResponse(model_name=request.model_name)
            response.outputs.add(name="scores", datatype="FP32", shape=list(answer.shape))
            response.raw_output_contents.append(answer.astype(np.float32).tobytes())
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeGRPC(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        clip = np.random.default_rng(5).standard_normal((1, 3, 32, 16, 16), dtype=np.float32)
        boxes = parse_boxes("0.1,0.1,0.3,0.9;0.3,0.2,0.6,0.9;0.6,0,1,1")
        results = request_actions(f"127.0.0.1:{port}", boxes, clip=clip, protocol=TritonProtocol.grpc, top=3,
                                  timeout_s=10)
    finally:
        server.stop(grace=None)
    np.testing.assert_array_equal(received["clips"], clip)
    np.testing.assert_array_equal(received["rois"][:, 0], np.zeros(3, np.float32))
    np.testing.assert_array_equal(received["rois"][:, 1:], boxes)
    assert received["requested"] == ["scores"]
    assert _as_tuples(results) == _expected_top(scores[:3], 3)


def test_video_clip_uses_the_served_normalisation(scores, tmp_path):
    av = pytest.importorskip("av")
    from acar_deploy.data.clips import ClipSpec, load_clip, open_frames

    video = tmp_path / "tiny.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for _ in range(45):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    server = FakeKServeHTTP(_served_config(24, 32), scores, requests=2)
    request_actions(server.url, parse_boxes("0.1,0.1,0.9,0.9"), video=video, timestamp=0.7)
    server.join()
    spec = ClipSpec(short_side=24, norm_value=1.0, mean=tuple(NORMALIZATION["mean"]), std=tuple(NORMALIZATION["std"]))
    want, _ = load_clip(open_frames(video), 0.7, spec)
    np.testing.assert_allclose(server.received["clips"][0], want, rtol=0, atol=1e-6)
    # Raw pixels / 1.0 minus ~100 over ~39: values far outside the default 0.45/0.225 normalisation's range.
    assert server.received["clips"].min() < -2.0


def test_cli_json_output(scores, tmp_path):
    clip_file = tmp_path / "clip.npy"
    np.save(clip_file, np.ones((1, 3, 32, 16, 16), np.float32))
    server = FakeKServeHTTP(_served_config(16, 16), scores, requests=2)
    result = CliRunner().invoke(app, ["triton-client", "--url", server.url, "--clip", str(clip_file),
                                      "--boxes", "0.2,0.2,0.6,0.8;0,0,1,1", "--format", "json"])
    server.join()
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [[(a["id"], a["name"], a["score"]) for a in row["actions"]] for row in rows] == _expected_top(scores[:2], 3)
    assert rows[1]["box"] == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--boxes", "0,0,1,1"], "pass exactly one of --clip CLIP.npy or --video FILE"),
        (["--boxes", "0,0,1", "--clip", "x.npy"], "--boxes: box 1 ('0,0,1') must be four numbers x1,y1,x2,y2"),
        (["--boxes", "0,0,1,1", "--clip", "missing.npy"], "missing.npy: clip file not found"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, message):
    result = CliRunner().invoke(app, ["triton-client", "--url", "127.0.0.1:9", *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {message}"
