"""A stand-in for Triton's `onnxruntime` backend, for the bundled CPU server only.

`acar-deploy serve` copies this file to `<server>/backends/onnxruntime/model.py`. Triton then treats
`onnxruntime` as a Python-based backend, so the repository's unchanged `platform: "onnxruntime_onnx"`
models load on a server that has no official onnxruntime backend (it ships only in NGC containers).
It runs `<model>/<version>/model.onnx` with the CPU onnxruntime wheel of the stub's environment.

What it does not stand in for: GPU execution, the official backend's memory handling and options
(only `intra_op_thread_count` is read), TensorRT/CUDA execution providers. A batched model's requests
are concatenated along dim 0 into one run, as the dynamic batcher intends.
Runs inside Triton's Python backend stub; imports only numpy, onnxruntime and pb_utils.
"""

from __future__ import annotations

import json
import os

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton this file is only copied, never run
    pb_utils = None


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import onnxruntime

        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = onnxruntime.SessionOptions()
        threads = (config.get("parameters", {}).get("intra_op_thread_count") or {}).get("string_value")
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]

    def execute(self, requests: list) -> list:
        if self.batched and len(requests) > 1:
            return self._execute_merged(requests)
        return [self._execute_one(request) for request in requests]

    def _inputs(self, request) -> dict[str, np.ndarray]:
        return {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}

    def _respond(self, outputs: list[np.ndarray]):
        tensors = [pb_utils.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.output_names, outputs, strict=True)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _error(self, exc: Exception):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"onnxruntime: {exc}"))

    def _execute_one(self, request):
        try:
            return self._respond(self.session.run(self.output_names, self._inputs(request)))
        except Exception as exc:  # onnxruntime raises its own exception types; answer, never crash
            return self._error(exc)

    def _execute_merged(self, requests: list) -> list:
        """One run over the dynamic batcher's requests, split back per request along dim 0."""
        feeds = [self._inputs(request) for request in requests]
        sizes = [len(feed[self.input_names[0]]) for feed in feeds]
        try:
            merged = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.input_names}
        except ValueError:  # shapes that differ beyond dim 0: run them one by one
            return [self._execute_one(request) for request in requests]
        try:
            outputs = self.session.run(self.output_names, merged)
        except Exception as exc:  # as above
            return [self._error(exc) for _ in requests]
        bounds = np.cumsum([0, *sizes])
        return [self._respond([o[lo:hi] for o in outputs]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

    def finalize(self) -> None:
        self.session = None
