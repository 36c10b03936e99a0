"""ACAR-Net on Triton: the Python-backend model that chains the backbone and head models (BLS).

Copied by acar-deploy into `<repository>/<name>/1/model.py`. It needs only numpy and Triton's
`triton_python_backend_utils`, never acar_deploy, because it runs inside the Triton container.

Why a Python model and not an ensemble: an ensemble always runs every step, but a TensorRT head has
no engine profile for zero boxes (min R >= 1), so a clip without boxes must skip the head (and the
backbone, whose output nobody needs); only Python logic can branch on the box count.
"""

from __future__ import annotations

import json

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton this file is only read (and copied), never run
    pb_utils = None


class RequestError(ValueError):
    """A request whose clips/rois cannot be run; answered with an error response, not a crash."""


def action_scores(logits: np.ndarray, num_pose_classes: int) -> np.ndarray:
    """Softmax over the pose classes, sigmoid over the rest: AVA's pose classes are exclusive."""
    logits = logits.astype(np.float64)
    pose = logits[:, :num_pose_classes]
    pose = np.exp(pose - pose.max(axis=1, keepdims=True)) if pose.size else pose
    pose = pose / pose.sum(axis=1, keepdims=True) if pose.size else pose
    others = np.exp(-np.logaddexp(0.0, -logits[:, num_pose_classes:]))
    return np.clip(np.concatenate([pose, others], axis=1), 0.0, 1.0).astype(np.float32)


def _string_parameters(model_config: dict) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        if pb_utils is None:
            raise RuntimeError("model.py runs inside Triton's Python backend only")
        params = _string_parameters(json.loads(args["model_config"]))
        self.backbone_model = params["backbone_model"]
        self.head_model = params["head_model"]
        self.num_classes = int(params["num_classes"])
        self.num_pose_classes = int(params["num_pose_classes"])
        self.backbone_max_batch = int(params.get("backbone_max_batch", "0"))
        self.head_max_rois = int(params.get("head_max_rois", "0"))  # a TensorRT head's profile max R

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                logits, scores = self._run(request)
            except (RequestError, pb_utils.TritonModelException) as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("logits", logits), pb_utils.Tensor("scores", scores)]
                )
            )
        return responses

    def _run(self, request) -> tuple[np.ndarray, np.ndarray]:
        clips = pb_utils.get_input_tensor_by_name(request, "clips")
        rois = pb_utils.get_input_tensor_by_name(request, "rois").as_numpy()
        batch = clips.shape()[0]
        self._check(rois, batch)
        if rois.shape[0] == 0:
            empty = np.zeros((0, self.num_classes), dtype=np.float32)
            return empty, empty.copy()
        context = self._call(self.backbone_model, [clips], "context", on_cpu=False)
        logits = self._call(self.head_model, [context, pb_utils.Tensor("rois", rois)], "logits", on_cpu=True)
        logits = np.ascontiguousarray(logits.as_numpy(), dtype=np.float32)
        return logits, action_scores(logits, self.num_pose_classes)

    def _check(self, rois: np.ndarray, batch: int) -> None:
        if rois.ndim != 2 or rois.shape[1] != 5:
            raise RequestError(f"rois must be [R, 5] (batch_index, x1, y1, x2, y2), got {list(rois.shape)}")
        if self.backbone_max_batch and batch > self.backbone_max_batch:
            raise RequestError(f"clips batch {batch} exceeds the backbone's max_batch_size {self.backbone_max_batch}")
        if self.head_max_rois and rois.shape[0] > self.head_max_rois:
            raise RequestError(
                f"{rois.shape[0]} boxes exceed the head engine's profile max of {self.head_max_rois} boxes per call"
            )
        index = rois[:, 0]
        if rois.shape[0] and (np.any(index != np.round(index)) or index.min() < 0 or index.max() >= batch):
            raise RequestError(f"rois[:, 0] must be clip indices in [0, {batch}), got {sorted(set(index.tolist()))}")

    def _call(self, model_name: str, inputs: list, output_name: str, on_cpu: bool):
        """One BLS request; outputs stay where the model produced them unless `on_cpu`."""
        options = {}
        if on_cpu and hasattr(pb_utils, "PreferredMemory"):
            options["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        response = pb_utils.InferenceRequest(
            model_name=model_name, requested_output_names=[output_name], inputs=inputs, **options
        ).exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"{model_name}: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, output_name)

    def finalize(self) -> None:
        pass
