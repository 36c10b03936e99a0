"""Frame sizes as the CLI and the library spell them: HEIGHTxWIDTH, e.g. 256x341 (one parser)."""

from __future__ import annotations

import re
from typing import NamedTuple

from acar_deploy.errors import InputError


class FrameSize(NamedTuple):
    """A frame size in pixels, height first (the order of the tensors' H, W dimensions)."""

    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"


def parse_frame_size(text: str | FrameSize, option: str = "--size") -> FrameSize:
    """'256x341' -> FrameSize(height=256, width=341); anything else is an InputError naming `option`."""
    if isinstance(text, tuple):
        return FrameSize(*text)
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not match:
        raise InputError(f"{option} {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 256x341")
    size = FrameSize(int(match.group(1)), int(match.group(2)))
    if size.height < 1 or size.width < 1:
        raise InputError(f"{option} {text!r}: HEIGHTxWIDTH must both be >= 1, e.g. 256x341")
    return size
