"""OpenVINO engines: fp32 equals eager, bf16 and int8 within bounds derived from their precision,
zero and varying box counts, the engine folder's record, and the parity gate (pass and fail)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from engine_support import sample_feeds, write_npz_calibration

from acar_deploy.artifacts import sha256_file
from acar_deploy.engines import (
    BuildSettings,
    EagerRunner,
    Int8Policy,
    RunnerOptions,
    build_engine,
    open_runner,
)
from acar_deploy.engines.openvino_core import openvino_core
from acar_deploy.engines.settings import OpenVinoPolicy
from acar_deploy.errors import InputError

pytest.importorskip("openvino")

BF16_EPS = 2.0**-8  # unit roundoff of bfloat16 (7 stored mantissa bits)
ONE_THREAD = RunnerOptions(threads=1)


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_export_factory):
    export = tiny_export_factory(parts="split")
    root = tmp_path_factory.mktemp("openvino")
    calib = write_npz_calibration(root / "calib", 3)
    built = {}
    for precision in ("fp32", "bf16", "int8"):
        settings = BuildSettings(export.export_dir, runtime="openvino", precision=precision, out_dir=root / precision,
                                 int8=Int8Policy(calib_data=calib, calib_clips=6))  # as test_engines_int8.py
        built[precision] = build_engine(settings, progress=False)
    return export, built


@pytest.fixture(scope="module")
def reference(tiny_export_factory):
    export = tiny_export_factory(parts="split")
    feeds = sample_feeds(np.random.default_rng(7), 2, [3, 2])
    with EagerRunner.from_checkpoint(export.checkpoint) as eager:
        return feeds, eager.infer(feeds)


def test_fp32_engine_equals_eager(engines, reference):
    _, built = engines
    feeds, expected = reference
    with open_runner(built["fp32"].path, ONE_THREAD) as runner:
        assert runner.metadata["runtime"] == "openvino" and runner.metadata["inference_precision"] == "f32"
        got = runner.infer(feeds)
    for name in ("logits", "scores"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-5)


def test_bf16_engine_within_bf16_rounding(engines, reference):
    """Same derivation as the fp16 test: ~20 rounding stages of relative error <= 2^-8 each, so
    |d logits| <= 20 * 2^-8 * max|logits|; the scores (softmax/sigmoid) move by at most half that."""
    _, built = engines
    feeds, expected = reference
    with open_runner(built["bf16"].path, ONE_THREAD) as runner:
        got = runner.infer(feeds)
        native = runner.metadata["bf16_native"]
        effective = runner.metadata["inference_precision"]
    atol = 20 * BF16_EPS * float(np.abs(expected["logits"]).max()) + 1e-5
    for name, bound in (("logits", atol), ("scores", 0.5 * atol)):
        diff = float(np.abs(got[name] - expected[name]).max())
        assert diff <= bound, f"{name}: max |bf16 - eager| = {diff:.3g} > {bound:.3g}"
    record = json.loads((built["bf16"].path / "engine.json").read_text())["openvino"]
    assert record["compile_options"]["INFERENCE_PRECISION_HINT"] == "bf16"
    if native:  # really computed in bf16: an fp32 graph agrees with eager to ~1e-7
        assert effective == "bf16" and float(np.abs(got["logits"] - expected["logits"]).max()) > 1e-6
    else:  # the fallback is recorded, at build time and at run time
        assert effective == "f32" and "no native bf16" in record["warning"]


def test_int8_engine_within_int8_bound(engines, reference, tmp_path):
    """QDQ int8 (u8 activations, per-channel s8 weights): each quantized layer rounds to 1/255 of its
    activation range; over ~20 layers the error is a few percent of the logit range. OpenVINO runs the
    same calibrated QDQ graph as ONNX Runtime, so its error must be of the same size as ORT's."""
    export, built = engines
    feeds, expected = reference
    with open_runner(built["int8"].path, ONE_THREAD) as runner:
        got = runner.infer(feeds)["logits"]
    record = json.loads((built["int8"].path / "engine.json").read_text())
    ort_engine = build_engine(BuildSettings(export.export_dir, precision="int8", out_dir=tmp_path / "ort-int8",
                                            int8=Int8Policy(calib_data=record["calibration"]["source"], calib_clips=6)),
                              progress=False)
    with open_runner(ort_engine.path, ONE_THREAD) as ort_runner:
        ort_got = ort_runner.infer(feeds)["logits"]
    scale = float(np.abs(expected["logits"]).max())
    diff = float(np.abs(got - expected["logits"]).max())
    ort_diff = float(np.abs(ort_got - expected["logits"]).max())
    assert 0 < diff < 0.2 * scale, (diff, scale)
    assert diff <= 2 * ort_diff + 1e-3 * scale, (diff, ort_diff)
    assert record["parts"]["backbone"]["quantized_nodes"] and record["calibration"]["clips"] == 6


