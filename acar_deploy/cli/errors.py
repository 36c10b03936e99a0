"""Map library errors to one-line messages and exit codes, with no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from acar_deploy.errors import AcarDeployError

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Decorate a typer command: AcarDeployError -> 'error: <message>' on stderr, exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AcarDeployError as exc:
            if _caused_by_interrupt(exc):  # e.g. "export failed" raised from a Ctrl-C inside torch
                print("interrupted", file=sys.stderr)
                raise typer.Exit(130) from None
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except Exception as exc:
            # torch's exporter (and other libraries) catch Ctrl-C and re-raise their own error
            # "from" it: that is still an interrupt, not a failure of the command.
            if _caused_by_interrupt(exc):
                print("interrupted", file=sys.stderr)
                raise typer.Exit(130) from None
            raise

    return wrapper  # type: ignore[return-value]


def _caused_by_interrupt(exc: BaseException) -> bool:
    """True when KeyboardInterrupt is in the exception's __cause__/__context__ chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
