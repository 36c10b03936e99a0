"""Error types the CLI maps to exit codes: bad input exits 2, a failed gate exits 1.

Library code raises these with a message that already names the file (and line) and what to do,
so the CLI can print exactly one line and no traceback.
"""

from __future__ import annotations


class AcarDeployError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 2


class InputError(AcarDeployError):
    """A file or argument given by the user is missing, malformed or does not fit."""


class OutputExistsError(InputError):
    """An output path exists and `--force` was not given."""


class MissingExtraError(InputError):
    """An optional dependency (e.g. TensorRT from the `[gpu]` extra) is not installed."""

    def __init__(self, package: str, extra: str, what: str):
        super().__init__(
            f"{what} needs the '{package}' package, which is not installed: "
            f"pip install 'acar-deploy[{extra}]' (on a machine with CUDA)"
        )
        self.package = package
        self.extra = extra


class GateFailedError(AcarDeployError):
    """A validation or parity threshold was exceeded; the report explains which."""

    exit_code = 1


def check_range(option: str, value: float | None, minimum: float | None = None, maximum: float | None = None) -> None:
    """InputError '<option> must be >= minimum (got value)' -- settings dataclasses call this in
    __post_init__, so the Python API refuses what the CLI refuses (None: option not given)."""
    if value is None:
        return
    if value != value:  # NaN
        raise InputError(f"{option} must be a number (got {value})")
    if minimum is not None and value < minimum:
        raise InputError(f"{option} must be >= {minimum} (got {value})")
    if maximum is not None and value > maximum:
        raise InputError(f"{option} must be <= {maximum} (got {value})")