def test_zero_boxes_and_dynamic_box_count(engines, reference):
    export, built = engines
    rng = np.random.default_rng(3)
    with open_runner(built["fp32"].path, ONE_THREAD) as runner, \
            EagerRunner.from_checkpoint(export.checkpoint) as eager:
        for boxes in ([0], [1], [5], [2, 7]):
            feeds = sample_feeds(rng, len(boxes), boxes)
            got, expected = runner.infer(feeds), eager.infer(feeds)
            assert got["logits"].shape == (sum(boxes), expected["logits"].shape[1] if sum(boxes) else runner.num_classes)
            np.testing.assert_allclose(got["logits"], expected["logits"], rtol=1e-4, atol=1e-5)


def test_engine_folder_holds_ir_cache_and_record(engines):
    _, built = engines
    folder = built["fp32"].path
    record = json.loads((folder / "engine.json").read_text())
    assert record["runtime"] == "openvino" and record["versions"]["openvino"]
    for part in ("backbone", "head"):
        assert (folder / record["parts"][part]["file"]).suffix == ".xml"
        assert (folder / record["parts"][part]["weights_file"]).is_file()
    assert any((folder / "cache").iterdir())  # compiled once at build time
    assert record["openvino"]["compile_options"] == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                      "NUM_STREAMS": "1"}


def test_bf16_and_fp16_are_refused_where_they_do_not_apply(tmp_path, tiny_export_factory):
    export = tiny_export_factory(parts="split")
    with pytest.raises(InputError, match="bf16 is an OpenVINO precision"):
        BuildSettings(export.export_dir, runtime="ort", precision="bf16")
    with pytest.raises(InputError, match="fp16 is a GPU precision"):
        BuildSettings(export.export_dir, runtime="openvino", precision="fp16")


