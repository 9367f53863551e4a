"""Checks on what a job will write, made before any work: an existing output is never
silently mixed or replaced, and a name or folder that cannot work fails at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputError

__all__ = ["HDF5_SUFFIXES", "check_output_file", "check_output_folder", "clear_png_folder"]

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
