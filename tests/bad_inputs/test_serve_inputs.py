"""Bad input to `acar-deploy serve`: refused in one line (exit 2) before any server starts -- a folder
that is no model repository, a garbage config.pbtxt, ports out of range, equal or busy, no tritonserver
to run. The stand-in `--server` scripts here record whether they were started; none listens anywhere."""

from __future__ import annotations

import shutil
import socket
import stat
from pathlib import Path

import pytest

from acar_deploy.serve.local_triton import free_port

from .conftest import assert_one_line_error, run_cli, tree_digest

pytest.importorskip("tritonclient.grpc", reason="writing a model repository needs the triton extra")


@pytest.fixture(scope="module")
def repository(world, tmp_path_factory):
    """A real model repository (acar-deploy triton, CPU) of the world's export."""
    repo = tmp_path_factory.mktemp("serve") / "repo"
    result = run_cli("triton", world.export, "--out", repo, "--kind", "cpu")
    assert result.exit_code == 0, result.stderr
    return repo


@pytest.fixture
def no_server(tmp_path, monkeypatch):
    """No tritonserver on PATH and an empty cache (ACAR_DEPLOY_CACHE), never the user's own cache."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("ACAR_DEPLOY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _stand_in_server(tmp_path: Path, body: str) -> tuple[Path, Path]:
    """An executable `tritonserver` stand-in that touches a marker when started, then runs `body`."""
    marker = tmp_path / "server-started"
    script = tmp_path / "tritonserver"
    script.write_text(f"#!/bin/sh\ntouch '{marker}'\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, marker


def _serve(repo, *rest):
    return run_cli("serve", repo, "--http-port", free_port(), "--grpc-port", free_port(), *rest)


def test_serve_on_a_missing_folder_names_it(tmp_path, no_server):
    assert_one_line_error(_serve(tmp_path / "nowhere"), 2, str(tmp_path / "nowhere"), "acar-deploy triton")


def test_serve_on_a_folder_with_no_models_names_it(tmp_path, no_server):
    folder = tmp_path / "not_a_repo"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    assert_one_line_error(_serve(folder), 2, str(folder), "model repository")


def test_serve_on_a_model_folder_without_config_names_the_file(repository, tmp_path, no_server):
    repo = shutil.copytree(repository, tmp_path / "repo")
    (repo / "acar_head" / "config.pbtxt").unlink()
    assert_one_line_error(_serve(repo), 2, str(repo / "acar_head" / "config.pbtxt"))


@pytest.mark.parametrize("text", ["garbage { here\n", 'name: "acar_head"\nmax_batch_size: "many"\n'],
                         ids=["garbage", "wrong-type"])
def test_serve_on_a_garbage_config_names_file_and_line(repository, tmp_path, no_server, text):
    repo = shutil.copytree(repository, tmp_path / "repo")
    config = repo / "acar_head" / "config.pbtxt"
    config.write_text(text)
    before = tree_digest(repo)
    line = "1" if text.startswith("garbage") else "2"
    assert_one_line_error(_serve(repo), 2, f"{config}:{line}:")
    assert tree_digest(repo) == before


def test_serve_on_a_config_naming_another_model_names_the_field(repository, tmp_path, no_server):
    repo = shutil.copytree(repository, tmp_path / "repo")
    config = repo / "acar_head" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "acar_head"', 'name: "other"'))
    assert_one_line_error(_serve(repo), 2, str(config), "'name'")


@pytest.mark.parametrize(("option", "port"), [("--http-port", "70000"), ("--grpc-port", "0"),
                                              ("--metrics-port", "-5")])
def test_serve_port_out_of_range_names_the_option(repository, tmp_path, option, port):
    server, marker = _stand_in_server(tmp_path, "exit 0")
    args = {"--http-port": str(free_port()), "--grpc-port": str(free_port()), option: port}
    result = run_cli("serve", repository, *[x for kv in args.items() for x in kv], "--server", server)
    assert_one_line_error(result, 2, f"{option} {port}", "65535")
    assert not marker.exists()


def test_serve_with_equal_ports_names_both(repository, tmp_path):
    server, marker = _stand_in_server(tmp_path, "exit 0")
    port = str(free_port())
    result = run_cli("serve", repository, "--http-port", port, "--grpc-port", port, "--server", server)
    assert_one_line_error(result, 2, f"--http-port {port}", f"--grpc-port {port}", "distinct")
    assert not marker.exists()


def test_serve_on_a_busy_port_names_the_option_before_starting(repository, tmp_path):
    server, marker = _stand_in_server(tmp_path, "exit 0")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_cli("serve", repository, "--http-port", port, "--grpc-port", free_port(), "--server", server)
    assert_one_line_error(result, 2, f"--http-port {port}", f"127.0.0.1:{port}")
    assert not marker.exists()


def test_serve_without_any_tritonserver_names_the_cache_and_install(repository, no_server):
    result = _serve(repository)
    assert_one_line_error(result, 2, str(no_server / "triton"), "--install")
    assert not no_server.exists()  # nothing installed without --install


def test_serve_with_a_missing_server_binary_names_it(repository, tmp_path):
    assert_one_line_error(_serve(repository, "--server", tmp_path / "nope"), 2, f"--server {tmp_path / 'nope'}")


def test_a_server_that_fails_at_start_is_one_line(repository, tmp_path):
    """The stand-in exits at once with Triton's kind of error line: exit 2, that line, no traceback."""
    server, marker = _stand_in_server(
        tmp_path, "echo \"E1130 09:00:00.000 1 model_lifecycle.cc:1] failed to load 'acar_head'\"\nexit 1")
    result = _serve(repository, "--server", server, "--ready-timeout", "60")
    line = assert_one_line_error(result, 2, "tritonserver exited (code 1)", "failed to load 'acar_head'")
    assert marker.exists() and "log:" in line
