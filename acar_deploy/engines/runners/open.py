"""One entry point that opens any runnable thing: export folder, engine folder or eager model."""

from __future__ import annotations

from pathlib import Path

from acar_deploy.engines.runners.base import Runner, RunnerOptions
from acar_deploy.errors import InputError
from acar_deploy.formats import ENGINE_FILE, EngineRecord, Runtime, folder_kind


def open_runner(source: str | Path, options: RunnerOptions = RunnerOptions()) -> Runner:
    """Open `source` as a runner (not yet activated; use `with open_runner(...) as runner:`).

    - `export/NAME` (manifest.json): fp32 ONNX Runtime on the exported graph(s);
    - `engines/NAME-RUNTIME-PRECISION` (engine.json): the runner its runtime needs;
    - `eager:CHECKPOINT:CONFIG`: eager PyTorch. CONFIG may be empty for this project's checkpoints,
      which carry their config; CHECKPOINT may be empty for a seeded random init (`eager::acar_tiny`).
    """
    text = str(source)
    if text == "eager" or text.startswith("eager:"):
        from acar_deploy.engines.runners.eager import EagerRunner

        _, _, rest = text.partition(":")
        checkpoint, _, config = rest.partition(":")
        if not checkpoint and not config:
            raise InputError("eager runner needs a checkpoint and/or a config: eager:CKPT:CONFIG (e.g. eager::acar_tiny)")
        return EagerRunner.from_checkpoint(checkpoint or None, config or None, options)
    path = Path(source)
    kind = folder_kind(path)
    if kind == "export":
        from acar_deploy.engines.runners.ort import OrtRunner

        return OrtRunner(path, options)
    if kind == "engine":
        runtime = EngineRecord.load(path).runtime
        if runtime == Runtime.ORT:
            from acar_deploy.engines.runners.ort import OrtRunner

            return OrtRunner(path, options)
        if runtime == Runtime.TRT:
            from acar_deploy.engines.runners.trt import TrtRunner

            return TrtRunner(path, options)
        if runtime == Runtime.OPENVINO:
            from acar_deploy.engines.runners.openvino import OpenVinoRunner

            return OpenVinoRunner(path, options)
        raise InputError(f"{path / ENGINE_FILE}: no runner for runtime {runtime.value!r} here; rebuild with `acar-deploy build`")
    if not path.exists():
        raise InputError(f"{path}: does not exist; pass an export folder, an engine folder or eager:CKPT:CONFIG")
    raise InputError(f"{path}: no manifest.json or engine.json inside; pass an export folder or an engine folder")
