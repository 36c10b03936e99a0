"""Send one clip and its person boxes to a Triton server and read back the top actions per box.

Class names, normalisation and the clip shape come from the served model's own config (the
parameters `build_model_repository` wrote), so the client needs nothing but the server's address.
tritonclient is imported lazily: it is the `[triton]` extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.errors import InputError, MissingExtraError


class TritonProtocol(str, Enum):
    http = "http"
    grpc = "grpc"


@dataclass(frozen=True)
class ActionScore:
    id: int
    name: str
    score: float


@dataclass(frozen=True)
class BoxActions:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 normalised to [0, 1]
    actions: tuple[ActionScore, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "actions": [a.__dict__ for a in self.actions]}


@dataclass(frozen=True)
class BankFeeds:
    """One request's bank window for an acfb pipeline: `window` [R, M] bool (box i may attend entry j) and
    either `entries` [M, C, h, w] (the pipeline projects K/V of entries it has not seen) or `keys` +
    `values` [depth, M, C, h, w] as `acar-deploy bank project` stored them (bank_kv is then skipped).
    The server checks the shapes against each other and answers a mismatch with an error."""

    window: np.ndarray
    entries: np.ndarray | None = None
    keys: np.ndarray | None = None
    values: np.ndarray | None = None

    def arrays(self) -> list[tuple[str, np.ndarray, str]]:
        """(input name, array, Triton datatype) of the inputs this request sends."""
        sent = [("bank_window", np.ascontiguousarray(self.window, dtype=np.bool_), "BOOL")]
        for name, array in (("bank_entries", self.entries), ("bank_keys", self.keys), ("bank_values", self.values)):
            if array is not None:
                sent.append((name, np.ascontiguousarray(array, dtype=np.float32), "FP32"))
        return sent


@dataclass(frozen=True)
class ServedModel:
    """What the client reads from the served pipeline model's config."""

    name: str
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    clips_dims: tuple[int, ...]  # [B, 3, T, H, W], -1 where dynamic
    normalization: dict[str, Any] | None
    input_size: tuple[int, int] | None  # (H, W) of the export

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str) -> ServedModel:
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if "class_names" not in params or "class_ids" not in params:
            raise InputError(
                f"{where}: the model has no class_names/class_ids parameters; serve a repository made by "
                "`acar-deploy triton` or pass --model with the pipeline model's name"
            )
        clips = next((t for t in config.get("input", []) if t.get("name") == "clips"), None)
        input_size = json.loads(params.get("input_size") or "null")
        return cls(
            name=str(config.get("name", "")),
            class_ids=tuple(int(i) for i in json.loads(params["class_ids"])),
            class_names=tuple(json.loads(params["class_names"])),
            clips_dims=tuple(int(d) for d in clips.get("dims", [])) if clips else (),
            normalization=json.loads(params.get("normalization") or "null"),
            input_size=tuple(input_size) if input_size else None,
        )


