"""`bench --eager-device`: the eager baseline sits on the engines' device, so x-eager ratios compare runtimes.

TensorRT runners are stand-ins here (only `.runtime` and `.name` are read); the refusal where CUDA is
missing runs for real on a machine without a GPU.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from acar_deploy.bench.latency import cross_device_note, resolve_eager_device
from acar_deploy.bench.results import BenchSettings
from acar_deploy.errors import InputError
from acar_deploy.formats.enums import Runtime

TRT = SimpleNamespace(name="trt-fp16", runtime=Runtime.TRT)
ORT = SimpleNamespace(name="ort-fp32", runtime=Runtime.ORT)


def test_auto_puts_eager_on_the_gpu_only_when_a_tensorrt_engine_is_timed():
    assert resolve_eager_device("auto", [ORT, TRT], cuda_available=True) == "cuda"
    assert resolve_eager_device("auto", [ORT], cuda_available=True) == "cpu"
    assert resolve_eager_device("auto", [TRT], cuda_available=False) == "cpu"
    assert resolve_eager_device("cuda:1", [ORT], cuda_available=True) == "cuda:1"
    with pytest.raises(InputError, match="--eager-device cuda: torch sees no CUDA device"):
        resolve_eager_device("cuda", [TRT], cuda_available=False)


def test_a_cpu_baseline_next_to_a_gpu_engine_is_flagged():
    note = cross_device_note("cpu", [ORT, TRT])
    assert note is not None and "trt-fp16 ran on the GPU" in note and "--eager-device cuda" in note
    assert cross_device_note("cuda:0", [ORT, TRT]) is None
    assert cross_device_note("cpu", [ORT]) is None


def test_bad_eager_device_values_are_refused():
    with pytest.raises(InputError, match="--eager-device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        BenchSettings(eager_device="gpu")
    assert BenchSettings(eager_device="cuda:0").eager_device == "cuda:0"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cli_refuses_cuda_eager_without_a_gpu_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from acar_deploy.cli.main import app

    result = CliRunner().invoke(app, ["bench", "eager-bf16", "--config", "acar_tiny", "--size", "64x64",
                                      "--eager-device", "cuda", "--iters", "1", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2, result.output
    assert "torch sees no CUDA device" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b").exists()
