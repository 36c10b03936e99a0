"""Atomic artifact writing and content hashes.

Every artifact (export folder, engine, checkpoint, report) is first written to a temporary
sibling path and renamed into place, so an interrupted run never leaves a half-written output,
and an existing output is only replaced when the caller passes ``force=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from acar_deploy.errors import OutputExistsError
from acar_deploy.jsonout import to_jsonable


def check_can_write(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists: pass --force to replace it")


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out` in one rename."""
    out = Path(out)
    check_can_write(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(out: str | os.PathLike, force: bool = True, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside `out` for writing; rename it onto `out` when the block ends."""
    out = Path(out)
    check_can_write(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_json(out: str | os.PathLike, data: Any, force: bool = True) -> None:
    with atomic_file(out, force=force, mode="w") as fh:
        json.dump(to_jsonable(data), fh, indent=2, sort_keys=False)
        fh.write("\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
