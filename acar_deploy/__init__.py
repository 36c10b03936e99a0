"""acar-deploy: ACAR-Net from PyTorch checkpoint to fast, verified inference engines.

The public model API (`load_model`, `action_scores`) imports torch on first use only, so
commands that do not need torch (e.g. `evaluate`) start quickly.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "action_scores"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from acar_deploy.model.checkpoint import load_model

        return load_model
    if name == "action_scores":
        from acar_deploy.model.scores import action_scores

        return action_scores
    raise AttributeError(f"module 'acar_deploy' has no attribute {name!r}")
