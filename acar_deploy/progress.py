"""The one progress bar of the package: rich on stderr, drawn only on a terminal, silent when disabled.

Library functions take `progress: bool` and open `progress_bar(progress)`; the CLI passes
`--format text` as True and `--format json` as False, so JSON output is never mixed with a bar.
The object is a `rich.progress.Progress` in every case (add_task / advance / update / console.print),
so callers need no "no progress" twin: when disabled it draws nothing and its console prints nothing.
"""

from __future__ import annotations

from typing import Any


def progress_bar(enabled: bool = True, *fields: str) -> Any:
    """A transient `rich.progress.Progress` on stderr (a context manager).

    `fields` are extra column templates over task fields, e.g. "loss {task.fields[loss]:.4f}".
    Not a terminal: no bar, but `console.print` still writes (logs keep their lines). Disabled:
    nothing at all.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, quiet=not enabled)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               *(TextColumn(f) for f in fields), TimeElapsedColumn()]
    return Progress(*columns, console=console, transient=True, disable=not (enabled and console.is_terminal))

