"""What a running job says and hears: progress bars, notes, warnings, Ctrl-C.

Jobs (patch extraction, training, generation, evaluation) report through this module, and
the command-line layer (medgan_fast.cli) sets it up, so every command behaves alike:

- progress bars only where someone watches (stderr is a terminal), never with --no-progress;
- notes ("writing runs/x/") go to stderr prefixed with the command's name, and only when a
  command runs (a library call stays quiet);
- Ctrl-C stops the job at its next step even when Python swallowed the KeyboardInterrupt
  (one raised inside a finaliser or weakref callback is only printed as "Exception
  ignored"): :func:`progress` and :func:`check_interrupt` raise it again.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

__all__ = ["check_interrupt", "command_name", "interrupted", "note", "progress", "progress_bar", "show_progress"]

T = TypeVar("T")

_state = {"command": None, "interrupted": False}


def command_name() -> str | None:
    """The running command ("patches", "train", ...), or None in a library call."""
    return _state["command"]


def show_progress(wanted: bool = True) -> bool:
    """Whether a progress bar is drawn: wanted, and stderr is a terminal."""
    return bool(wanted) and sys.stderr.isatty()


def progress_bar(wanted: bool = True, iterable: Iterable | None = None, **options) -> tqdm:
    """A tqdm bar (over `iterable`, or total=, unit=, desc=) drawn only where
    :func:`show_progress` says. A loop over it should call :func:`check_interrupt`."""
    return tqdm(iterable, disable=not show_progress(wanted), **options)


def progress(items: Iterable[T], wanted: bool = True, **options) -> Iterator[T]:
    """`items` with a progress bar (see :func:`progress_bar`), checking for Ctrl-C each step."""
    for item in tqdm(items, disable=not show_progress(wanted), **options):
        check_interrupt()
        yield item


def note(message: str) -> None:
    """One line on stderr, "<command>: <message>", while a command runs."""
    if _state["command"] is not None:
        print(f"{_state['command']}: {message}", file=sys.stderr, flush=True)


def check_interrupt() -> None:
    """Raises KeyboardInterrupt if Ctrl-C was pressed during this command, even when the
    first one was swallowed."""
    if _state["interrupted"]:
        raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether Ctrl-C was pressed during this command."""
    return _state["interrupted"]


def _begin(command: str) -> None:
    _state.update(command=command, interrupted=False)


def _mark_interrupted() -> None:
    _state["interrupted"] = True


def _end() -> None:
    _state.update(command=None, interrupted=False)
