"""Shared, session-scoped artifacts for the bad-input suite: tiny synthetic data, a tiny checkpoint,
one fixed-size split export and its ONNX Runtime fp32 engine.

Every case runs the real CLI (in-process through typer's runner, or as a subprocess for signals)
and checks the promise of docs/errors.md: the exit code, exactly one `error:` line naming the bad
input, no traceback, and existing outputs unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
SIZE_HW = (64, 80)  # the export's fixed frame size


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def run_cli(*args: str) -> CliResult:
    """The real `acar-deploy` app in this process (typer's runner), stdout and stderr apart."""
    from acar_deploy.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    try:
        stderr = result.stderr
    except ValueError:  # older click: stderr mixed into output
        stderr = result.output
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return CliResult(result.exit_code, result.stdout, stderr, exception)


def assert_one_line_error(result: CliResult, exit_code: int, *names: str) -> str:
    """Exit code as promised, one `error:` line naming every given fragment, no traceback."""
    assert result.exception is None, f"uncaught {type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    assert result.exit_code == exit_code, (result.exit_code, result.stderr[-2000:], result.stdout[-500:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, lines
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


def tree_digest(path: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `path` (or of `path` itself); {} when absent."""
    path = Path(path)
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.is_dir():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*")) if p.is_file()
    }


def leftovers(out: Path) -> list[str]:
    """Hidden `.NAME.tmp-*` / `.NAME.old-*` siblings of `out`."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name.startswith(f".{out.name}.tmp-") or p.name.startswith(f".{out.name}.old-"))


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


CLI = [sys.executable, "-m", "acar_deploy"]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """synth data, checkpoint, export, engine -- built once for the whole folder."""
    import torch

    torch.set_num_threads(1)
    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.engines.build import build_engine
    from acar_deploy.engines.settings import BuildSettings
    from acar_deploy.export.exporter import ExportSettings, Parts, export_model
    from acar_deploy.model import load_model, save_checkpoint

    root = tmp_path_factory.mktemp("bad_inputs")
    data = root / "data"
    synthesize(SynthSettings(out_dir=data, videos=4, seconds=3, width=80, height=64))
    config = data / "config.yaml"
    model = load_model(None, str(config), seed=3)
    checkpoint = save_checkpoint(model, root / "tiny.pt")
    export = root / "export" / "tiny"
    export_model(export, checkpoint=checkpoint, settings=ExportSettings(parts=Parts.split, input_size=SIZE_HW,
                                                                         validate=False))
    engine = root / "engines" / "tiny-ort-fp32"
    build_engine(BuildSettings(export_dir=export, out_dir=engine), progress=False)
    return World(root=root, data=data, config=config, checkpoint=checkpoint, export=export, engine=engine)


@dataclass
class World:
    root: Path
    data: Path
    config: Path
    checkpoint: Path
    export: Path
    engine: Path

    def copy(self, what: str, dest: Path) -> Path:
        """A private copy of the export or engine folder to damage."""
        shutil.copytree(getattr(self, what), dest)
        return dest

    @property
    def video(self) -> Path:
        """The val video (synth003.mp4); its boxes are in val_proposals.csv."""
        return self.data / "videos" / "synth003.mp4"

    @property
    def boxes(self) -> Path:
        return self.data / "val_proposals.csv"


def parity_args(engine: Path | str, *rest: str) -> list[str]:
    """`parity ENGINE ...` (the engine is positional, as in bench)."""
    return ["parity", str(engine), *rest]


@dataclass
class BankWorld:
    bank: Path  # the train-split bank of world.checkpoint (fp16), extracted once, never modified
    acfb_config: Path  # the synth config with an acfb head (hidden_dim matches the bank's channels)
    linear_checkpoint: Path  # a checkpoint whose head has no actor-context relation features

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.bank, dest)
        return dest


@pytest.fixture(scope="session")
def bank_world(world):
    """A feature bank, an acfb config and a linear-head checkpoint for the bank/train/detect cases."""
    import dataclasses

    import yaml

    from acar_deploy.bank.extract import ExtractSettings, extract_bank
    from acar_deploy.data.synth import SYNTH_ACFB_HEAD, synth_config_dict
    from acar_deploy.model import load_model, save_checkpoint
    from acar_deploy.model.config import get_config

    bank = world.root / "banks" / "train"
    extract_bank(ExtractSettings(checkpoint=world.checkpoint, data=world.data, out=bank, progress=False))
    acfb = synth_config_dict()
    acfb["name"] = "acfb_tiny_synth"
    acfb["head"].update(SYNTH_ACFB_HEAD)
    acfb_config = world.root / "config_acfb.yaml"
    acfb_config.write_text(yaml.safe_dump(acfb, sort_keys=False))
    config = get_config(str(world.config))
    linear = load_model(None, dataclasses.replace(config, head=dataclasses.replace(config.head, type="linear")), seed=1)
    linear_checkpoint = save_checkpoint(linear, world.root / "linear.pt")
    return BankWorld(bank=bank, acfb_config=acfb_config, linear_checkpoint=linear_checkpoint)


def bank_digest(bank: Path) -> dict[str, tuple[str, str]]:
    """video id -> (features sha256, index sha256) recorded in bank.json, after checking the files match."""
    from acar_deploy.artifacts import sha256_file
    from acar_deploy.formats.bank import FEATURES_NAME, INDEX_NAME, BankManifest, video_dir

    manifest = BankManifest.load(bank)
    for v in manifest.videos:
        folder = video_dir(bank, v.video_id)
        assert sha256_file(folder / FEATURES_NAME) == v.features_sha256, folder
        assert sha256_file(folder / INDEX_NAME) == v.index_sha256, folder
    return {v.video_id: (v.features_sha256, v.index_sha256) for v in manifest.videos}