def parse_boxes(text: str) -> np.ndarray:
    """`"x1,y1,x2,y2;..."` (normalised to [0, 1]) -> float32 [R, 4]; an empty string is zero boxes."""
    boxes = []
    for number, item in enumerate(filter(None, (s.strip() for s in text.split(";"))), start=1):
        try:
            values = [float(v) for v in item.split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise InputError(f"--boxes: box {number} ({item!r}) must be four numbers x1,y1,x2,y2")
        x1, y1, x2, y2 = values
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            raise InputError(
                f"--boxes: box {number} ({item!r}) must satisfy 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 "
                "(coordinates normalised by the frame size)"
            )
        boxes.append(values)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def rois_for_one_clip(boxes: np.ndarray) -> np.ndarray:
    """[R, 4] boxes -> [R, 5] rois `(batch_index=0, x1, y1, x2, y2)`."""
    return np.concatenate([np.zeros((len(boxes), 1), np.float32), boxes.astype(np.float32)], axis=1)


def load_clip_file(path: str | Path) -> np.ndarray:
    """A normalised clip saved with numpy: [3, T, H, W] or [1, 3, T, H, W] -> float32 [1, 3, T, H, W]."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: clip file not found")
    try:
        clip = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a .npy array ({exc}); save the clip with numpy.save") from exc
    if clip.ndim == 4:
        clip = clip[None]
    if clip.ndim != 5 or clip.shape[0] != 1 or clip.shape[1] != 3:
        raise InputError(f"{path}: expected a clip [3, T, H, W] or [1, 3, T, H, W], got {list(clip.shape)}")
    return np.ascontiguousarray(clip, dtype=np.float32)


def video_clip(path: str | Path, served: ServedModel, timestamp: float | None = None) -> np.ndarray:
    """The clip around `timestamp` (default: the middle) of a video, normalised as the model expects."""
    from acar_deploy.data.clips import ClipSpec, load_clip, open_frames

    source = open_frames(path)
    overrides: dict[str, Any] = {}
    if served.normalization:
        overrides.update(
            norm_value=float(served.normalization["norm_value"]),
            mean=tuple(float(x) for x in served.normalization["mean"]),
            std=tuple(float(x) for x in served.normalization["std"]),
        )
    if served.input_size:
        overrides["short_side"] = int(min(served.input_size))
    if len(served.clips_dims) == 5 and served.clips_dims[2] > 0:
        overrides["num_frames"] = served.clips_dims[2] * ClipSpec.step
    spec = ClipSpec(**overrides)
    if timestamp is None:
        timestamp = source.frame_count() / spec.fps / 2
    clip, _ = load_clip(source, timestamp, spec)
    return clip[None]


def check_clip_fits(clip: np.ndarray, served: ServedModel, where: str) -> None:
    """A static-size export takes one frame size only; say so before the server does."""
    want = served.clips_dims
    if len(want) != clip.ndim:
        return
    for axis, (have, need) in enumerate(zip(clip.shape, want, strict=True)):
        if axis and need > 0 and have != need:
            raise InputError(
                f"{where}: clip shape {list(clip.shape)} does not fit model '{served.name}' clips "
                f"{list(want)} (-1 = any): resize the clip or re-export with a dynamic frame size"
            )


def client_module(protocol: TritonProtocol):
    try:
        if protocol is TritonProtocol.grpc:
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise MissingExtraError("tritonclient", "triton", "The Triton client") from exc
    return module


def _server_error(url: str, exc: Exception) -> InputError:
    message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    first = (message or type(exc).__name__).strip().splitlines()[0]
    return InputError(f"Triton at {url}: {first} (is the server up with this model? see docs/serving.md)")


def build_inputs(module: Any, clips: np.ndarray, rois: np.ndarray, bank: BankFeeds | None = None) -> list[Any]:
    """tritonclient InferInputs for the pipeline model (`module` is tritonclient.http or .grpc); `bank`
    adds an acfb pipeline's bank_window and bank_entries or bank_keys/bank_values."""
    arrays = [("clips", np.ascontiguousarray(clips, dtype=np.float32), "FP32"),
              ("rois", np.ascontiguousarray(rois, dtype=np.float32), "FP32")]
    if bank is not None:
        arrays += bank.arrays()
    inputs = []
    for name, array, datatype in arrays:
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def top_actions(scores: np.ndarray, boxes: np.ndarray, served: ServedModel, top: int) -> list[BoxActions]:
    """The `top` highest-scoring classes of each box, best first (ties: lower class index first)."""
    if scores.shape != (len(boxes), len(served.class_ids)):
        raise InputError(
            f"model '{served.name}' returned scores {list(scores.shape)} for {len(boxes)} boxes and "
            f"{len(served.class_ids)} classes: the repository does not match its config"
        )
    result = []
    for box, row in zip(boxes, scores, strict=True):
        order = np.argsort(-row, kind="stable")[:top]
        actions = tuple(ActionScore(served.class_ids[i], served.class_names[i], float(row[i])) for i in order)
        result.append(BoxActions(tuple(float(v) for v in box), actions))
    return result


def fetch_served_model(client: Any, protocol: TritonProtocol, model: str, url: str) -> ServedModel:
    try:
        if protocol is TritonProtocol.grpc:
            config = client.get_model_config(model, as_json=True).get("config", {})
        else:
            config = client.get_model_config(model)
    except Exception as exc:  # tritonclient raises InferenceServerException, sockets raise OSError
        raise _server_error(url, exc) from exc
    return ServedModel.from_config(config, f"{url} model '{model}'")


def open_client(url: str, protocol: TritonProtocol, timeout_s: float) -> tuple[Any, Any, dict[str, Any]]:
    """(tritonclient module, client, keyword options for `infer`) with `timeout_s` on every call."""
    module = client_module(protocol)
    if protocol is TritonProtocol.grpc:
        return module, module.InferenceServerClient(url), {"client_timeout": timeout_s}
    client = module.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
    return module, client, {}


def infer_pipeline(
    url: str,
    clips: np.ndarray,
    rois: np.ndarray,
    protocol: TritonProtocol = TritonProtocol.http,
    model: str = "acar",
    timeout_s: float = 60.0,
    bank: BankFeeds | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits and scores [R, C] of the served pipeline for clips [B, 3, T, H, W] and rois [R, 5]
    (and, for an acfb pipeline, the keyframe's bank window)."""
    module, client, infer_options = open_client(url, protocol, timeout_s)
    try:
        outputs = [module.InferRequestedOutput("logits"), module.InferRequestedOutput("scores")]
        try:
            result = client.infer(model, build_inputs(module, clips, rois, bank), outputs=outputs, **infer_options)
        except Exception as exc:  # tritonclient raises InferenceServerException, sockets raise OSError
            raise _server_error(url, exc) from exc
        return result.as_numpy("logits"), result.as_numpy("scores")
    finally:
        client.close()


def request_actions(
    url: str,
    boxes: np.ndarray,
    clip: np.ndarray | None = None,
    video: str | Path | None = None,
    timestamp: float | None = None,
    protocol: TritonProtocol = TritonProtocol.http,
    model: str = "acar",
    top: int = 3,
    timeout_s: float = 60.0,
) -> list[BoxActions]:
    """One inference on the served pipeline model: a clip (array or cut from `video`) and its boxes."""
    if (clip is None) == (video is None):
        raise InputError("pass exactly one of --clip CLIP.npy or --video FILE")
    module, client, infer_options = open_client(url, protocol, timeout_s)
    try:
        served = fetch_served_model(client, protocol, model, url)
        if clip is None:
            clip = video_clip(video, served, timestamp)
        check_clip_fits(clip, served, str(video or "clip"))
        outputs = [module.InferRequestedOutput("scores")]
        try:
            result = client.infer(model, build_inputs(module, clip, rois_for_one_clip(boxes)), outputs=outputs,
                                  **infer_options)
        except Exception as exc:  # as above
            raise _server_error(url, exc) from exc
        scores = result.as_numpy("scores")
        if scores is None:
            raise InputError(f"Triton at {url}: model '{model}' returned no 'scores' output")
        return top_actions(scores, boxes, served, top)
    finally:
        client.close()
