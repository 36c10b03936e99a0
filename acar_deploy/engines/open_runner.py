"""One entry point that opens any runnable thing: export folder, engine folder or eager model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acar_deploy.engines.folders import EngineFolder, folder_kind
from acar_deploy.engines.runner import Runner
from acar_deploy.errors import InputError


def open_runner(spec: str | Path, **options: Any) -> Runner:
    """Open `spec` as a runner (not yet activated; use `with open_runner(...) as runner:`).

    - `export/NAME` (manifest.json): fp32 ONNX Runtime on the exported graph(s);
    - `engines/NAME-RUNTIME-PRECISION` (engine.json): the runner its runtime needs;
    - `eager:CHECKPOINT:CONFIG` (or `eager` with `checkpoint=`, `config=` options): eager PyTorch.
      CONFIG may be empty for this project's checkpoints, which carry their config.
    Options go to the runner (e.g. `intra_op_num_threads=2` (OpenVINO: its thread count), `graph="fused"`, `providers=(...)`).
    """
    text = str(spec)
    if text == "eager" or text.startswith("eager:"):
        from acar_deploy.engines.eager import EagerRunner

        _, _, rest = text.partition(":")
        checkpoint, _, config = rest.partition(":")
        checkpoint = checkpoint or options.pop("checkpoint", None)
        config = config or options.pop("config", None)
        if not checkpoint and not config:
            raise InputError("eager runner needs a checkpoint and/or a config: eager:CKPT:CONFIG (e.g. eager::acar_tiny)")
        threads = options.pop("intra_op_num_threads", None) or options.pop("num_threads", None)
        options.pop("inter_op_num_threads", None)
        options.pop("allow_spinning", None)  # ONNX Runtime thread-pool option
        return EagerRunner.from_checkpoint(checkpoint or None, config or None, num_threads=threads, **options)
    path = Path(spec)
    kind = folder_kind(path)
    if kind == "export":
        from acar_deploy.engines.ort import OrtRunner

        return OrtRunner(path, **options)
    if kind == "engine":
        runtime = EngineFolder.load(path).runtime
        if runtime == "ort":
            from acar_deploy.engines.ort import OrtRunner

            return OrtRunner(path, **options)
        if runtime == "trt":
            from acar_deploy.engines.trt import TrtRunner

            return TrtRunner(path, **options)
        if runtime == "openvino":
            from acar_deploy.engines.openvino_runner import OpenVinoRunner

            threads = options.pop("intra_op_num_threads", None)  # the ORT-named option callers pass
            if threads:
                options["num_threads"] = threads
            for ort_only in ("inter_op_num_threads", "allow_spinning", "providers", "graph_optimization_level"):
                options.pop(ort_only, None)
            return OpenVinoRunner(path, **options)
        raise InputError(f"{path / 'engine.json'}: unknown runtime {runtime!r}; rebuild with `acar-deploy build`")
    if not path.exists():
        raise InputError(f"{path}: does not exist; pass an export folder, an engine folder or eager:CKPT:CONFIG")
    raise InputError(f"{path}: no manifest.json or engine.json inside; pass an export folder or an engine folder")
