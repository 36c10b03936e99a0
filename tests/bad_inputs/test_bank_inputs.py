"""Bad input to `bank extract`, `bank info`, `train --bank/--val-bank`, `detect --bank` and `synth --temporal`:
exit 2, one line naming the file (and field) or option, nothing written, existing outputs untouched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, bank_digest, leftovers, run_cli, tree_digest


def _extract(world, out, *rest, checkpoint=None, data=None):
    return run_cli("bank", "extract", "--checkpoint", checkpoint or world.checkpoint, "--data", data or world.data,
                   "--out", out, *rest)


def _edit_manifest(bank: Path, edit) -> Path:
    path = bank / "bank.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


# --- bank extract: inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["missing", "text", "truncated"])
def test_extract_with_an_unreadable_checkpoint_names_it(world, tmp_path, bad):
    checkpoint = tmp_path / "bad.pt"
    if bad == "text":
        checkpoint.write_text("not weights\n")
    elif bad == "truncated":
        data = world.checkpoint.read_bytes()
        checkpoint.write_bytes(data[: len(data) // 3])
    out = tmp_path / "bank"
    assert_one_line_error(_extract(world, out, checkpoint=checkpoint), 2, str(checkpoint))
    assert not out.exists() and not (tmp_path / ".bank.partial").exists()


def test_extract_with_a_head_without_relation_features_names_the_checkpoint(world, bank_world, tmp_path):
    out = tmp_path / "bank"
    line = assert_one_line_error(_extract(world, out, checkpoint=bank_world.linear_checkpoint), 2,
                                 str(bank_world.linear_checkpoint), "'linear'")
    assert "acar" in line
    assert not out.exists() and not (tmp_path / ".bank.partial").exists()


def test_extract_from_a_folder_without_dataset_json_names_it(world, tmp_path):
    data = tmp_path / "not_data"
    data.mkdir()
    out = tmp_path / "bank"
    assert_one_line_error(_extract(world, out, data=data), 2, str(data / "dataset.json"))
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--split", "bogus"), ("--precision", "fp8")])
def test_extract_option_out_of_its_choices_names_it(world, tmp_path, option, value):
    out = tmp_path / "bank"
    assert_one_line_error(_extract(world, out, option, value), 2, option, value)
    assert not out.exists()


def test_extract_out_inside_a_file_names_the_file(world, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me\n")
    assert_one_line_error(_extract(world, blocker / "bank"), 2, str(blocker), "is a file")
    assert blocker.read_text() == "keep me\n"


def test_extract_force_onto_a_file_keeps_the_file(world, tmp_path):
    blocker = tmp_path / "bank"
    blocker.write_text("keep me\n")
    assert_one_line_error(_extract(world, blocker, "--force"), 2, str(blocker), "is a file")
    assert blocker.read_text() == "keep me\n" and not (tmp_path / ".bank.partial").exists()


def test_extract_onto_an_existing_bank_without_force_leaves_it(world, bank_world, tmp_path):
    out = bank_world.copy(tmp_path / "bank")
    before = tree_digest(out)
    assert_one_line_error(_extract(world, out), 2, str(out), "--force")
    assert tree_digest(out) == before


@pytest.mark.parametrize(("option", "value", "field"), [("--precision", "fp32", "precision"), ("--split", "val", "split")])
def test_resume_of_another_extraction_names_the_field(world, bank_world, tmp_path, option, value, field):
    out = tmp_path / "bank"
    staging = bank_world.copy(tmp_path / ".bank.partial")  # an interrupted fp16 train-split extraction
    before = tree_digest(staging)
    assert_one_line_error(_extract(world, out, option, value, "--resume"), 2, str(staging / "bank.json"),
                          f"'{field}'", "--force")
    assert tree_digest(staging) == before and not out.exists()


def test_resume_with_another_checkpoint_names_the_source_field(world, bank_world, tmp_path):
    from acar_deploy.model import load_model, save_checkpoint

    other = save_checkpoint(load_model(None, str(world.config), seed=11), tmp_path / "other.pt")
    out = tmp_path / "bank"
    staging = bank_world.copy(tmp_path / ".bank.partial")
    before = tree_digest(staging)
    assert_one_line_error(_extract(world, out, "--resume", checkpoint=other), 2, str(staging / "bank.json"),
                          "'source.checkpoint", "--force")
    assert tree_digest(staging) == before and not out.exists()


def test_an_interrupted_extraction_needs_resume_or_force(world, bank_world, tmp_path):
    out = tmp_path / "bank"
    staging = bank_world.copy(tmp_path / ".bank.partial")
    before = tree_digest(staging)
    assert_one_line_error(_extract(world, out), 2, str(staging), "--resume", "--force")
    assert tree_digest(staging) == before and not out.exists()


def test_a_bank_left_between_the_two_renames_is_put_back(world, bank_world, tmp_path):
    """A run killed after moving the old bank aside and before moving the new one in: the next run restores it."""
    pid = subprocess.Popen(["true"])  # a pid that is certainly gone once waited for
    pid.wait()
    out = tmp_path / "bank"
    bank_world.copy(tmp_path / f".bank.old-{pid.pid}")
    assert_one_line_error(_extract(world, out), 2, str(out), "--force")
    assert bank_digest(out) == bank_digest(bank_world.bank) and leftovers(out) == []


# --- bank info / the format owner -----------------------------------------------------------------


def _drop(key):
    return lambda d: d.pop(key)


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


@pytest.mark.parametrize(("edit", "field"), [
    (_drop("split"), "split"),
    (_drop("videos"), "videos"),
    (_set("feature_shape", "16x2x3"), "feature_shape"),
    (_set("precision", "fp8"), "precision"),
    (_set("format", "acar-deploy-export"), "format"),
    (lambda d: d["videos"][1].pop("features_sha256"), "videos[1]"),
    (lambda d: d["videos"][0].__setitem__("video_id", "../../elsewhere"), "videos[0].video_id"),
], ids=["no-split", "no-videos", "shape-text", "precision-fp8", "not-a-bank", "video-incomplete", "video-escapes"])
def test_bank_info_on_a_damaged_manifest_names_file_and_field(bank_world, tmp_path, edit, field):
    bank = bank_world.copy(tmp_path / "bank")
    path = _edit_manifest(bank, edit)
    assert_one_line_error(run_cli("bank", "info", bank), 2, str(path), f"'{field}'")


def test_bank_info_on_a_truncated_manifest_names_it(bank_world, tmp_path):
    bank = bank_world.copy(tmp_path / "bank")
    text = (bank / "bank.json").read_text()
    (bank / "bank.json").write_text(text[: len(text) // 2])
    assert_one_line_error(run_cli("bank", "info", bank), 2, str(bank / "bank.json"))


@pytest.mark.parametrize("name", ["features.npy", "index.npy"])
def test_bank_info_on_a_truncated_array_names_the_file(bank_world, tmp_path, name):
    bank = bank_world.copy(tmp_path / "bank")
    array = bank / "videos" / "synth001" / name
    data = array.read_bytes()
    array.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("bank", "info", bank), 2, str(array))


def test_bank_info_on_a_folder_that_is_no_bank(tmp_path):
    assert_one_line_error(run_cli("bank", "info", tmp_path), 2, str(tmp_path / "bank.json"))


# --- train --bank / --val-bank -------------------------------------------------------------------------


def _train(world, config, out, *rest):
    return run_cli("train", "--config", config, "--data", world.data, "--out", out, "--epochs", "1", "--workers", "0",
                   *rest)


def test_train_with_a_truncated_bank_array_fails_before_writing(world, bank_world, tmp_path):
    bank = bank_world.copy(tmp_path / "bank")
    array = bank / "videos" / "synth002" / "features.npy"
    array.write_bytes(array.read_bytes()[:200])
    out = tmp_path / "run"
    assert_one_line_error(_train(world, bank_world.acfb_config, out, "--bank", bank, "--no-val"), 2, str(array))
    assert not out.exists()  # checked when the bank is opened, not by the first batch that reads it


def test_train_with_a_bank_missing_a_field_names_it(world, bank_world, tmp_path):
    bank = bank_world.copy(tmp_path / "bank")
    path = _edit_manifest(bank, _drop("precision"))
    out = tmp_path / "run"
    assert_one_line_error(_train(world, bank_world.acfb_config, out, "--bank", bank, "--no-val"), 2, str(path),
                          "'precision'")
    assert not out.exists()


def test_train_bank_with_a_config_that_is_not_acfb_names_the_option(world, bank_world, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(_train(world, world.config, out, "--bank", bank_world.bank, "--no-val"), 2, "--bank", "acfb")
    assert not out.exists()


def test_acfb_config_without_bank_names_the_option(world, bank_world, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(_train(world, bank_world.acfb_config, out, "--no-val"), 2, "--bank")
    assert not out.exists()


def test_acfb_validation_without_val_bank_names_the_option(world, bank_world, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(_train(world, bank_world.acfb_config, out, "--bank", bank_world.bank), 2, "--val-bank",
                          "--no-val")
    assert not out.exists()


def test_val_bank_of_the_train_split_names_the_field(world, bank_world, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(_train(world, bank_world.acfb_config, out, "--bank", bank_world.bank, "--val-bank",
                                 bank_world.bank), 2, str(bank_world.bank / "bank.json"), "'split'")
    assert not out.exists()


def test_train_force_with_a_bad_bank_keeps_the_old_run(world, bank_world, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt_1.pt").write_bytes(world.checkpoint.read_bytes())
    before = tree_digest(out)
    result = _train(world, bank_world.acfb_config, out, "--bank", tmp_path / "nowhere", "--no-val", "--force")
    assert_one_line_error(result, 2, str(tmp_path / "nowhere" / "bank.json"))
    assert tree_digest(out) == before and leftovers(out) == []


# --- detect --bank ----------------------------------------------------------------------------------


def _detect(world, out, *rest):
    return run_cli("detect", "--checkpoint", world.checkpoint, "--video", world.video, "--boxes", world.boxes,
                   "--out", out, *rest)


def test_detect_with_a_bank_lacking_the_video_names_bank_and_video(world, bank_world, tmp_path):
    out = tmp_path / "pred.csv"
    result = _detect(world, out, "--config", bank_world.acfb_config, "--bank", bank_world.bank)
    assert_one_line_error(result, 2, str(bank_world.bank), "synth003")  # the bank holds the train videos only
    assert not out.exists() and leftovers(out) == []


def test_detect_bank_with_a_model_that_is_not_acfb_names_the_bank(world, bank_world, tmp_path):
    out = tmp_path / "pred.csv"
    assert_one_line_error(_detect(world, out, "--bank", bank_world.bank), 2, str(bank_world.bank), "acfb")
    assert not out.exists()


def test_detect_acfb_without_bank_names_the_option(world, bank_world, tmp_path):
    out = tmp_path / "pred.csv"
    assert_one_line_error(_detect(world, out, "--config", bank_world.acfb_config), 2, "--bank")
    assert not out.exists()


# --- synth --temporal ---------------------------------------------------------------------------------


def test_synth_temporal_with_too_short_videos_names_the_option(tmp_path):
    out = tmp_path / "data"
    assert_one_line_error(run_cli("synth", out, "--temporal", "--video-seconds", "4", "--videos", "2"), 2,
                          "--video-seconds 4", "--temporal")
    assert not out.exists() and leftovers(out) == []


def test_synth_temporal_force_with_too_short_videos_keeps_the_old_dataset(world, tmp_path):
    out = tmp_path / "data"
    (out / "videos").mkdir(parents=True)
    (out / "dataset.json").write_text("{}\n")
    before = tree_digest(out)
    assert_one_line_error(run_cli("synth", out, "--temporal", "--video-seconds", "4", "--force"), 2, "--video-seconds")
    assert tree_digest(out) == before
