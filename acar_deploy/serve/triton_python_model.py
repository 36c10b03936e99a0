"""ACAR-Net on Triton: the Python-backend model that chains the backbone and head models (BLS).

Copied by acar-deploy into `<repository>/<name>/1/model.py`. It needs only numpy and Triton's
`triton_python_backend_utils`, never acar_deploy, because it runs inside the Triton container.

Why a Python model and not an ensemble: an ensemble always runs every step, but a TensorRT head has
no engine profile for zero boxes (min R >= 1), so a clip without boxes must skip the head (and the
backbone, whose output nobody needs); only Python logic can branch on the box count.

A bank set (acfb export) calls backbone -> bank_kv -> bank_head instead of backbone -> head. Its
requests carry `bank_window` [R, M] and either `bank_entries` (K/V projected here, through
`KeyValueCache`, only for entries this instance has not projected yet) or `bank_keys` + `bank_values`
stored in the bank by `acar-deploy bank project` (bank_kv then does not run).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

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


class KeyValueCache:
    """Bank keys/values per entry, keyed by a 128-bit BLAKE2b digest of the entry's float32 bytes,
    least recently used first out beyond `capacity` entries (a window larger than the capacity is still
    answered whole: eviction happens after the request).

    K/V depend only on an entry and the weights and `bank_kv` projects each entry on its own, so
    a row cached from an earlier call is the row a projection of the whole window would give. Mirrors
    acar_deploy's `BankProjectionCache` (which model.py cannot import), but bounded by count rather
    than by one window, since one instance serves the keyframes of several videos in turn.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rows: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.projected = 0  # entries sent to bank_kv so far

    def __len__(self) -> int:
        return len(self._rows)

    def keys_values(self, entries: np.ndarray, project) -> tuple[np.ndarray, np.ndarray]:
        """keys, values [depth, M, ...] for entries [M, ...]; `project(new_entries)` runs on unseen ones."""
        digests = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in entries]
        new: dict[bytes, int] = {}
        for index, digest in enumerate(digests):
            if digest not in self._rows and digest not in new:
                new[digest] = index
        rows = {d: self._rows[d] for d in digests if d in self._rows}
        if new:
            keys, values = project(entries[list(new.values())])
            count = len(new)
            if keys.shape[1] != count or values.shape[1] != count:
                raise RequestError(f"bank_kv returned K/V for {keys.shape[1]} entries, not {count}")
            self.projected += count
            for position, digest in enumerate(new):
                rows[digest] = (keys[:, position].copy(), values[:, position].copy())
        for digest in digests:  # most recently used last
            self._rows[digest] = rows[digest]
            self._rows.move_to_end(digest)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)
        return (np.stack([rows[d][0] for d in digests], axis=1), np.stack([rows[d][1] for d in digests], axis=1))


