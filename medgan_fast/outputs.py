"""What jobs write, and how: checks made before any work (an existing output is never
silently mixed or replaced, and a name or folder that cannot work fails at once), and
atomic writes (:class:`AtomicPath`, :func:`write_json`: a file appears only when complete).
"""

from __future__ import annotations

import glob
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import OutputError

__all__ = ["HDF5_SUFFIXES", "AtomicPath", "check_output_file", "check_output_folder", "clear_png_folder",
           "write_json"]

HDF5_SUFFIXES = (".h5", ".hdf5")


def check_output_file(path: str | Path, argument: str, *, suffixes: tuple[str, ...] = (),
                      overwrite: bool = False) -> Path:
    """`path` as a Path if a file can be written there: its suffix is one of `suffixes` (when
    given), it does not exist unless `overwrite`, and its folder exists or can be created.

    Raises:
        OutputError: naming `argument` (e.g. "--out") and what is wrong.
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{argument} {path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise OutputError(f"{argument} {path}: is a folder; expected a file name such as "
                          f"{path / ('out' + (suffixes[0] if suffixes else ''))}")
    if path.exists() and not overwrite:
        raise OutputError(f"{argument} {path}: already exists; give --overwrite to replace it")
    _check_folder_writable(path.parent, argument, path)
    return path


def check_output_folder(path: str | Path, argument: str, *, overwrite: bool = False, pattern: str = "*.png") -> Path:
    """`path` as a Path if a folder of `pattern` files can be written there: it is not a file,
    holds no such files unless `overwrite`, and it or its nearest existing parent is writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{argument} {path}: is a file; expected a folder")
    count = sum(1 for _ in path.glob(pattern)) if path.is_dir() and not overwrite else 0
    if count:
        raise OutputError(f"{argument} {path}: already holds {count} {pattern} file(s); give --overwrite to "
                          "replace them, or another folder")
    _check_folder_writable(path, argument, path)
    return path


def clear_png_folder(path: Path, pattern: str = "*.png") -> int:
    """Deletes the previous set (`pattern` files) from an output folder; how many."""
    old = sorted(path.glob(pattern)) if path.is_dir() else []
    for file in old:
        file.unlink()
    return len(old)


def _check_folder_writable(folder: Path, argument: str, path: Path) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{argument} {path}: {existing} is a file, so folder {folder} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{argument} {path}: folder {existing} is not writable")


# ---------------------------------------------------------------------------------------
# Atomic writes

def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


class AtomicPath:
    """A temporary path beside `path` that becomes `path` only when complete.

    As a context manager it renames on success and deletes the temporary file on any
    error (KeyboardInterrupt included); :meth:`commit` and :meth:`discard` do the same
    by hand.

    >>> with AtomicPath("out.png") as tmp:   # doctest: +SKIP
    ...     image.save(tmp)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Same folder, so os.replace is a rename on one file system (atomic).
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode

    @staticmethod
    def discard_leftovers(path: str | Path, names: str | None = None) -> None:
        """Deletes the temporaries that an interrupted write of `path` left (with `names`, a
        glob such as "*.png": of those files in folder `path`). Ctrl-C can land between a
        temporary's creation and the moment its owner knows its name."""
        path = Path(path)
        folder, pattern = (path, names) if names is not None else (path.parent, glob.escape(path.name))
        for tmp in folder.glob(f".{pattern}.*.tmp"):
            tmp.unlink(missing_ok=True)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_json(record: dict[str, Any], path: str | Path) -> Path:
    """`record` as indented JSON at `path`, written to a temporary name and renamed (NaN and
    infinities, which JSON lacks, as strings)."""
    path = Path(path)
    with AtomicPath(path) as tmp:
        tmp.write_text(json.dumps(_plain(record), indent=2) + "\n", encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value
