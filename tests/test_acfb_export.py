"""acfb export and deploy: bank_kv + bank_head in ONNX Runtime = the eager ACFB head (K/V precomputed
per entry = on the fly), the ORT runner's per-entry K/V cache, parity with a bank, refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml

from acar_deploy.errors import InputError


@pytest.fixture(scope="module")
def acfb_export(tmp_path_factory):
    """Synthetic temporal data, a no-bank model's val bank, a random acfb model and its ORT export."""
    from acar_deploy.bank.extract import ExtractSettings, extract_bank
    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.export.exporter import ExportSettings, export_model
    from acar_deploy.model.acar import ACARModel
    from acar_deploy.model.checkpoint import save_checkpoint
    from acar_deploy.model.config import ModelConfig

    root = tmp_path_factory.mktemp("acfbexport")
    data = synthesize(SynthSettings(root / "data", videos=3, seconds=5, seed=2, width=64, height=48,
                                    temporal=True)).out_dir
    models = {}
    for name in ("config", "config_acfb"):
        cfg = yaml.safe_load((data / f"{name}.yaml").read_text())
        cfg["input"]["short_side"] = 48
        torch.manual_seed(0)
        models[name] = ACARModel(ModelConfig.from_dict({k: v for k, v in cfg.items() if k != "train"})).eval()
    nobank = save_checkpoint(models["config"], root / "nobank.pt")
    bank = extract_bank(ExtractSettings(checkpoint=nobank, data=data, out=root / "bank_val", split="val",
                                        progress=False)).out
    acfb = models["config_acfb"]
    with torch.no_grad():  # weights away from torch's init, so that the bank's messages move the logits
        for layer in acfb.head.hr2o:
            layer.conv.weight.mul_(20.0)
    ckpt = save_checkpoint(acfb, root / "acfb.pt")
    export_model(root / "export", ckpt, None, ExportSettings(input_size=(48, 64), validate=False))
    return root, data, bank, acfb, ckpt, root / "export"


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_manifest_lists_bank_parts_with_the_banks_shape(acfb_export):
    from acar_deploy.formats import ExportManifest
    from acar_deploy.formats.bank import BankManifest

    _, _, bank, acfb, _, export = acfb_export
    manifest = ExportManifest.load(export)
    assert sorted(manifest.parts) == ["backbone", "bank_head", "bank_kv"]
    geometry = manifest.geometry().bank
    # the formula for the first-order map size = what extraction really stored
    assert (geometry.channels, *geometry.size) == tuple(BankManifest.load(bank).feature_shape)
    assert geometry.depth == acfb.config.head.depth
    assert manifest.parts["bank_head"].shape_of("bank_window") == ["R", "M"]


def test_validate_export_checks_the_bank_parts_against_eager(acfb_export):
    from acar_deploy.export.validate import ValidationSettings, render_table, validate_export

    export = acfb_export[-1]
    report = validate_export(export, settings=ValidationSettings(rois=(3,), batches=(2,), entries=(0, 5)))
    cases = {(r.part, r.output, r.M) for r in report.rows}
    assert {("bank_head", "logits", 0), ("bank_head", "logits", 5), ("bank_kv", "bank_values", 5)} <= cases
    assert report.ok and all(r.max_abs <= 1e-4 for r in report.rows)
    assert render_table(report).row_count == len(report.rows)


