"""What the user sees: progress bars, tables and one-line messages (rich), or nothing with quiet."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


class Advance(Protocol):
    def __call__(self, n: int = 1, **fields: object) -> None: ...


class Reporter:
    """Console output for the library; `quiet=True` keeps only warnings and errors."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        # Progress and chatter go to stderr so that stdout stays clean for results.
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.out = Console(file=sys.stdout, highlight=False, soft_wrap=True)

    def info(self, msg: str) -> None:
        """A line of information, hidden by --quiet."""
        if not self.quiet:
            self.console.print(msg, markup=False)

    def warn(self, msg: str) -> None:
        """A warning, always shown."""
        self.console.print(f"warning: {msg}", style="yellow", markup=False)

    def result(self, msg: str) -> None:
        """A result line on stdout (e.g. the suggested LR), always shown."""
        self.out.print(msg, markup=False)

    def table(self, table: Table) -> None:
        """Print a rich table, hidden by --quiet."""
        if not self.quiet:
            self.console.print(table)

    def epoch_row(self, row: dict, seconds: float) -> None:
        """One line of the per-epoch table (header before the first)."""
        if self.quiet:
            return
        if not getattr(self, "_header", False):
            self.console.print(f"{'stage':<10}{'epoch':>6}{'train_loss':>12}{'valid_loss':>12}{'accuracy':>10}{'f1_micro':>10}{'seconds':>9}", style="bold")
            self._header = True
        valid = (f"{row['valid_loss']:>12.4f}{row['accuracy']:>10.4f}{row['f1_micro']:>10.4f}" if "f1_micro" in row
                 else f"{'-':>12}{'-':>10}{'-':>10}")  # a final fit on all the data is not validated
        self.console.print(f"{row['stage']:<10}{row['epoch']:>6}{row['train_loss']:>12.4f}{valid}{seconds:>9.1f}",
                           markup=False)

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Advance]:
        """A transient progress bar; yields a function that advances it."""
        # Bars only on a terminal: in logs and CI they would be noise.
        if self.quiet or total <= 0 or not self.console.is_terminal:
            yield lambda n=1, **fields: None
            return
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with bar:
            task = bar.add_task(description, total=total, extra="")

            def advance(n: int = 1, **fields: object) -> None:
                extra = " ".join(f"{k}={v}" for k, v in fields.items())
                bar.update(task, advance=n, extra=extra)

            yield advance


SILENT = Reporter(quiet=True)


class Muted(Reporter):
    """Nothing at all: the other processes of a distributed run (rank 0 speaks for them)."""

    def __init__(self):
        super().__init__(quiet=True)

    def warn(self, msg: str) -> None:
        pass

    def result(self, msg: str) -> None:
        pass
