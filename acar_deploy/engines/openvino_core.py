"""One OpenVINO `Core` per process, and OpenVINO calls that leave the thread's signal stack as it was.

OpenVINO 2026's CPU plugin installs its own alternate signal stack (`sigaltstack`) for the calling
thread when a Core first uses the CPU device, and on teardown puts back the one it saw at creation.
Cores that die out of creation order therefore leave the thread on a freed stack; the next Python
signal handler (they run on the alternate stack: SIGCHLD once torch's DataLoader has had workers,
SIGINT on Ctrl-C) then kills the process with SIGSEGV (si_code SI_KERNEL). Measured here: two Cores
deleted A-then-B leave A's freed stack installed. So every OpenVINO call of ours runs inside
`kept_signal_stack()`, which puts back the stack it found (after collecting the Cores NNCF made),
and our own calls share one Core that lives as long as the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import sys
from collections.abc import Iterator
from typing import Any

from acar_deploy.errors import InputError

OPENVINO_INSTALL_HINT = "pip install 'acar-deploy[openvino]'"


class _SignalStack(ctypes.Structure):
    """`stack_t` of <signal.h> on Linux."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def current_signal_stack() -> tuple[int, int, int] | None:
    """(address, flags, size) of this thread's alternate signal stack; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    stack = _SignalStack()
    if _libc().sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return (stack.ss_sp or 0, stack.ss_flags, stack.ss_size)


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run OpenVINO work; afterwards this thread has the alternate signal stack it had before."""
    before = _SignalStack()
    known = sys.platform.startswith("linux") and _libc().sigaltstack(None, ctypes.byref(before)) == 0
    try:
        yield
    finally:
        gc.collect()  # Cores made inside (NNCF's, a failed compile's) tear down now, not later
        if known:
            before.ss_flags &= ~1  # SS_ONSTACK is a status bit: the call takes 0 or SS_DISABLE (2)
            _libc().sigaltstack(ctypes.byref(before), None)


def import_openvino(purpose: str) -> Any:
    """The `openvino` module, or an InputError naming the extra to install."""
    try:
        import openvino
    except ImportError:
        raise InputError(f"{purpose} needs OpenVINO, which is not installed: {OPENVINO_INSTALL_HINT}") from None
    return openvino


@functools.cache
def _shared_core() -> Any:
    import openvino

    with kept_signal_stack():
        core = openvino.Core()
        core.get_property("CPU", "FULL_DEVICE_NAME")  # loads the CPU plugin now, inside the guard
    return core


def openvino_core(purpose: str) -> Any:
    """The process's OpenVINO Core (an InputError naming the extra when OpenVINO is not installed)."""
    import_openvino(purpose)
    return _shared_core()