@pytest.mark.parametrize("entries", [0, 1, 6])
def test_onnx_bank_parts_equal_eager_acfb_head(acfb_export, entries):
    """ORT: K/V precomputed by bank_kv, then bank_head = eager ACFBHead.forward (K/V on the fly)."""
    from acar_deploy.export.specs import make_spec
    from acar_deploy.formats import ExportManifest

    _, _, _, acfb, _, export = acfb_export
    manifest = ExportManifest.load(export)
    spec = make_spec("bank_head", manifest.geometry())
    rng = np.random.default_rng(entries)
    feeds = spec.example_inputs(rng, 2, 5, entries=entries)  # clip 1 has no entry: its boxes see none
    entries_np = make_spec("bank_kv", manifest.geometry()).example_inputs(rng, 1, 1, entries=entries)["bank_entries"]
    keys, values = _session(export / "bank_kv.onnx").run(None, {"bank_entries": entries_np})
    with torch.no_grad():
        ref_keys, ref_values = acfb.head.project_bank(torch.from_numpy(entries_np))
        expected = acfb.head(torch.from_numpy(feeds["context"]), torch.from_numpy(feeds["rois"].copy()),
                             torch.from_numpy(entries_np), torch.from_numpy(feeds["bank_window"])).numpy()
        no_bank = acfb.head(torch.from_numpy(feeds["context"]), torch.from_numpy(feeds["rois"].copy()),
                            torch.zeros(0, *entries_np.shape[1:]), torch.zeros(5, 0, dtype=torch.bool)).numpy()
    np.testing.assert_allclose(keys, ref_keys.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(values, ref_values.numpy(), atol=1e-5, rtol=1e-4)
    feeds.update(bank_keys=keys, bank_values=values)
    (logits,) = _session(export / "bank.onnx").run(None, feeds)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    sees = feeds["bank_window"].any(1)
    if sees.any():  # the bank changes the logits of boxes that see entries, not of the others
        assert np.abs(expected[sees] - no_bank[sees]).max() > 1e-3
    np.testing.assert_allclose(expected[~sees], no_bank[~sees], atol=1e-6)


def test_ort_runner_projects_each_entry_once_per_window(acfb_export):
    """Two keyframes whose windows overlap: K/V of the shared entries are reused, logits = eager."""
    from acar_deploy.engines.runners.eager import EagerRunner
    from acar_deploy.engines.runners.ort import OrtRunner
    from acar_deploy.export.specs import make_spec, random_bank_entries, random_rois
    from acar_deploy.formats import ExportManifest

    _, _, _, acfb, _, export = acfb_export
    geometry = ExportManifest.load(export).geometry()
    rng = np.random.default_rng(7)
    clips = make_spec("backbone", geometry).example_inputs(rng, 1, 1)["clips"]
    bank = random_bank_entries(rng, 8, (geometry.bank.channels, *geometry.bank.size))
    rois = random_rois(rng, 3, 1)
    with OrtRunner(export) as ort_runner, EagerRunner(acfb) as eager:
        assert ort_runner.supports_bank and not ort_runner.supports_head_only
        for lo, hi in ((0, 6), (2, 8)):
            feeds = {"clips": clips, "rois": rois, "bank_entries": bank[lo:hi],
                     "bank_window": np.ones((3, hi - lo), bool)}
            got, want = ort_runner.infer(feeds), eager.infer(feeds)
            np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-4, rtol=1e-4)
        assert ort_runner.bank_cache.projected == 8  # not 12: entries 2..5 were projected once
        with pytest.raises(InputError, match="bank_window"):
            ort_runner.infer({**feeds, "bank_window": np.ones((2, 6), bool)})
        with pytest.raises(InputError, match="bank window"):
            ort_runner.infer({"clips": clips, "rois": rois})


def test_parity_with_bank_ort_equals_eager(acfb_export, tmp_path):
    from acar_deploy.verify.parity import ParitySettings, check_parity

    root, data, bank, _, ckpt, export = acfb_export
    settings = ParitySettings(engine=str(export), data=data, checkpoint=ckpt, bank=bank, threads=1,
                              out=tmp_path / "parity", atol=1e-4, rtol=1e-4)
    report = check_parity(settings, progress=False)
    assert report.boxes > 0 and report.passed
    assert all(d.max_abs <= 1e-4 for d in report.outputs)
    with pytest.raises(InputError, match="--bank"):
        check_parity(ParitySettings(**{**settings.__dict__, "bank": None, "out": tmp_path / "p2"}), progress=False)


