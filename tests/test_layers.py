"""The import-layer contract (pyproject.toml [tool.importlinter]) holds, and would catch a violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "acar_deploy", tree / "acar_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_the_layer_contract(tmp_path):
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_a_model_module_importing_engines_breaks_the_contract(tmp_path):
    tree = _copy(tmp_path)
    scores = tree / "acar_deploy" / "model" / "scores.py"
    scores.write_text(scores.read_text() + "\nfrom acar_deploy.engines import settings as _settings  # noqa: E402\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "acar_deploy.model is not allowed to import acar_deploy.engines" in result.stdout
    assert "acar_deploy.model.scores -> acar_deploy.engines.settings" in result.stdout
