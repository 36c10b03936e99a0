"""AVA CSVs as people really save them: byte-order marks, CRLF, huge ids, junk -- one reader path."""

from __future__ import annotations

import json

import pytest

from acar_deploy.data.ava_csv import read_annotations, read_predictions, read_proposals

from .conftest import assert_one_line_error, run_cli

# Two keyframes, three (box, action) pairs; the predictions are exactly the ground truth, so the
# frame-mAP is 1.0 by hand (every class: one detection, correct, ranked first -> AP 1).
GT_ROWS = [
    "vid_a,0902,0.100,0.100,0.500,0.900,1",
    "vid_a,0902,0.100,0.100,0.500,0.900,4",
    "vid_a,0903,0.500,0.200,0.900,0.950,3",
]
PRED_ROWS = [row + ",0.900" for row in GT_ROWS]


def _write(path, rows, *, bom=False, newline="\n"):
    text = newline.join(rows) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _evaluate(gt, pred):
    result = run_cli("evaluate", "--gt", gt, "--pred", pred, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["mAP"]


@pytest.mark.parametrize(
    ("gt_bom", "pred_bom", "newline"),
    [(True, False, "\n"), (False, True, "\n"), (True, True, "\r\n"), (False, False, "\r\n"), (False, False, "\r")],
    ids=["bom-gt", "bom-pred", "bom-both-crlf", "crlf", "cr"],
)
def test_bom_and_line_endings_do_not_lose_rows(tmp_path, gt_bom, pred_bom, newline):
    gt = _write(tmp_path / "gt.csv", GT_ROWS, bom=gt_bom, newline=newline)
    pred = _write(tmp_path / "pred.csv", PRED_ROWS, bom=pred_bom, newline=newline)
    assert _evaluate(gt, pred) == pytest.approx(1.0)
    assert read_annotations(gt).video_id[0] == "vid_a"


def test_bom_on_person_proposals_keeps_the_first_video_id(tmp_path):
    path = _write(tmp_path / "boxes.csv", ["vid_a,0902,0.1,0.1,0.5,0.9,0.95"], bom=True)
    assert list(read_proposals(path).video_id) == ["vid_a"]


def test_bom_on_predictions_keeps_the_first_row(tmp_path):
    path = _write(tmp_path / "pred.csv", PRED_ROWS, bom=True)
    assert list(read_predictions(path).video_id) == ["vid_a"] * 3


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("vid_a,0902,0.1,0.1,0.5,0.9,99999999999999999999", "action_id"),
        ("vid_a,0902,0.1,0.1,0.5,0.9,1,99999999999999999999", "person_id"),
        ("vid_a,0902,0.1,0.1,0.5,0.9,-99999999999999999999", "action_id"),
    ],
    ids=["action-overflow", "person-overflow", "action-underflow"],
)
def test_ids_too_large_for_int64_name_file_and_line(tmp_path, row, field):
    gt = _write(tmp_path / "gt.csv", [GT_ROWS[0], row])
    pred = _write(tmp_path / "pred.csv", PRED_ROWS)
    result = run_cli("evaluate", "--gt", gt, "--pred", pred)
    assert_one_line_error(result, 2, f"{gt}:2", field, "64-bit")


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        (["vid_a,0902,0.1,0.1,0.5"], ":1"),  # 5 columns
        (["vid_a,0902,0.1,0.1,0.5,0.9,1", "vid_a,09x2,0.1,0.1,0.5,0.9,1"], ":2"),  # timestamp not a number
        (["vid_a,0902,0.1,abc,0.5,0.9,1"], ":1"),  # coordinate not a number
        (["vid_a,0902,0.1,0.1,0.5,0.9,one"], ":1"),  # action not an integer
        (["vid_a,0902,0.1,0.1,0.5,nan,1"], ":1"),  # non-finite coordinate
    ],
    ids=["columns", "timestamp", "coordinate", "action", "nan"],
)
def test_malformed_ground_truth_names_file_and_line(tmp_path, rows, fragment):
    gt = _write(tmp_path / "gt.csv", rows, bom=True)  # with a BOM, line numbers stay right
    pred = _write(tmp_path / "pred.csv", PRED_ROWS)
    result = run_cli("evaluate", "--gt", gt, "--pred", pred)
    assert_one_line_error(result, 2, f"{gt}{fragment}")


def test_malformed_predictions_name_file_and_line(tmp_path):
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    pred = _write(tmp_path / "pred.csv", [PRED_ROWS[0], "vid_a,0902,0.1,0.1,0.5,0.9,1,high"])
    result = run_cli("evaluate", "--gt", gt, "--pred", pred)
    assert_one_line_error(result, 2, f"{pred}:2", "score")


def test_not_utf8_names_the_file(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_bytes(b"vid_\xff,0902,0.1,0.1,0.5,0.9,1\n")
    pred = _write(tmp_path / "pred.csv", PRED_ROWS)
    result = run_cli("evaluate", "--gt", gt, "--pred", pred)
    assert_one_line_error(result, 2, str(gt))


def test_missing_prediction_file_names_it(tmp_path):
    gt = _write(tmp_path / "gt.csv", GT_ROWS)
    result = run_cli("evaluate", "--gt", gt, "--pred", tmp_path / "nope.csv")
    assert_one_line_error(result, 2, str(tmp_path / "nope.csv"))


def test_label_map_with_bom_and_crlf_is_read(tmp_path):
    from acar_deploy.data.labelmap import read_labelmap

    path = tmp_path / "labels.pbtxt"
    text = 'item {\r\n  name: "bend/bow (at the waist)"\r\n  id: 1\r\n}\r\nitem {\r\n  name: "crouch"\r\n  id: 3\r\n}\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_labelmap(path).as_dict() == {1: "bend/bow (at the waist)", 3: "crouch"}