def test_kv_stored_by_the_export_equal_eager_and_parity_reads_them(acfb_export, tmp_path, monkeypatch):
    """`bank project` with the ORT export on an fp32 bank: stored K/V = eager project_bank to 1e-4; the
    ORT runner fed them = eager ACFBHead.forward (K/V on the fly); parity --bank reads them (bank_kv
    never runs: it would raise) and passes at 1e-4; the export's weights = the checkpoint's."""
    from acar_deploy.bank.extract import ExtractSettings, extract_bank
    from acar_deploy.bank.window import FeatureBank
    from acar_deploy.engines.bank_projection import (
        ProjectSettings,
        eager_projection_weights,
        project_bank_kv,
        projection_weights,
    )
    from acar_deploy.engines.runners.graph_parts import GraphPartRunner
    from acar_deploy.engines.runners.ort import OrtRunner
    from acar_deploy.formats.bank import open_video_arrays
    from acar_deploy.verify.parity import ParitySettings, check_parity

    root, data, _, acfb, ckpt, export = acfb_export
    bank = extract_bank(ExtractSettings(checkpoint=root / "nobank.pt", data=data, out=tmp_path / "bank", split="val",
                                        precision="fp32", progress=False)).out
    project_bank_kv(ProjectSettings(bank=bank, engine=str(export), batch=4, progress=False))
    weights = projection_weights(export)
    assert weights == eager_projection_weights(ckpt, acfb.config)
    reader = FeatureBank(bank)
    assert reader.use_stored_kv(weights)
    video = max(reader.manifest.videos, key=lambda v: v.entries)
    features, _ = open_video_arrays(bank, reader.manifest, video.video_id)
    keys, values = reader.kv_arrays(video.video_id)
    with torch.no_grad():
        ref_keys, ref_values = acfb.head.project_bank(torch.from_numpy(np.array(features)))
    np.testing.assert_allclose(keys, ref_keys.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(values, ref_values.numpy(), atol=1e-4, rtol=1e-4)

    window = reader.window(video.video_id, video.first_timestamp + 1, 2)
    rng = np.random.default_rng(5)
    clips = rng.standard_normal((1, 3, acfb.config.input.num_frames, 48, 64)).astype(np.float32)
    rois = np.array([[0, 0.1, 0.1, 0.5, 0.9], [0, 0.3, 0.2, 0.9, 0.8]], np.float32)
    mask = np.ones((2, len(window)), bool)
    mask[1, 0] = False
    with torch.no_grad():
        expected = acfb.head(acfb.context(torch.from_numpy(clips)), torch.from_numpy(rois.copy()),
                             torch.from_numpy(window.features), torch.from_numpy(mask)).numpy()
    with OrtRunner(export) as runner:
        got = runner.infer({"clips": clips, "rois": rois, "bank_keys": window.keys, "bank_values": window.values,
                            "bank_window": mask})
        assert runner.bank_cache.projected == 0
    np.testing.assert_allclose(got["logits"], expected, atol=1e-4, rtol=1e-4)

    with monkeypatch.context() as patch:
        patch.setattr(GraphPartRunner, "_project_bank", lambda self, e: (_ for _ in ()).throw(AssertionError("ran")))
        report = check_parity(ParitySettings(engine=str(export), data=data, checkpoint=ckpt, bank=bank, threads=1,
                                             atol=1e-4, rtol=1e-4), progress=False)
    assert report.boxes > 0 and report.passed and report.metadata["bank_kv"] == "stored in the bank"
    assert all(d.max_abs <= 1e-4 for d in report.outputs)


def test_engines_of_an_acfb_export_equal_eager(acfb_export, tmp_path):
    """OpenVINO fp32 build of the bank parts = eager for overlapping windows and an empty one (M = 0);
    an ORT fp32 engine folder too; other precisions are refused in one line."""
    pytest.importorskip("openvino")
    from acar_deploy.engines.build import build_engine
    from acar_deploy.engines.runners.eager import EagerRunner
    from acar_deploy.engines.runners.openvino import OpenVinoRunner
    from acar_deploy.engines.runners.ort import OrtRunner
    from acar_deploy.engines.settings import BuildSettings
    from acar_deploy.export.specs import make_spec, random_bank_entries, random_rois
    from acar_deploy.formats import ExportManifest, Precision, Runtime

    _, _, _, acfb, _, export = acfb_export
    with pytest.raises(InputError, match="not ort int8 .int8 calibration has no bank feeds"):
        build_engine(BuildSettings(export_dir=export, precision=Precision.INT8, out_dir=tmp_path / "e"), progress=False)
    engine = build_engine(BuildSettings(export_dir=export, runtime=Runtime.OPENVINO, out_dir=tmp_path / "ov"),
                          progress=False).path
    geometry = ExportManifest.load(export).geometry()
    rng = np.random.default_rng(3)
    clips = make_spec("backbone", geometry).example_inputs(rng, 1, 1)["clips"]
    bank = random_bank_entries(rng, 7, (geometry.bank.channels, *geometry.bank.size))
    rois = random_rois(rng, 2, 1)
    with OpenVinoRunner(engine) as runner, EagerRunner(acfb) as eager:
        for lo, hi in ((0, 5), (2, 7), (0, 0)):
            feeds = {"clips": clips, "rois": rois, "bank_entries": bank[lo:hi],
                     "bank_window": np.ones((2, hi - lo), bool)}
            np.testing.assert_allclose(runner.infer(feeds)["logits"], eager.infer(feeds)["logits"],
                                       atol=1e-4, rtol=1e-4)
        assert runner.bank_cache.projected == 8  # 5 + 2 new + the empty window's one masked dummy
        for lo, hi in ((0, 5), (0, 0)):  # K/V stored in a bank (bank_kv skipped), incl. an empty window
            keys, values = runner.project_bank(bank[lo:hi]) if hi else (np.zeros((2, 0, *bank.shape[1:]), np.float32),) * 2
            feeds = {"clips": clips, "rois": rois, "bank_keys": keys, "bank_values": values,
                     "bank_window": np.ones((2, hi - lo), bool)}
            want = eager.infer({**{k: feeds[k] for k in ("clips", "rois", "bank_window")}, "bank_entries": bank[lo:hi]})
            np.testing.assert_allclose(runner.infer(feeds)["logits"], want["logits"], atol=1e-4, rtol=1e-4)
        feeds = {"clips": clips, "rois": rois, "bank_entries": bank[0:0], "bank_window": np.ones((2, 0), bool)}
    ort_engine = build_engine(BuildSettings(export_dir=export, out_dir=tmp_path / "ort"), progress=False).path
    with OrtRunner(ort_engine) as runner, EagerRunner(acfb) as eager:
        np.testing.assert_allclose(runner.infer(feeds)["logits"], eager.infer(feeds)["logits"], atol=1e-4, rtol=1e-4)


def test_export_refuses_what_an_acfb_head_cannot_be(tmp_path):
    from acar_deploy.export.exporter import ExportSettings, Parts, export_model

    with pytest.raises(InputError, match="--parts fused"):
        export_model(tmp_path / "a", None, "acfb_tiny", ExportSettings(parts=Parts.fused, input_size=(64, 64)))
    with pytest.raises(InputError, match="--dynamic-size"):
        export_model(tmp_path / "b", None, "acfb_tiny", ExportSettings(input_size=(64, 64), dynamic_size=True))


def test_bench_cli_times_the_bank_head_over_m(acfb_export, tmp_path):
    """`acar-deploy bench EXPORT` of an acfb export: eager and ORT rows per requested M and actor count."""
    import json

    from bank_support import write_bank
    from typer.testing import CliRunner

    from acar_deploy.bench.bank import bank_geometry
    from acar_deploy.cli.main import app
    from acar_deploy.model.config import get_config

    _, _, _, _, ckpt, export = acfb_export
    out = tmp_path / "bench"
    g = bank_geometry(get_config("acfb_tiny"), (48, 64))
    bank = write_bank(tmp_path / "bank", (g.channels, *g.size))
    result = CliRunner().invoke(app, ["bench", str(export), "--checkpoint", str(ckpt), "--size", "48x64",
                                      "--actors", "2,1", "--bank-entries", "6,0", "--iters", "1", "--warmup", "0",
                                      "--threads", "1", "--bank", str(bank), "--bank-keyframes", "2",
                                      "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["format"] == "acar-deploy-bench-bank" and json.loads(result.stdout)["runtimes"] == data["runtimes"]
    assert [r["name"] for r in data["runtimes"]] == ["eager", "ort-fp32"]
    for runtime in data["runtimes"]:
        assert [(p["entries"], p["actors"]) for p in runtime["points"]] == [(6, 2), (6, 1), (0, 2), (0, 1)]
        assert list(runtime["kv_per_entry_s"]) == ["6"] and runtime["points"][0]["head_s"]["mean"] > 0
    assert (out / "latency_vs_entries.png").stat().st_size > 0
    replay = data["replay"]  # --bank: 2 keyframes of the bank's video, both runtimes, ORT's K/V stage timed
    assert [k["timestamp"] for k in replay["keyframes"]] == [0, 1]
    assert [r["name"] for r in replay["runtimes"]] == ["eager", "ort-fp32"]
    assert all(len(r["samples_s"]) == 2 and r["kv_stage_s"] is not None for r in replay["runtimes"])
    assert "## Replay of a real bank" in (out / "results.md").read_text()


FP16_EPS = 2.0**-11  # unit roundoff of float16


def test_ort_fp16_engine_of_an_acfb_export_equals_eager_within_fp16_rounding(acfb_export, tmp_path):
    """fp16 bank parts (the fp16 builder's fp32 islands: softmax, norms) = eager within 20 * 2^-11 * max|logits|
    + 1e-5, the bound of tests/test_engines_fp16.py (about 20 rounding stages from clip to logit), for
    overlapping windows and M = 0; and it is really fp16 (an fp32 engine agrees to ~1e-7)."""
    from acar_deploy.engines.build import build_engine
    from acar_deploy.engines.runners.eager import EagerRunner
    from acar_deploy.engines.runners.ort import OrtRunner
    from acar_deploy.engines.settings import BuildSettings
    from acar_deploy.export.specs import make_spec, random_bank_entries, random_rois
    from acar_deploy.formats import ExportManifest, Precision

    _, _, _, acfb, _, export = acfb_export
    engine = build_engine(BuildSettings(export_dir=export, precision=Precision.FP16, out_dir=tmp_path / "fp16"),
                          progress=False).path
    geometry = ExportManifest.load(export).geometry()
    rng = np.random.default_rng(11)
    clips = make_spec("backbone", geometry).example_inputs(rng, 1, 1)["clips"]
    bank = random_bank_entries(rng, 9, (geometry.bank.channels, *geometry.bank.size))
    rois = random_rois(rng, 3, 1)
    largest = 0.0
    with OrtRunner(engine) as runner, EagerRunner(acfb) as eager:
        assert runner.precision == Precision.FP16
        for lo, hi in ((0, 7), (2, 9), (0, 0)):
            feeds = {"clips": clips, "rois": rois, "bank_entries": bank[lo:hi], "bank_window": np.ones((3, hi - lo), bool)}
            got, want = runner.infer(feeds), eager.infer(feeds)
            atol = 20 * FP16_EPS * float(np.abs(want["logits"]).max()) + 1e-5
            diff = float(np.abs(got["logits"] - want["logits"]).max())
            assert diff <= atol, f"M = {hi - lo}: max |fp16 - eager| = {diff:.3g} > {atol:.3g}"
            assert float(np.abs(got["scores"] - want["scores"]).max()) <= 0.5 * atol
            largest = max(largest, diff)
    assert largest > 1e-6


@pytest.fixture
def trt_standin(acfb_export, tmp_path, monkeypatch):
    """An ORT engine folder of the export relabelled `trt`, with TrtRunner's device plumbing replaced:
    each part runs in ONNX Runtime instead of a TensorRT plan and CPU tensors stand in for CUDA ones, so
    TensorRT itself is NOT executed. Returns the folder and `runs`: (part, input shapes) per execution."""
    import json

    from acar_deploy.engines.build import build_engine
    from acar_deploy.engines.runners.trt import TrtRunner
    from acar_deploy.engines.settings import BuildSettings

    _, _, _, _, _, export = acfb_export
    folder = build_engine(BuildSettings(export_dir=export, out_dir=tmp_path / "engine"), progress=False).path
    record = json.loads((folder / "engine.json").read_text())
    (folder / "engine.json").write_text(json.dumps({**record, "runtime": "trt"}))
    sessions = {part: _session(folder / record["parts"][part]["file"]) for part in ("backbone", "bank_kv", "bank_head")}
    runs = []

    def execute(self, part, inputs):
        session = sessions[part]
        assert set(inputs) == {i.name for i in session.get_inputs()}, part  # what _enqueue binds by name
        runs.append((part, {k: tuple(v.shape) for k, v in inputs.items()}))
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {k: v.numpy() for k, v in inputs.items()})
        return {n: torch.from_numpy(v) for n, v in zip(names, values, strict=True)}

    def timed_run(self, stages):
        result, times = None, {}
        for name, fn in stages:
            result = fn(result)
            times[name] = 0.0
        return result, times

    monkeypatch.setattr(TrtRunner, "_activate", lambda self: None)
    monkeypatch.setattr(TrtRunner, "_execute", execute)
    monkeypatch.setattr(TrtRunner, "_timed_run", timed_run)
    monkeypatch.setattr(TrtRunner, "_to_device", staticmethod(lambda array: torch.from_numpy(np.array(array))))
    return folder, runs


def _trt_feeds(export, seed):
    from acar_deploy.export.specs import make_spec, random_bank_entries, random_rois
    from acar_deploy.formats import ExportManifest

    geometry = ExportManifest.load(export).geometry()
    rng = np.random.default_rng(seed)
    clips = make_spec("backbone", geometry).example_inputs(rng, 1, 1)["clips"]
    bank = random_bank_entries(rng, 8, (geometry.bank.channels, *geometry.bank.size))
    return clips, random_rois(rng, 3, 1), bank


def test_trt_runner_bank_path_with_onnx_runtime_standing_in_for_tensorrt(acfb_export, trt_standin):
    """TrtRunner's bank plumbing on a CPU: feed names = the bank parts' inputs, K/V projected once per entry
    and kept as tensors, M = 0 as one masked entry (profiles start at 1), logits = eager. Each part runs
    in ONNX Runtime instead of a TensorRT plan and CUDA is replaced: TensorRT itself is NOT executed."""
    from acar_deploy.engines.runners.eager import EagerRunner
    from acar_deploy.engines.runners.trt import TrtRunner

    _, _, _, acfb, _, export = acfb_export
    folder, runs = trt_standin
    clips, rois, bank = _trt_feeds(export, 5)
    with TrtRunner(folder) as runner, EagerRunner(acfb) as eager:
        assert runner.supports_bank and not runner.supports_head_only
        for lo, hi in ((0, 6), (2, 8), (0, 0)):
            feeds = {"clips": clips, "rois": rois, "bank_entries": bank[lo:hi], "bank_window": np.ones((3, hi - lo), bool)}
            np.testing.assert_allclose(runner.infer(feeds)["logits"], eager.infer(feeds)["logits"], atol=1e-4, rtol=1e-4)
        assert set(runner.last_stage_times) == {"h2d", "backbone", "bank_kv", "head", "d2h", "wall"}
        assert runner.bank_cache.projected == 9  # 6 + 2 new + the empty window's masked entry
        kv_runs = [shapes["bank_entries"][0] for part, shapes in runs if part == "bank_kv"]
        assert kv_runs == [6, 2, 1]
        assert runs[-1][1]["bank_window"] == (3, 1)
        with pytest.raises(InputError, match="bank window"):
            runner.infer({"clips": clips, "rois": rois})


def test_trt_runner_stored_kv_with_onnx_runtime_standing_in_for_tensorrt(acfb_export, trt_standin, tmp_path,
                                                                        monkeypatch):
    """TrtRunner fed K/V stored in the bank (`bank_keys`/`bank_values`): bank_kv never runs (its device
    projection raises and no bank_kv execution is recorded), M = 0 as one masked key/value, logits = eager
    `ACFBHead.forward` on the entries (K/V on the fly) to 1e-4. Its `project_bank` (bank_kv alone, host to
    host) = eager `project_bank`, and `bank project` with the folder stores them. TensorRT is NOT executed."""
    from acar_deploy.engines.bank_projection import ProjectSettings, project_bank_kv
    from acar_deploy.engines.runners.eager import EagerRunner
    from acar_deploy.engines.runners.trt import TrtRunner
    from acar_deploy.formats import ExportManifest
    from acar_deploy.formats.bank import BankManifest, ProjectionWeights, open_video_arrays

    _, _, val_bank, acfb, _, export = acfb_export
    folder, runs = trt_standin
    clips, rois, bank = _trt_feeds(export, 6)
    with torch.no_grad():
        keys, values = (t.numpy() for t in acfb.head.project_bank(torch.from_numpy(bank)))
    with TrtRunner(folder) as runner, EagerRunner(acfb) as eager:
        assert runner.supports_stored_kv
        got_keys, got_values = runner.project_bank(bank)
        np.testing.assert_allclose(got_keys, keys, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(got_values, values, atol=1e-4, rtol=1e-4)
        assert runner.project_bank(bank[:0])[0].shape == (2, 0, *bank.shape[1:])
        del runs[:]
        monkeypatch.setattr(TrtRunner, "_project_bank_on_device",
                            lambda self, entries: (_ for _ in ()).throw(AssertionError("bank_kv ran")))
        half = np.ones((3, 8), bool)
        half[0, ::2] = False  # box 0 sees every other entry only
        logits = {}
        for lo, hi, mask in ((0, 6, np.ones((3, 6), bool)), (0, 8, half), (0, 0, np.ones((3, 0), bool))):
            stored = {"clips": clips, "rois": rois, "bank_keys": keys[:, lo:hi], "bank_values": values[:, lo:hi],
                      "bank_window": mask}
            entries = {"clips": clips, "rois": rois, "bank_entries": bank[lo:hi], "bank_window": mask}
            logits[hi] = runner.infer(stored)["logits"]
            np.testing.assert_allclose(logits[hi], eager.infer(entries)["logits"], atol=1e-4, rtol=1e-4)
            assert set(runner.last_stage_times) == {"h2d", "backbone", "head", "d2h", "wall"}
        assert np.abs(logits[8] - logits[0]).max() > 1e-3  # the stored K/V move the logits
        assert [part for part, _ in runs] == ["backbone", "bank_head"] * 3 and runner.bank_cache.projected == 0
        assert [shapes["bank_keys"][1] for part, shapes in runs if part == "bank_head"] == [6, 8, 1]
        assert runs[-1][1]["bank_window"] == (3, 1) and runs[-1][1]["bank_values"] == (2, 1, *bank.shape[1:])

    # `bank project --engine` a TensorRT engine folder: stored = eager project_bank (fp16 bank: one rounding)
    shutil.copytree(val_bank, tmp_path / "bank")
    result = project_bank_kv(ProjectSettings(bank=tmp_path / "bank", engine=str(folder), progress=False))
    manifest = BankManifest.load(tmp_path / "bank")
    assert result.runner.startswith("trt-fp32:") and result.entries == manifest.entries > 0
    assert manifest.projection.weights == ProjectionWeights.of_export(ExportManifest.load(export))
    from acar_deploy.bank.window import FeatureBank

    reader = FeatureBank(tmp_path / "bank")
    assert reader.use_stored_kv(manifest.projection.weights)
    for video in manifest.videos:
        features, _ = open_video_arrays(tmp_path / "bank", manifest, video.video_id)
        with torch.no_grad():
            ref = acfb.head.project_bank(torch.from_numpy(np.array(features, np.float32)))[0].numpy()
        stored_keys = np.asarray(reader.kv_arrays(video.video_id)[0], np.float32)
        np.testing.assert_allclose(stored_keys, ref, atol=1e-4, rtol=2 ** -10)