def test_nncf_int8_quantizes_the_backbone_within_int8_bound(tmp_path, tiny_export_factory):
    """NNCF post-training int8 of the fp32 IR: the backbone's context map stays within a few percent."""
    pytest.importorskip("nncf")

    export = tiny_export_factory(parts="split")
    calib = write_npz_calibration(tmp_path / "calib", 3)
    info = build_engine(BuildSettings(export.export_dir, runtime="openvino", precision="int8", out_dir=tmp_path / "e",
                                      int8=Int8Policy(calib_data=calib, calib_clips=3),
                                      openvino=OpenVinoPolicy(int8_method="nncf")), progress=False)
    part = info.engine_json["parts"]["backbone"]
    assert part["int8_method"] == "nncf" and part["fake_quantize_nodes"] > 0
    assert set(part["fp32_reasons"]["stem_convs"]) <= set(part["fp32_nodes"])
    clips = sample_feeds(np.random.default_rng(2), 1, [1])["clips"]
    core = openvino_core("test")  # the process's Core (engines/openvino_core.py: never a second CPU plugin)
    source = core.compile_model(str(export.export_dir / "backbone.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    quantized = core.compile_model(str(info.parts["backbone"]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    expected, got = source(clips)[0], quantized(clips)[0]
    rel = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
    assert 0 < rel < 0.1, rel


# --- the parity gate -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parity_setup(tmp_path_factory):
    """Synthetic data, a seeded checkpoint and its export (as tests/test_parity.py makes them)."""
    from acar_deploy.data.clips import scaled_size
    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.export import ExportSettings, export_model
    from acar_deploy.export.exporter import Parts
    from acar_deploy.model.checkpoint import load_model, save_checkpoint

    root = tmp_path_factory.mktemp("ov-parity")
    data = root / "data"
    synthesize(SynthSettings(data, videos=3, seconds=4, seed=1))
    model = load_model(None, data / "config.yaml", seed=0)
    checkpoint = save_checkpoint(model, root / "model.pt")
    width, height = json.loads((data / "dataset.json").read_text())["frame_size"]
    clip_w, clip_h = scaled_size(width, height, model.config.input.short_side)
    export = root / "export"
    export_model(export, checkpoint, None, ExportSettings(parts=Parts.split, input_size=(clip_h, clip_w), validate=False))
    return root, data, checkpoint, export


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_parity_gate_passes_openvino_engines(parity_setup, precision):
    from acar_deploy.verify.parity import ParitySettings, check_parity, markdown_parity

    root, data, checkpoint, export = parity_setup
    engine = build_engine(BuildSettings(export, runtime="openvino", precision=precision, out_dir=root / precision),
                          progress=False).path
    report = check_parity(ParitySettings(engine=str(engine), data=data, checkpoint=checkpoint), progress=False)
    assert report.passed and report.engine_kind == f"openvino-{precision}"
    assert abs(report.map_diff_points) <= 0.5
    effective = report.metadata["engine"]["inference_precision"]  # what OpenVINO says the compiled model uses
    assert f"- engine inference precision {effective} (engine {precision}; native bf16 on " in markdown_parity(report)


def test_parity_gate_fails_a_damaged_openvino_engine(parity_setup, tmp_path):
    """Head weights of the export scaled by +-20 % noise, then built: the fp32 tolerance catches it."""
    import onnx
    from onnx import numpy_helper

    from acar_deploy.verify.parity import ParityGateFailed, ParitySettings, check_parity

    root, data, checkpoint, export = parity_setup
    damaged_export = tmp_path / "export"
    shutil.copytree(export, damaged_export)
    head = onnx.load(str(damaged_export / "head.onnx"))
    rng = np.random.default_rng(0)
    for init in head.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim >= 2:
            noisy = (w * (1 + 0.2 * rng.standard_normal(w.shape))).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(head, str(damaged_export / "head.onnx"))
    # A badly trained/exported model, recorded as exported: the manifest lists the damaged graph's sha256.
    manifest = json.loads((damaged_export / "manifest.json").read_text())
    manifest["parts"]["head"]["sha256"] = sha256_file(damaged_export / "head.onnx")
    (damaged_export / "manifest.json").write_text(json.dumps(manifest))
    engine = build_engine(BuildSettings(damaged_export, runtime="openvino", out_dir=tmp_path / "damaged"),
                          progress=False).path
    with pytest.raises(ParityGateFailed) as failed:
        check_parity(ParitySettings(engine=str(engine), data=data, checkpoint=checkpoint), progress=False)
    assert any("logits" in f for f in failed.value.report.failures)


# --- the eager-bf16 reference row of the benchmark ---------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_eager_bf16_runner_within_bf16_rounding(reference, channels_last, tiny_export_factory):
    from acar_deploy.engines.runners.eager_bf16 import EagerBf16Runner
    from acar_deploy.model import load_model

    export = tiny_export_factory(parts="split")
    feeds, expected = reference
    with EagerBf16Runner(load_model(export.checkpoint, None), channels_last=channels_last) as runner:
        assert runner.metadata["precision"] == "bf16"
        got = runner.infer(feeds)
    atol = 20 * BF16_EPS * float(np.abs(expected["logits"]).max()) + 1e-5
    diff = float(np.abs(got["logits"] - expected["logits"]).max())
    assert 1e-6 < diff <= atol, (diff, atol)  # really bf16 (autocast emulates it where the CPU lacks it)


def test_bench_adds_the_eager_bf16_row():
    from acar_deploy.bench.latency import BenchSettings, run_benchmark

    result = run_benchmark(BenchSettings(engines=("eager-bf16",), config="acar_tiny", actors=(2,), size=(64, 64),
                                         warmup=0, iters=1, threads=1, count_flops=False, plots=False), progress=False)
    row = result.runtime("eager-bf16")
    assert row.at(2).ratio_to_eager is not None and row.at(2).ratio_to_eager > 0


def test_bench_report_shows_the_precision_a_bf16_engine_ran_at(engines, tmp_path):
    """On a CPU without native bf16 (OpenVINO's own capability list says so) the bf16 engine's bench
    report states that it ran f32, with the recorded warning; on one with it, that it ran bf16."""

    from acar_deploy.bench.latency import BenchSettings, run_benchmark
    from acar_deploy.bench.report import write_bench_report

    export, built = engines
    native = "BF16" in openvino_core("test").get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    result = run_benchmark(BenchSettings(engines=(str(built["bf16"].path),), checkpoint=export.checkpoint,
                                         config="acar_tiny", actors=(2,), size=(64, 64), warmup=0, iters=1,
                                         threads=1, count_flops=False, plots=False), progress=False)
    report = (write_bench_report(result, tmp_path / "bench") / "results.md").read_text()
    ran = "bf16" if native else "f32"
    line = next(line for line in report.splitlines() if "inference precision" in line)
    assert f"inference precision {ran} (engine bf16; native bf16 on " in line
    assert line.endswith(f": {'yes' if native else 'no'})") or "; warning:" in line
    assert ("no native bf16" in report) is (not native)
    assert "inference precision" not in report.split("## What each runtime ran", 1)[0]  # only in its section


def test_cli_build_refuses_bf16_for_onnx_runtime_in_one_line(tmp_path, tiny_export_factory):
    from typer.testing import CliRunner

    from acar_deploy.cli.main import app

    export = tiny_export_factory(parts="split")
    result = CliRunner().invoke(app, ["build", str(export.export_dir), "--runtime", "ort", "--precision", "bf16",
                                      "--out", str(tmp_path / "e")])
    assert result.exit_code == 2
    assert "bf16 is an OpenVINO precision" in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "e").exists()


# --- the thread's signal stack (engines/openvino_core.py) -----------------------------------------


def _signal_stack() -> tuple[int, int]:
    """(address, size) of this thread's alternate signal stack, read with libc directly."""
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    stack = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    return (stack.sp or 0, stack.size)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="sigaltstack is read on Linux")
def test_builds_and_runners_leave_the_signal_stack_as_they_found_it(tiny_export_factory, tmp_path):
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack and, with Cores torn down out of
    order, leaves a freed one behind (SIGSEGV at the next SIGCHLD / Ctrl-C). Two builds and two runners
    closed out of order must leave the stack this test started with."""
    export = tiny_export_factory(parts="split")
    before = _signal_stack()
    first = build_engine(BuildSettings(export.export_dir, runtime="openvino", out_dir=tmp_path / "a"), progress=False)
    second = build_engine(BuildSettings(export.export_dir, runtime="openvino", out_dir=tmp_path / "b"), progress=False)
    runner_a, runner_b = open_runner(first.path, ONE_THREAD), open_runner(second.path, ONE_THREAD)
    runner_a.activate()
    runner_b.activate()
    runner_a.close()
    runner_b.close()
    assert _signal_stack() == before


def test_a_killed_child_after_openvino_does_not_crash_the_parent(tiny_export_factory, tmp_path):
    """What crashed pytest (exit 139): OpenVINO Cores torn down out of order, then a Python SIGCHLD
    handler runs when a child dies. Run in a child interpreter so a crash fails this test only."""
    import subprocess
    import sys
    import textwrap

    export = tiny_export_factory(parts="split")
    script = textwrap.dedent(f"""
        import faulthandler, gc, signal, subprocess, sys
        faulthandler.enable()  # what pytest does: an alternate signal stack of Python's own
        from acar_deploy.engines import BuildSettings, RunnerOptions, build_engine, open_runner
        engines = [build_engine(BuildSettings({str(export.export_dir)!r}, runtime="openvino",
                                              out_dir={str(tmp_path)!r} + f"/e{{i}}"), progress=False)
                   for i in range(2)]
        runners = [open_runner(e.path, RunnerOptions(threads=1)) for e in engines]
        for runner in runners:
            runner.activate()
        for runner in runners:
            runner.close()
        del runners, engines
        gc.collect()
        signal.signal(signal.SIGCHLD, lambda *_: None)  # as torch's DataLoader installs one
        for _ in range(3):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
            child.kill()
            child.wait()
        print("survived")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr[-2000:])
