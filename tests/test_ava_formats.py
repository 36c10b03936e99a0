"""AVA CSV and label-map readers/writers: values, round trips, and one-line errors with file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acar_deploy.data.ava_csv import (
    NO_ACTION,
    NO_PERSON,
    read_annotations,
    read_exclusions,
    read_predictions,
    read_proposals,
    write_annotations,
    write_exclusions,
    write_predictions,
    write_proposals,
)
from acar_deploy.data.labelmap import LabelMap, read_labelmap, write_labelmap
from acar_deploy.errors import InputError


def text_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_annotations_values_and_round_trip(tmp_path):
    src = text_file(
        tmp_path / "gt.csv",
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,1\n"
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,9\n"
        "\n"
        "-5KQ66BBWC4,0903\n",
    )
    ann = read_annotations(src)
    assert ann.video_id.tolist() == ["-5KQ66BBWC4"] * 3
    assert ann.timestamp.tolist() == ["0902", "0902", "0903"]  # kept as written
    np.testing.assert_array_equal(ann.boxes[0], [0.077, 0.151, 0.283, 0.811])
    assert np.isnan(ann.boxes[2]).all()
    assert ann.action_id.tolist() == [80, 9, NO_ACTION]
    assert ann.person_id.tolist() == [1, NO_PERSON, NO_PERSON]
    assert ann.has_box.tolist() == [True, True, False]
    write_annotations(ann, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == src.read_text().replace("\n\n", "\n")


def test_predictions_format_like_acar_net(tmp_path):
    src = text_file(tmp_path / "pred.csv", "vid,902,0.1,0.2,0.3,0.4,12,0.12345\nvid,903,0.1,0.2,0.3,0.4,5\n")
    pred = read_predictions(src)
    assert pred.score.tolist() == [0.12345, 1.0]  # a 7-column row scores 1.0, as in the official reader
    write_predictions(pred, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == (
        "vid,902,0.100,0.200,0.300,0.400,12,0.123\nvid,903,0.100,0.200,0.300,0.400,5,1.000\n"
    )


def test_proposals_both_layouts(tmp_path):
    src = text_file(
        tmp_path / "p.csv",
        "vid,0902,0.1,0.2,0.3,0.4,0.998\nvid,0902,0.5,0.5,0.9,0.9,,0.85\nvid,0903,0,0,1,1,-1,0.5\n",
    )
    props = read_proposals(src)
    assert props.score.tolist() == [0.998, 0.85, 0.5]
    np.testing.assert_array_equal(props.boxes[1], [0.5, 0.5, 0.9, 0.9])
    write_proposals(props, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().splitlines()[1] == "vid,0902,0.500,0.500,0.900,0.900,0.850"


def test_exclusions_round_trip(tmp_path):
    src = text_file(tmp_path / "ex.csv", "a,0902\nb,1798\n")
    ex = read_exclusions(src)
    assert list(zip(ex.video_id.tolist(), ex.timestamp.tolist(), strict=True)) == [
        ("a", "0902"),
        ("b", "1798"),
    ]
    write_exclusions(ex, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == src.read_text()


def test_writers_refuse_to_replace_without_force(tmp_path):
    ex = read_exclusions(text_file(tmp_path / "ex.csv", "a,0902\n"))
    with pytest.raises(InputError, match="--force"):
        write_exclusions(ex, tmp_path / "ex.csv", force=False)


def test_packaged_labelmap():
    labels = read_labelmap()
    assert len(labels.ids) == 60
    assert labels.ids[:3] == (1, 3, 4)
    assert labels.names[:3] == ("bend/bow (at the waist)", "crouch/kneel", "dance")
    assert labels.ids[-1] == 80 and labels.names[-1] == "watch (a person)"


def test_labelmap_round_trip_and_official_variants(tmp_path):
    lm = LabelMap(ids=(3, 1), names=('say "hi"', "stand"))
    write_labelmap(lm, tmp_path / "m.pbtxt")
    assert read_labelmap(tmp_path / "m.pbtxt").ids == (3, 1)
    assert read_labelmap(tmp_path / "m.pbtxt").names == ('say "hi"', "stand")
    # the ActivityNet 2018 list uses label_id and label_type
    variant = text_file(
        tmp_path / "v.pbtxt", 'item {\n  name: "dance"\n  label_id: 4\n  label_type: PERSON_MOVEMENT\n}\n'
    )
    assert read_labelmap(variant).as_dict() == {4: "dance"}


@pytest.mark.parametrize(
    ("reader", "text", "message"),
    [
        (
            read_annotations,
            "v,0902,0.1,0.1,0.2,0.2,1\nv,0902,0.1,0.1,0.2\n",
            ":2: 5 columns, expected 2 or 7 or 8",
        ),
        (
            read_annotations,
            "v,0902,0.1,0.1,0.2,0.2,1\nv,0902,0.1,x,0.2,0.2,1\n",
            ":2: y1 'x' is not a finite number",
        ),
        (read_annotations, "v,0902,0.1,0.1,0.2,0.2,walk\n", ":1: action_id 'walk' is not an integer"),
        (read_annotations, "v,noon,0.1,0.1,0.2,0.2,1\n", ":1: timestamp 'noon' is not a number"),
        (read_annotations, "v,0902,0.5,0.1,0.2,0.2,1\n", ":1: box has x2 < x1"),
        (
            read_predictions,
            "v,0902,0.1,0.1,0.2,0.2,1,0.9\n\nv,0902,0.1,0.1,0.2,0.2,1,high\n",
            ":3: score 'high'",
        ),
        (read_predictions, "v,0902,0.1,0.1,0.2,0.2,1,nan\n", ":1: score 'nan' is not a finite number"),
        (read_predictions, "v,0902,0.1,0.1,0.2,0.2,0,0.5\n", ":1: action_id 0 must be >= 1"),
        (read_proposals, "v,0902,0.1,0.1,0.2,0.2\n", ":1: 6 columns, expected 7 or 8"),
        (read_proposals, "v,0902,0.1,0.1,0.2,0.2,person,0.9\n", ":1: 8-column proposal row"),
        (read_exclusions, "v,0902\nv,0903,1\n", ":2: 3 columns, expected 2"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, reader, text, message):
    path = text_file(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as err:
        reader(path)
    assert str(err.value).startswith(f"{path}{message}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n}\n', ":5: item has no 'id'"),
        ('item {\n  name: "a"\n  id: one\n}\n', ":1: id 'one' is not an integer"),
        ('item {\n  name: "a"\n  id: 1\n', ":1: item block is not closed"),
        ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 1\n}\n', ":5: id 1 appears twice"),
        ("items = [1, 2]\n", ":1: unexpected 'items'"),
    ],
)
def test_malformed_labelmap_names_file_and_line(tmp_path, text, message):
    path = text_file(tmp_path / "bad.pbtxt", text)
    with pytest.raises(InputError) as err:
        read_labelmap(path)
    assert str(err.value).startswith(f"{path}{message}")


def test_missing_files_are_input_errors(tmp_path):
    for reader in (read_annotations, read_predictions, read_proposals, read_exclusions, read_labelmap):
        with pytest.raises(InputError, match="not found"):
            reader(tmp_path / "nope.csv")
