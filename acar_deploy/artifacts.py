"""Atomic artifact writing and content hashes.

Every artifact (export folder, engine, checkpoint, report) is first written to a temporary
sibling path and renamed into place, so an interrupted run never leaves a half-written output,
and an existing output is only replaced when the caller passes ``force=True`` -- and only once the
new one is complete. Temporary names carry the writer's pid; the next run on the same output removes
those of writers that are gone (killed runs), and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError, OutputExistsError
from acar_deploy.jsonout import to_jsonable

TEMP_MARKERS = (".tmp-", ".old-")  # `.NAME.tmp-<pid>-<random>` while writing, `.NAME.old-<pid>` while swapping
_STALE_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-.*)?$")


def check_output_path(out: str | os.PathLike, kind: str = "folder") -> Path:
    """InputError when something on disk is in the way of writing `out` (a `kind`: "folder" or "file").

    A file where a parent folder should be, or a folder where the output file should be (or the
    reverse), would otherwise surface as NotADirectoryError / IsADirectoryError tracebacks after
    all the work was done; this names the path that is in the way before any work starts.
    """
    out = Path(out)
    for parent in reversed(out.parents):
        if parent.exists() and not parent.is_dir():
            raise InputError(f"{out}: {parent} is a file, not a folder; choose another output path or move that file")
    if kind == "file" and out.is_dir():
        raise InputError(f"{out} is a folder, expected a file; choose a file path or remove the folder")
    if kind == "folder" and out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, expected a folder; choose a folder path or remove the file")
    return out


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Delete `.NAME.tmp-<pid>-*` / `.NAME.old-<pid>` siblings of `out` left by killed runs.

    Only those whose writing process is gone: a concurrent live writer's temporary folder is left
    alone. Returns what was removed (the CLI does not print it; docs/errors.md says it happens).
    A `.NAME.old-<pid>` left when a run was killed between its two renames is put back at `out`
    when `out` itself is missing, so the old artifact is never lost.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    removed = []
    for entry in sorted(out.parent.iterdir()):
        match = _STALE_PATTERN.match(entry.name)
        if not match or match.group("name") != out.name or _pid_alive(int(match.group("pid"))):
            continue
        if ".old-" in entry.name and not out.exists() and not out.is_symlink():
            os.replace(entry, out)  # killed between the two renames of a swap: restore the old output
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def check_can_write(out: Path, force: bool, kind: str = "folder") -> None:
    """Fail early (before any work) when `out` cannot be written: exists without force, or blocked.

    Also removes what killed runs left beside `out` (the first thing every writer calls).
    """
    out = check_output_path(out, kind)
    remove_stale_temporaries(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists: pass --force to replace it")


def _temp_prefix(out: Path) -> str:
    """The temp name embeds our pid, so the next run can tell a killed run's leftovers from a live one."""
    return f".{out.name}.tmp-{os.getpid()}-"


def prepare_output(out: str | os.PathLike, force: bool, kind: str = "folder") -> Path:
    """Check `out` can be written, create its parent, remove stale temporaries from killed runs."""
    out = Path(out)
    check_can_write(out, force, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out` in one rename."""
    out = prepare_output(out, force, "folder")
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out), dir=out.parent))
    try:
        yield tmp
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` onto `out`; an existing `out` waits as `.NAME.old-<pid>` between
    the two renames (restored by the next run if this one is killed there) and is then deleted."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def atomic_file(out: str | os.PathLike, force: bool = True, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside `out` for writing; rename it onto `out` when the block ends."""
    out = prepare_output(out, force, "file")
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(out), dir=out.parent)
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
