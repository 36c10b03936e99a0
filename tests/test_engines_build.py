"""`acar-deploy build`: engine folder contents, overwrite rules, and one-line errors (exit 2)."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest
from engine_support import write_npz_calibration
from typer.testing import CliRunner

from acar_deploy.cli.main import app


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def export_dir(tiny_export):
    return tiny_export.export_dir


def test_build_ort_fp32_writes_engine_folder_and_respects_force(export_dir, tmp_path):
    out = tmp_path / "tiny-ort-fp32"
    result = invoke("build", export_dir, "--out", out, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["runtime"] == "ort" and summary["precision"] == "fp32"
    engine = json.loads((out / "engine.json").read_text())
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert (out / "manifest.json").read_bytes() == (export_dir / "manifest.json").read_bytes()
    assert set(engine["parts"]) == set(manifest["parts"]) == {"backbone", "head", "fused"}
    for name, part in engine["parts"].items():
        source = hashlib.sha256((export_dir / manifest["parts"][name]["file"]).read_bytes()).hexdigest()
        assert part["source_sha256"] == source
        assert part["file"] == manifest["parts"][name]["file"]
        assert part["sha256"] == hashlib.sha256((out / part["file"]).read_bytes()).hexdigest()
    assert engine["versions"]["onnxruntime"] and engine["settings"]["precision"] == "fp32"

    again = invoke("build", export_dir, "--out", out)
    assert again.exit_code == 2
    assert len(error_lines(again)) == 1 and "--force" in again.stderr
    assert invoke("build", export_dir, "--out", out, "--force").exit_code == 0


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_without_tensorrt_exits_2_naming_the_extra(export_dir, tmp_path):
    result = invoke("build", export_dir, "--runtime", "trt", "--precision", "fp16", "--out", tmp_path / "e")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "tensorrt" in lines[0] and "acar-deploy[gpu]" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtime", "trt", "--roi-profile", "0:4:8"], "1 <= min"),
        (["--runtime", "trt", "--roi-profile", "1:8"], "MIN:OPT:MAX"),
        (["--precision", "int8", "--calib-data", "MISSING"], "calibration data must be a folder"),
        (["--precision", "int8", "--calib-data", "BADNPZ"], "needs arrays 'clips' and 'rois'"),
        (["--precision", "int8", "--calib-data", "WRONGSIZE"], "does not match the export"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(export_dir, tmp_path, args, message):
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "x.npz", clips=np.zeros((3, 32, 64, 64), np.float32))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    np.savez(wrong / "x.npz", clips=np.zeros((3, 32, 48, 48), np.float32), rois=np.array([[0.1, 0.1, 0.5, 0.5]]))
    args = [{"MISSING": tmp_path / "nope", "BADNPZ": bad, "WRONGSIZE": wrong}.get(a, a) for a in args]
    result = invoke("build", export_dir, "--out", tmp_path / "e", *args)
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], lines
    if args[-1] in (bad, wrong):
        assert "x.npz" in lines[0]


def test_int8_cli_summary_names_calibration(export_dir, tmp_path):
    calib = write_npz_calibration(tmp_path / "calib", 2)
    result = invoke("build", export_dir, "--precision", "int8", "--calib-data", calib, "--calib-clips", 3,
                    "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert "calibration: 3 clips, 5 boxes, minmax" in result.stdout  # 2 files x [2 boxes, 1 box] clips, first 3
