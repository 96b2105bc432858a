"""The typer app and what every command shares: options, one-line errors, progress, output.

Bad input of any kind ends in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sim.errors import ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Predict (simulate) and measure (run) streaming multi-agent LLM inference.",
)
err_console = Console(stderr=True)

Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a scenario field: dotted.path=value (repeatable)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
TraceOption = Annotated[
    Path | None, typer.Option("--trace", help="Write the run's trace (JSON lines) here.")
]

T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def user_error(exc: ConfigError | OSError) -> str:
    """One line: a config error's own words, or the file the system refused and why (a path
    that passed the up-front checks but cannot be written or read after all, e.g. a
    read-only or special filesystem, a full disk)."""
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def run_script(main: Callable[[], None]) -> None:
    """Run a script's ``main`` (the benchmarks) as the CLI runs a command: a user error is one
    line on stderr and exit 2, Ctrl-C exit 130."""
    try:
        main()
    except (ConfigError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename is None:
            raise
        print(f"error: {user_error(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def guarded(command: Callable[..., T]) -> Callable[..., T]:
    """Turn user errors into one line + exit 2, and Ctrl-C into exit 130."""
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except (ConfigError, OSError) as exc:
            if isinstance(exc, OSError) and exc.filename is None:
                raise  # not a file the user named: a bug, with its traceback
            raise fail(user_error(exc)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; everything recorded so far is kept")
            raise typer.Exit(130) from None

    return wrapper


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (when it is a terminal); yields an update callback."""
    if not enabled or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def emit(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        from reports.table import print_summary

        print_summary(summary)