def _string_parameters(model_config: dict) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        if pb_utils is None:
            raise RuntimeError("model.py runs inside Triton's Python backend only")
        params = _string_parameters(json.loads(args["model_config"]))
        self.backbone_model = params["backbone_model"]
        self.bank = "bank_head_model" in params
        self.head_model = params["bank_head_model" if self.bank else "head_model"]
        if self.bank:
            self.bank_kv_model = params["bank_kv_model"]
            self.entry_shape = tuple(int(d) for d in json.loads(params["bank_entry_shape"]))
            self.bank_depth = int(params["bank_depth"])
            self.bank_head_min_entries = int(params.get("bank_head_min_entries", "0"))
            self.bank_max_entries = int(params.get("bank_max_entries", "0"))
            self.kv_cache = KeyValueCache(int(params.get("bank_cache_entries", "1024")))
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
        bank = self._bank_inputs(request, rois.shape[0]) if self.bank else None
        if rois.shape[0] == 0:
            empty = np.zeros((0, self.num_classes), dtype=np.float32)
            return empty, empty.copy()
        context = self._call(self.backbone_model, [clips], ["context"], on_cpu=False)[0]
        if bank is None:
            logits = self._call(self.head_model, [context, pb_utils.Tensor("rois", rois)], ["logits"], on_cpu=True)[0]
        else:
            keys, values, window = self._keys_values(*bank)
            inputs = [context, pb_utils.Tensor("rois", rois), pb_utils.Tensor("bank_keys", keys),
                      pb_utils.Tensor("bank_values", values), pb_utils.Tensor("bank_window", window)]
            logits = self._call(self.head_model, inputs, ["logits"], on_cpu=True)[0]
        logits = np.ascontiguousarray(logits.as_numpy(), dtype=np.float32)
        return logits, action_scores(logits, self.num_pose_classes)

    def _bank_inputs(self, request, boxes: int) -> tuple:
        """(window, entries or None, keys or None, values or None), checked against each other."""
        arrays = {}
        for name in ("bank_window", "bank_entries", "bank_keys", "bank_values"):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            arrays[name] = None if tensor is None else tensor.as_numpy()
        window, entries, keys, values = arrays.values()
        stored = keys is not None or values is not None
        if window is None:
            raise RequestError("an acfb (feature-bank) model needs bank_window [R, M] bool with the request")
        if (entries is None) == (not stored):
            raise RequestError("send either bank_entries or bank_keys + bank_values with bank_window, not "
                               f"{'both' if stored else 'neither'}")
        if window.dtype != np.bool_ or window.ndim != 2 or window.shape[0] != boxes:
            raise RequestError(f"bank_window must be bool [R, M] with R = {boxes} boxes, got {window.dtype} "
                               f"{list(window.shape)}")
        count = window.shape[1]
        if self.bank_max_entries and count > self.bank_max_entries:
            raise RequestError(f"{count} bank entries exceed the bank engines' profile max of {self.bank_max_entries} "
                               "entries per call")
        if entries is not None:
            if entries.shape != (count, *self.entry_shape):
                raise RequestError(f"bank_entries must be [M, {', '.join(map(str, self.entry_shape))}] with M = "
                                   f"{count} (bank_window's columns), got {list(entries.shape)}")
            return window, entries, None, None
        if keys is None or values is None:
            raise RequestError("bank_keys and bank_values go together: send both, or bank_entries instead")
        want = (self.bank_depth, count, *self.entry_shape)
        for name, array in (("bank_keys", keys), ("bank_values", values)):
            if array.shape != want:
                raise RequestError(f"{name} must be [depth, M, C, h, w] = {list(want)} (M = bank_window's "
                                   f"columns), got {list(array.shape)}")
        return window, None, keys, values

    def _keys_values(self, window, entries, keys, values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """K/V for the window: stored ones as sent, else from the cache (bank_kv on new entries only).
        M = 0 needs no projection; a bank_head that cannot take M = 0 (TensorRT profiles, OpenVINO)
        gets one all-masked zero entry, which gives every box the same zero message."""
        count = window.shape[1]
        if entries is not None:
            if count == 0:
                keys = np.zeros((self.bank_depth, 0, *self.entry_shape), np.float32)
                values = keys
            else:
                keys, values = self.kv_cache.keys_values(np.ascontiguousarray(entries, np.float32), self._project)
        if count == 0 and self.bank_head_min_entries > 0:
            keys = values = np.zeros((self.bank_depth, 1, *self.entry_shape), np.float32)
            window = np.zeros((window.shape[0], 1), np.bool_)
        return (np.ascontiguousarray(keys, np.float32), np.ascontiguousarray(values, np.float32),
                np.ascontiguousarray(window))

    def _project(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys, values = self._call(self.bank_kv_model, [pb_utils.Tensor("bank_entries", entries)],
                                  ["bank_keys", "bank_values"], on_cpu=True)
        return keys.as_numpy(), values.as_numpy()

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

    def _call(self, model_name: str, inputs: list, output_names: list, on_cpu: bool) -> list:
        """One BLS request; outputs stay where the model produced them unless `on_cpu`."""
        options = {}
        if on_cpu and hasattr(pb_utils, "PreferredMemory"):
            options["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        response = pb_utils.InferenceRequest(
            model_name=model_name, requested_output_names=output_names, inputs=inputs, **options
        ).exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"{model_name}: {response.error().message()}")
        return [pb_utils.get_output_tensor_by_name(response, name) for name in output_names]

    def finalize(self) -> None:
        pass
