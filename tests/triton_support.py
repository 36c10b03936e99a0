"""What the Triton tests share: parsing config.pbtxt, the graphs' and configs' tensors, and a fake
`triton_python_backend_utils` whose BLS requests run the repository's own ONNX models in onnxruntime,
so that the Python (BLS) model can be imported and run on CPU without a server."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

# Triton's own names for ONNX element types, written out independently of the library's table.
ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64",
                  onnx.TensorProto.BOOL: "TYPE_BOOL"}


def parse_config(model_dir: Path):
    config = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), config)
    return config


def graph_io(path: Path) -> dict[str, tuple[str, list[int]]]:
    """name -> (Triton type, dims with -1 for symbolic dims), read straight from the ONNX file."""
    graph = onnx.load(str(path)).graph
    result = {}
    for value in list(graph.input) + list(graph.output):
        t = value.type.tensor_type
        result[value.name] = (ONNX_TO_TRITON[t.elem_type], [d.dim_value if d.dim_param == "" else -1 for d in t.shape.dim])
    return result


def config_io(config) -> dict[str, tuple[str, list[int]]]:
    """name -> (type, full dims): Triton prepends a -1 batch dim when max_batch_size > 0."""
    batch = [-1] if config.max_batch_size > 0 else []
    return {
        t.name: (model_config_pb2.DataType.Name(t.data_type), batch + list(t.dims))
        for t in list(config.input) + list(config.output)
    }


def fake_pb_utils(repository: Path, calls: list) -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")
    sessions: dict[str, ort.InferenceSession] = {}

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

        def shape(self):
            return list(self._array.shape)

        def is_cpu(self):
            return True

    class TritonError:
        def __init__(self, message):
            self._message = message

        def message(self):
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self._outputs, self._error = output_tensors, error

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

        def output_tensors(self):
            return self._outputs

    class InferenceRequest:
        def __init__(self, model_name="", requested_output_names=(), inputs=(), preferred_memory=None):
            self.model_name, self.outputs, self.inputs = model_name, list(requested_output_names), list(inputs)
            self.preferred_memory = preferred_memory

        def exec(self):
            calls.append(self)
            if self.model_name not in sessions:
                sessions[self.model_name] = ort.InferenceSession(str(repository / self.model_name / "1" / "model.onnx"))
            try:
                values = sessions[self.model_name].run(self.outputs, {t.name(): t.as_numpy() for t in self.inputs})
            except Exception as exc:  # what Triton reports as an error response
                return InferenceResponse([], TritonError(str(exc)))
            return InferenceResponse([Tensor(n, v) for n, v in zip(self.outputs, values, strict=True)])

    class TritonModelException(Exception):
        pass

    def by_name(tensors, name):
        return next((t for t in tensors if t.name() == name), None)

    pb.Tensor, pb.TritonError, pb.InferenceResponse, pb.InferenceRequest = Tensor, TritonError, InferenceResponse, InferenceRequest
    pb.TritonModelException = TritonModelException
    pb.PreferredMemory = lambda kind, device: ("memory", kind, device)
    pb.TRITONSERVER_MEMORY_CPU, pb.TRITONSERVER_MEMORY_GPU = 0, 2
    pb.get_input_tensor_by_name = lambda request, name: by_name(request.inputs, name)
    pb.get_output_tensor_by_name = lambda response, name: by_name(response.output_tensors(), name)
    return pb


def load_pipeline_model(repository: Path, monkeypatch: Any, module_name: str) -> tuple[Any, Any, list, dict]:
    """Import `repository/acar/1/model.py` under a fake pb_utils: (module, pb_utils, BLS calls, config dict)."""
    calls: list = []
    pb = fake_pb_utils(repository, calls)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location(module_name, repository / "acar" / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = json_format.MessageToDict(parse_config(repository / "acar"), preserving_proto_field_name=True)
    return module, pb, calls, config
