"""The one command-line layer: every `python -m medgan_fast.<command>` runs through :func:`main`.

A command module gives a parser and a job:

    def build_parser() -> argparse.ArgumentParser: ...   # its own arguments
    def run(args) -> str: ...                            # does the work, returns the summary
    def main(argv=None): cli.main("patches", build_parser, run, argv)

and gets, the same in every command:

- exit codes 0 done, 1 error, 2 usage, 130 interrupted;
- a known error (medgan_fast.errors.MedganFastError: DataError, ConfigError, ...) as one line
  on stderr, "<command>: error: <message>", never a traceback (--debug shows it);
- --no-progress, and progress bars only on a terminal (medgan_fast.console);
- Ctrl-C stops promptly: "<command>: interrupted; <what was left>" and exit 130 (a job says
  what was left by raising medgan_fast.errors.Interrupted); a second Ctrl-C is not needed;
- our own warnings once, as "<command>: warning: <message>".
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
import warnings
from typing import Callable, NoReturn

from . import console
from .errors import Interrupted, MedganFastError

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "Interrupted", "UsageError", "main", "one_line"]

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UsageError(Exception):
    """Arguments that do not go together (argparse cannot tell): usage, one line, exit 2."""


def require(args: argparse.Namespace, prog: str, *flags: str) -> None:
    """Raises UsageError naming those of `flags` (e.g. "--out") that were not given; for
    options that are required unless --help is asked (argparse would refuse --help too)."""
    missing = [flag for flag in flags if getattr(args, flag.lstrip("-").replace("-", "_")) is None]
    if missing:
        raise UsageError(f"{', '.join(missing)} required (see {prog} --help)")


def one_line(error: BaseException) -> str:
    """The message of a known error as one line. An error raised in a DataLoader worker comes
    back wrapped ("Caught DataError in DataLoader worker process 0. Original Traceback ...");
    its message is the traceback's last line."""
    text = str(error).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        name = f"{type(error).__module__}.{type(error).__name__}: "
        text = last[len(name):] if last.startswith(name) else last.split(": ", 1)[-1]
    return " ".join(text.split("\n"))


def main(command: str, build_parser: Callable[[], argparse.ArgumentParser], run: Callable[[argparse.Namespace], object],
         argv: list[str] | None = None) -> NoReturn:
    """Parses argv (default sys.argv[1:]), runs the job, prints its summary, exits."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    _add_common_arguments(parser)
    args = parser.parse_args(argv)   # usage errors: argparse's message, exit 2
    args.argv = argv
    console._begin(command)
    previous_handler = signal.signal(signal.SIGINT, _on_sigint)
    try:
        with warnings.catch_warnings():
            _say_our_warnings_once(command)
            summary = run(args)
        if console.interrupted():   # a Ctrl-C swallowed during the last step: the work is done
            print(summary)
            print(f"{command}: interrupted as it finished; the outputs above are complete", file=sys.stderr)
            _exit(EXIT_INTERRUPTED)
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"{command}: error: {error}", file=sys.stderr)
        _exit(EXIT_USAGE)
    except KeyboardInterrupt as interrupt:
        _report_interrupt(command, interrupt, args.debug)
    except MedganFastError as error:
        if console.interrupted():
            _report_interrupt(command, error, args.debug)
        if args.debug:
            traceback.print_exc()
        print(f"{command}: error: {one_line(error)}", file=sys.stderr)
        _exit(EXIT_ERROR)
    except Exception as error:
        # A Ctrl-C that lands inside an extension (matplotlib's pybind11 layer, h5py) can
        # come out as some other error; after a Ctrl-C it is the interrupt, not a bug.
        if console.interrupted():
            _report_interrupt(command, error, args.debug)
        raise
    finally:
        console._end()
        signal.signal(signal.SIGINT, previous_handler)
    if summary is not None:
        print(summary)
    sys.exit(0)


def _add_common_arguments(parser: argparse.ArgumentParser, default=None) -> None:
    """--no-progress and --debug on `parser` and on each of its subcommands (segment train ...),
    whose copies leave a value given before the subcommand as it is."""
    common = parser.add_argument_group("every command")
    keep = {} if default is None else {"default": default}
    common.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars (they are drawn only on a terminal anyway)", **keep)
    common.add_argument("--debug", action="store_true", help="on an error, show the full traceback", **keep)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _add_common_arguments(subparser, default=argparse.SUPPRESS)


def _report_interrupt(command: str, error: BaseException, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    detail = str(error) if isinstance(error, Interrupted) else ""
    print(f"{command}: interrupted" + (f"; {detail}" if detail else ""), file=sys.stderr)
    _exit(EXIT_INTERRUPTED)


def _exit(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.exit(code)


def _on_sigint(signum, frame) -> None:
    # Remembered as well as raised: a KeyboardInterrupt raised inside a finaliser is
    # swallowed by Python, and console.progress / check_interrupt raise it again.
    console._mark_interrupted()
    raise KeyboardInterrupt


def _say_our_warnings_once(command: str) -> None:
    warnings.filterwarnings("once", module=r"medgan_fast(\.|$)")
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if "medgan_fast" in filename.replace("\\", "/").split("/site-packages/")[-1]:
            print(f"{command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
