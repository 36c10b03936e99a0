"""A real Triton server (the bundled CPU one) serving the bank set of a tiny acfb export.

The server fixture is test_triton_live.py's (127.0.0.1, OS-picked ports, bounded waits, only its own
process group killed and checked gone). The reference is the eager PyTorch model (ACFBHead.forward,
K/V projected on the fly from the entries), not the server.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from test_triton_bank import bank_request, eager_logits, make_acfb_export  # noqa: E402
from test_triton_live import TIMEOUT_S, LiveServer, _group_gone  # noqa: E402

from acar_deploy.errors import InputError  # noqa: E402
from acar_deploy.model.scores import action_scores  # noqa: E402
from acar_deploy.serve.local_triton import prepare_bundled  # noqa: E402
from acar_deploy.serve.triton import InstanceKind, TritonSettings, build_model_repository  # noqa: E402
from acar_deploy.serve.triton_client import BankFeeds, TritonProtocol, infer_pipeline, open_client  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the bundled tritonserver is a Linux binary")
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # Triton's ORT graphs against eager, as the export validates them


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """(server, eager model): one pipeline instance, so one K/V cache sees every request."""
    root = tmp_path_factory.mktemp("banklive")
    eager, export = make_acfb_export(root)
    repo = build_model_repository(export, root / "repo",
                                  settings=TritonSettings(kind=InstanceKind.cpu, max_batch=2, instances=1))
    server = LiveServer(repo.path, prepare_bundled(install=True))
    server.start()
    try:
        yield server, eager
    finally:
        if server.process is not None:
            server.process.stop(timeout_s=30)
        assert all(_group_gone(g) for g in server.groups), "a tritonserver process outlived the fixture"


def _check(logits, scores, want) -> None:
    assert logits.shape == want.shape
    np.testing.assert_allclose(logits, want, **TOLERANCE)
    np.testing.assert_allclose(scores, action_scores(logits), rtol=0, atol=1e-6)


def _project_on_server(server, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The served bank_kv model called directly on every entry: a fresh projection of the whole window."""
    module, client, _ = open_client(server.endpoints.http, TritonProtocol.http, TIMEOUT_S)
    try:
        tensor = module.InferInput("bank_entries", list(entries.shape), "FP32")
        tensor.set_data_from_numpy(entries)
        result = client.infer("acar_bank_kv", [tensor])
        return result.as_numpy("bank_keys"), result.as_numpy("bank_values")
    finally:
        client.close()


def test_every_bank_model_is_ready(live):
    server, _ = live
    assert dict(server.endpoints.models) == {"acar": "READY", "acar_backbone": "READY", "acar_bank_kv": "READY",
                                             "acar_bank_head": "READY"}


@pytest.mark.parametrize("protocol", list(TritonProtocol))
def test_entries_equal_eager_over(protocol, live):
    server, eager = live
    clips, rois, entries, window = bank_request(seed=10 + list(TritonProtocol).index(protocol))
    want = eager_logits(eager, clips, rois, entries, window)
    sees = window.any(axis=1)
    assert np.abs(want[sees] - eager_logits(eager, clips, rois, entries[:0], window[:, :0])[sees]).max() > 1e-3
    logits, scores = infer_pipeline(server.url(protocol), clips, rois, protocol=protocol, timeout_s=TIMEOUT_S,
                                    bank=BankFeeds(window, entries=entries))
    _check(logits, scores, want)


def test_stored_kv_equal_eager_without_running_bank_kv(live):
    server, eager = live
    clips, rois, entries, window = bank_request(seed=12)
    with torch.no_grad():
        keys, values = (t.numpy() for t in eager.head.project_bank(torch.from_numpy(entries)))
    before = server.stats("acar_bank_kv")
    logits, scores = infer_pipeline(server.endpoints.grpc, clips, rois, protocol=TritonProtocol.grpc,
                                    timeout_s=TIMEOUT_S, bank=BankFeeds(window, keys=keys, values=values))
    _check(logits, scores, eager_logits(eager, clips, rois, entries, window))
    assert server.stats("acar_bank_kv") == before


def test_shifted_window_reuses_cached_kv_and_equals_a_fresh_projection(live):
    """Keyframes t and t+1: windows [0, 6) and [3, 9) of one video's 9 entries share 3 entries."""
    server, eager = live
    clips, rois, bank, _ = bank_request(seed=13, entries=9)
    windows = [bank_request(seed=s, entries=6)[3] for s in (14, 15)]
    answers = []
    for (lo, hi), window in zip(((0, 6), (3, 9)), windows, strict=True):
        logits, scores = infer_pipeline(server.endpoints.http, clips, rois, timeout_s=TIMEOUT_S,
                                        bank=BankFeeds(window, entries=bank[lo:hi]))
        _check(logits, scores, eager_logits(eager, clips, rois, bank[lo:hi], window))
        answers.append(logits)
    keys, values = _project_on_server(server, bank[3:9])
    fresh, _ = infer_pipeline(server.endpoints.http, clips, rois, timeout_s=TIMEOUT_S,
                              bank=BankFeeds(windows[1], keys=keys, values=values))
    np.testing.assert_array_equal(answers[1], fresh)
    before = server.stats("acar_bank_kv")  # the same window again: every entry is cached, bank_kv idle
    again, _ = infer_pipeline(server.endpoints.http, clips, rois, timeout_s=TIMEOUT_S,
                              bank=BankFeeds(windows[1], entries=bank[3:9]))
    np.testing.assert_array_equal(again, answers[1])
    assert server.stats("acar_bank_kv") == before


def test_zero_actors_answer_empty_without_running_a_model(live):
    server, _ = live
    clips, _, entries, _ = bank_request(seed=16)
    models = ("acar_backbone", "acar_bank_kv", "acar_bank_head")
    before = {m: server.stats(m) for m in models}
    logits, scores = infer_pipeline(server.endpoints.http, clips, np.zeros((0, 5), np.float32), timeout_s=TIMEOUT_S,
                                    bank=BankFeeds(np.zeros((0, 6), bool), entries=entries))
    assert logits.shape == scores.shape == (0, 60)
    assert {m: server.stats(m) for m in models} == before


def test_zero_entries_equal_eager(live):
    server, eager = live
    clips, rois, entries, window = bank_request(seed=17, entries=0)
    logits, scores = infer_pipeline(server.endpoints.http, clips, rois, timeout_s=TIMEOUT_S,
                                    bank=BankFeeds(window, entries=entries))
    _check(logits, scores, eager_logits(eager, clips, rois, entries, window))


def test_bad_bank_request_is_an_error_and_the_server_keeps_serving(live):
    server, eager = live
    clips, rois, entries, window = bank_request(seed=18)
    with pytest.raises(InputError, match=r"bank_window must be bool \[R, M\] with R = 3 boxes"):
        infer_pipeline(server.endpoints.http, clips, rois, timeout_s=TIMEOUT_S,
                       bank=BankFeeds(window[:2], entries=entries))
    with pytest.raises(InputError, match="send either bank_entries or bank_keys \\+ bank_values"):
        infer_pipeline(server.endpoints.http, clips, rois, timeout_s=TIMEOUT_S, bank=BankFeeds(window))
    logits, scores = infer_pipeline(server.endpoints.http, clips, rois, timeout_s=TIMEOUT_S,
                                    bank=BankFeeds(window, entries=entries))
    _check(logits, scores, eager_logits(eager, clips, rois, entries, window))
