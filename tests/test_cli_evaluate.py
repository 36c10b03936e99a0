"""`acar-deploy evaluate`: JSON and text output on a hand-computed case, and exit code 2 on bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from acar_deploy.cli.main import app

runner = CliRunner()

GT = "v,0902,0.1,0.1,0.5,0.5,1\nv,0902,0.6,0.6,0.9,0.9,1\nv,0902,0.6,0.6,0.9,0.9,80\nv,0903\n"
# class 1: FP .9 (0903 is annotated, no class-1 box), TP .8, TP .7 -> p 0, 1/2, 2/3 -> AP = 2/3
# class 80: one TP -> AP 1; mAP = (2/3 + 1) / 2 = 5/6
PRED = (
    "v,0903,0.1,0.1,0.5,0.5,1,0.9\n"
    "v,0902,0.1,0.1,0.5,0.5,1,0.8\n"
    "v,0902,0.6,0.6,0.9,0.9,1,0.7\n"
    "v,0902,0.6,0.6,0.9,0.9,80,0.6\n"
)


def files(tmp_path: Path, gt: str = GT, pred: str = PRED) -> list[str]:
    (tmp_path / "gt.csv").write_text(gt)
    (tmp_path / "pred.csv").write_text(pred)
    return ["evaluate", "--gt", str(tmp_path / "gt.csv"), "--pred", str(tmp_path / "pred.csv")]


def test_json_output(tmp_path):
    result = runner.invoke(app, files(tmp_path) + ["--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"mAP", "per_class"}
    assert data["mAP"] == pytest.approx(5 / 6)
    assert data["per_class"]["1"] == pytest.approx(2 / 3)
    assert data["per_class"]["80"] == pytest.approx(1.0)
    assert data["per_class"]["3"] is None
    assert len(data["per_class"]) == 60


def test_2019_protocol_with_exclusions(tmp_path):
    gt = GT.replace("v,0903\n", "")
    (tmp_path / "ex.csv").write_text("v,0903\n")
    args = files(tmp_path, gt=gt) + ["--protocol", "2019", "--format", "json"]
    # without exclusions the 0903 detection is a FP on a keyframe without ground truth (2019 counts it)
    assert json.loads(runner.invoke(app, args).stdout)["mAP"] == pytest.approx(5 / 6)
    # excluded, it is dropped: class 1 = two TPs -> AP 1, mAP 1
    excluded = runner.invoke(app, args + ["--exclusions", str(tmp_path / "ex.csv")])
    assert json.loads(excluded.stdout)["mAP"] == pytest.approx(1.0)


def test_text_output_names_classes(tmp_path):
    result = runner.invoke(app, files(tmp_path), env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "bend/bow (at the waist)" in result.stdout
    assert "0.6667" in result.stdout
    assert "mAP = 0.8333 over 2 classes with ground truth" in result.stdout


@pytest.mark.parametrize(
    ("which", "text", "expected"),
    [
        ("gt", "v,0902,0.1,0.1,0.5\n", "gt.csv:1: 5 columns"),
        (
            "pred",
            "v,0902,0.1,0.1,0.5,0.5,1,0.9\nv,0902,0.1,0.1,0.5,0.5,one,0.9\n",
            "pred.csv:2: action_id 'one' is not an integer",
        ),
        ("labelmap", 'item {\n  name: "a"\n}\n', "map.pbtxt:1: item has no 'id'"),
        ("exclusions", "v\n", "ex.csv:1: 1 columns, expected 2"),
    ],
)
def test_malformed_files_exit_2_with_file_and_line(tmp_path, which, text, expected):
    args = files(tmp_path)
    if which in ("gt", "pred"):
        (tmp_path / f"{which}.csv").write_text(text)
    elif which == "labelmap":
        (tmp_path / "map.pbtxt").write_text(text)
        args += ["--labelmap", str(tmp_path / "map.pbtxt")]
    else:
        (tmp_path / "ex.csv").write_text(text)
        args += ["--exclusions", str(tmp_path / "ex.csv"), "--protocol", "2019"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_2019_rejects_two_column_rows(tmp_path):
    result = runner.invoke(app, files(tmp_path) + ["--protocol", "2019"])
    assert result.exit_code == 2
    assert "use --protocol head" in result.stderr


def test_cli_evaluate_does_not_import_torch(tmp_path):
    args = files(tmp_path) + ["--format", "json"]
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom acar_deploy.cli.main import app\n"
        f"r = CliRunner().invoke(app, {args!r})\nassert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'evaluate imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
