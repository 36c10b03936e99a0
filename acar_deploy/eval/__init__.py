"""AVA frame-mAP evaluation (no torch: importable and fast on machines without it)."""

from acar_deploy.eval.frame_map import FrameMapResult, Protocol, frame_map

__all__ = ["FrameMapResult", "Protocol", "frame_map"]
