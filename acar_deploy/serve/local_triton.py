"""Run a Triton server on this machine for a model repository: the bundled one or a `tritonserver` on PATH.

The bundled server is tritonserver 2.51 with the Python backend from the `nvidia-pytriton` wheel,
pip-installed with --no-deps into a cache folder (its numpy<2 pin stays out of our environment). Three
things make it work on a plain Linux machine, all set up here, once, in the cache:
- the Python-backend stub built for this Python is copied into `backends/python/`, and it is started with
  this interpreter's libpython on LD_LIBRARY_PATH (else the system's older libpython3.X is picked and
  multiprocessing fails);
- the stub runs in its own small venv (first `python` on PATH) with numpy<2: with numpy 2 the stub
  receives corrupted tensors without any error;
- `backends/onnxruntime/model.py` is a stand-in for the onnxruntime backend (see
  `triton_onnxruntime_standin.py`), which only NGC containers ship.
A server found on PATH (e.g. in the NGC container) is started as it is, with its own backends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from acar_deploy.errors import InputError
from acar_deploy.serve.triton import check_model_repository

PYTRITON_REQUIREMENT = "nvidia-pytriton==0.7.0"  # bundles tritonserver 2.51 and the Python backend
# The stub environment: numpy<2 for the stub's pybind11 tensors, the CPU onnxruntime for the stand-in.
STUB_REQUIREMENTS = ("numpy==1.26.4", "onnxruntime==1.32.0")
STANDIN_SOURCE = Path(__file__).with_name("triton_onnxruntime_standin.py")
_READY_MARKER = "prepared.txt"
_INSTALL_TIMEOUT_S = 900


def default_cache_dir() -> Path:
    """`$ACAR_DEPLOY_CACHE/triton`, else `~/.cache/acar-deploy/triton`."""
    root = os.environ.get("ACAR_DEPLOY_CACHE") or Path.home() / ".cache" / "acar-deploy"
    return Path(root) / "triton"


@dataclass(frozen=True)
class TritonRuntime:
    """A tritonserver binary and how to start it."""

    server: Path
    backend_dir: Path | None  # None: the server's own default
    env: dict[str, str] = field(default_factory=dict)  # variables set on top of os.environ
    origin: str = ""


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def bundled_dir(cache_dir: Path | None = None) -> Path:
    """One prepared tree per pytriton version and Python minor version."""
    version = PYTRITON_REQUIREMENT.split("==")[1]
    return (cache_dir or default_cache_dir()) / f"pytriton-{version}-py{_python_tag()}"


def _record() -> str:
    """What the prepared tree depends on: the pins and the base interpreter (any venv of it shares the tree)."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    return "\n".join([PYTRITON_REQUIREMENT, *STUB_REQUIREMENTS, sys.version.split()[0], libdir]) + "\n"


def _bundled_runtime(root: Path) -> TritonRuntime:
    server_root = root / "server" / "pytriton" / "tritonserver"
    stub_bin = root / "stub-venv" / "bin"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env = {
        "PATH": os.pathsep.join([str(stub_bin), os.environ.get("PATH", "")]),
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p),
    }
    return TritonRuntime(server_root / "bin" / "tritonserver", server_root / "backends", env,
                         f"bundled tritonserver ({PYTRITON_REQUIREMENT}) in {root}")


def pip_install(args: list[str], what: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"installing {what} took over {_INSTALL_TIMEOUT_S} s: check the package index") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"installing {what} failed ({last}); command: {' '.join(command)}")


def _sync_standin(root: Path) -> None:
    """The stand-in follows this package's version: re-copied whenever it differs."""
    target = root / "server" / "pytriton" / "tritonserver" / "backends" / "onnxruntime" / "model.py"
    if not target.is_file() or target.read_bytes() != STANDIN_SOURCE.read_bytes():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(STANDIN_SOURCE, tmp)
        os.replace(tmp, target)


