import hashlib

import pytest

from acar_deploy.artifacts import atomic_dir, atomic_file, sha256_file
from acar_deploy.errors import OutputExistsError


def test_atomic_dir_replaces_only_with_force(tmp_path):
    out = tmp_path / "art"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(OutputExistsError, match="--force"):
        with atomic_dir(out):
            pass
    with atomic_dir(out, force=True) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temp or backup folders left


def test_atomic_dir_failure_keeps_old_output(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, force=True) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert (out / "keep.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_atomic_file_and_hash(tmp_path):
    out = tmp_path / "f.bin"
    with atomic_file(out) as fh:
        fh.write(b"abc")
    assert sha256_file(out) == hashlib.sha256(b"abc").hexdigest()
