"""Option types shared by the command modules (one definition, so every command spells them alike)."""

from __future__ import annotations

from enum import Enum


class OutputFormat(str, Enum):
    """`--format`: a human table (text) or machine-readable JSON."""

    text = "text"
    json = "json"


class Device(str, Enum):
    """`--device` for commands that run the eager model."""

    cpu = "cpu"
    cuda = "cuda"