def _build_bundled(tmp: Path) -> None:
    pip_install(["--no-deps", "--target", str(tmp / "server"), PYTRITON_REQUIREMENT], PYTRITON_REQUIREMENT)
    server_root = tmp / "server" / "pytriton" / "tritonserver"
    stub = server_root / "python_backend_stubs" / _python_tag() / "triton_python_backend_stub"
    if not stub.is_file():
        raise InputError(f"{PYTRITON_REQUIREMENT} has no Python-backend stub for Python {_python_tag()} ({stub})")
    # Same folder depth as python_backend_stubs/3.X/, so the stub's relative RPATH still finds its libraries.
    shutil.copy2(stub, server_root / "backends" / "python" / stub.name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "stub-venv")], check=True,
                   capture_output=True, timeout=120)
    site = tmp / "stub-venv" / "lib" / f"python{_python_tag()}" / "site-packages"
    pip_install(["--target", str(site), *STUB_REQUIREMENTS], "the stub environment " + " ".join(STUB_REQUIREMENTS))
    (tmp / _READY_MARKER).write_text(_record())


def prepare_bundled(cache_dir: Path | None = None, install: bool = True,
                    announce: Callable[[str], None] | None = None) -> TritonRuntime:
    """The bundled server, installed into the cache on first use (needs the package index once)."""
    root = bundled_dir(cache_dir)
    marker = root / _READY_MARKER
    if not (marker.is_file() and marker.read_text() == _record()):
        if not install:
            raise InputError(
                f"no tritonserver on PATH and no bundled server in {root}: run `acar-deploy serve --install` "
                f"(pip-installs {PYTRITON_REQUIREMENT} and a numpy<2 stub environment there)"
            )
        if announce:
            announce(f"installing the bundled Triton server into {root} (once; about 250 MB)")
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            _build_bundled(tmp)
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _sync_standin(root)
    return _bundled_runtime(root)


def find_runtime(server: Path | None = None, cache_dir: Path | None = None, install: bool = False,
                 announce: Callable[[str], None] | None = None) -> TritonRuntime:
    """`server` if given, else `tritonserver` on PATH (used as it is), else the bundled server."""
    if server is not None:
        if not Path(server).is_file():
            raise InputError(f"--server {server}: no such file")
        return TritonRuntime(Path(server), None, {}, f"{server}")
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonRuntime(Path(on_path), None, {}, f"tritonserver on PATH ({on_path})")
    return prepare_bundled(cache_dir, install=install, announce=announce)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServeSettings:
    repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int | None = None  # None: metrics off (Triton's metrics port otherwise binds every interface)
    ready_timeout_s: float = 180.0
    exit_timeout_s: int = 10  # how long Triton waits for in-flight requests when stopping
    log_verbose: int = 0
    stream_log: bool = False  # server log to this process's stderr instead of a log file

    def __post_init__(self) -> None:
        if not (Path(self.repository) / ".").is_dir():
            raise InputError(f"{self.repository}: not a folder; write one with `acar-deploy triton EXPORT --out REPO`")
        ports = self.ports()
        for option, port in ports.items():
            if not 0 < port < 65536:
                raise InputError(f"{option} {port}: not a port number; use one in 1..65535")
        if len(set(ports.values())) != len(ports):
            raise InputError(f"{', '.join(f'{o} {p}' for o, p in ports.items())}: the ports must be distinct")
        check_model_repository(Path(self.repository))

    def ports(self) -> dict[str, int]:
        """option -> port of every port the server listens on."""
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port}
        if self.metrics_port is not None:
            ports["--metrics-port"] = self.metrics_port
        return ports


def check_ports_free(settings: ServeSettings) -> None:
    """InputError naming the option when something already listens on one of the server's ports (Triton
    would otherwise start, load every model and then exit with a bind error in its log)."""
    for option, port in settings.ports().items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no owner
            try:
                sock.bind((settings.host, port))
            except OSError as exc:
                raise InputError(f"{option} {port}: {settings.host}:{port} is not free ({exc.strerror}); "
                                 "choose another port or stop what listens there") from None


@dataclass(frozen=True)
class Endpoints:
    http: str
    grpc: str
    metrics: str | None
    models: tuple[tuple[str, str], ...]  # (name, state) from the repository index


