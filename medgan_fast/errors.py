"""The error every known bad input raises: an argument, file or setting that cannot be used.

Commands (medgan_fast.cli) print it as one line naming what was wrong and exit 1; a library
user catches it as ValueError. DataError, ConfigError, CheckpointError and OutputError are
its kinds.
"""

__all__ = ["DataError", "Interrupted", "MedganFastError", "OutputError", "check_integer"]


class MedganFastError(ValueError):
    """Bad input: the message names the argument or file and what was expected."""


class DataError(MedganFastError):
    """Bad input data: the message names the file (or argument) and what was expected."""


class OutputError(MedganFastError):
    """An output that cannot be written as asked: it exists (and --overwrite was not given),
    its name has the wrong suffix, or its folder cannot be created or written."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the job left behind and how to continue (the command prints it)."""


def check_integer(name: str, value, low: int = 1, error: type[Exception] = ValueError) -> None:
    """Raises `error` naming `name` unless `value` is an int (not a bool) >= `low`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise error(f"{name}: expected an integer >= {low}, got {value!r}")