class TritonServerProcess:
    """One tritonserver process (in its own process group, so stopping it also stops its stubs)."""

    def __init__(self, settings: ServeSettings, runtime: TritonRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._log = None

    def command(self) -> list[str]:
        s = self.settings
        command = [
            str(self.runtime.server),
            f"--model-repository={Path(s.repository).resolve()}",
            f"--http-address={s.host}", f"--http-port={s.http_port}",
            f"--grpc-address={s.host}", f"--grpc-port={s.grpc_port}",
            f"--exit-timeout-secs={s.exit_timeout_s}", f"--log-verbose={s.log_verbose}",
        ]
        if s.metrics_port is None:
            command.append("--allow-metrics=false")
        else:
            command += ["--allow-metrics=true", f"--metrics-address={s.host}", f"--metrics-port={s.metrics_port}"]
        if self.runtime.backend_dir is not None:
            command.append(f"--backend-directory={self.runtime.backend_dir}")
        return command

    def start(self) -> TritonServerProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(self.runtime.env)
        if self.settings.stream_log:
            out = None
        else:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            self.log_path, self._log = Path(name), os.fdopen(fd, "wb")
            out = self._log
        self.process = subprocess.Popen(
            self.command(), env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        return self

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        return f"http://{host}:{self.settings.http_port}"

    def last_error(self) -> str:
        """The log's last error line (Triton prefixes them with 'E'), and where the whole log is."""
        if self.log_path is None or not self.log_path.is_file():
            return "see the server log above"
        lines = self.log_path.read_text(errors="replace").splitlines()
        errors = [line for line in lines if line.startswith("E")] or lines[-1:] or ["(empty log)"]
        return f"{errors[-1].strip()} (log: {self.log_path})"

    def wait_ready(self) -> Endpoints:
        """Poll /v2/health/ready until every model is ready; fail if the server exits or time runs out."""
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise InputError(f"tritonserver exited (code {code}) before it was ready: {self.last_error()}")
            if _http_status(f"{self.base_url}/v2/health/ready") == 200:
                return self.endpoints()
            time.sleep(0.25)
        self.stop()
        raise InputError(f"tritonserver was not ready within {self.settings.ready_timeout_s:.0f} s: "
                         f"{self.last_error()}")

    def endpoints(self) -> Endpoints:
        import json

        s = self.settings
        request = urllib.request.Request(f"{self.base_url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own local server
            index = json.loads(response.read())
        models = tuple(sorted((m["name"], m.get("state", "")) for m in index))
        metrics = None if s.metrics_port is None else f"http://{s.host}:{s.metrics_port}/metrics"
        return Endpoints(f"{s.host}:{s.http_port}", f"{s.host}:{s.grpc_port}", metrics, models)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, wait (Triton's exit timeout plus a margin), then SIGKILL the whole process group."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s if timeout_s is not None else self.settings.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._reap()
        self._signal(signal.SIGKILL)  # stubs left in the group, if any
        self._close_log()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (what a crash looks like to clients)."""
        if self.process is not None:
            self._signal(signal.SIGKILL)
            self._reap()
        self._close_log()

    def _reap(self) -> None:
        """Wait for a SIGKILLed server. On a loaded machine tearing down its memory can take longer than
        a fixed wait; an exception here would skip the caller's clean-up, so wait without raising."""
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            pass

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)  # the group Popen(start_new_session=True) made: ours only
        except (ProcessLookupError, PermissionError):
            pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> TritonServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own local server
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def serve(settings: ServeSettings, runtime: TritonRuntime,
          on_ready: Callable[[Endpoints, Path | None], None]) -> int:
    """Start, wait for readiness, report (endpoints, log file), then run until Ctrl-C or SIGTERM (stopping
    the server cleanly, exit code returned) or until the server exits by itself (an InputError)."""
    check_ports_free(settings)
    server = TritonServerProcess(settings, runtime)
    # SIGINT too: a shell starts background commands with SIGINT ignored, and Python keeps that.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        on_ready(server.wait_ready(), server.log_path)
        while server.process.poll() is None:
            time.sleep(0.5)
        raise InputError(f"tritonserver exited with code {server.process.returncode}: {server.last_error()}")
    except KeyboardInterrupt:
        return server.stop() or 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
