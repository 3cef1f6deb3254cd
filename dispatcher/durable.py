"""Durable file operations: the one place that knows what POSIX makes durable.

A power cut may drop any write that was not fsync'd and any directory entry
(create, rename, unlink, mkdir) whose directory was not fsync'd afterwards;
ext4's habit of ordering some of these is not something to rely on. Every
file holdscan writes (journal entries, quarantine entries, new queue files,
the status file) goes through these functions, so the order is written once:

    write all bytes (looping over short writes) -> fsync the file
    -> rename into place -> fsync the directory (both, for a move)
"""

from __future__ import annotations

import os
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a signal, a full pipe, a quota): loop."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the directory's entries (creations, renames, unlinks in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int = 0o600,
               owner: tuple[int, int] | None = None, sync_dir: bool = True) -> None:
    """Atomically replace `path` with `data`, durably: a temporary name in the same
    directory, all bytes written and fsync'd, renamed into place, directory fsync'd.
    A reader sees the old file or the new one, never a part of either."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_synced(tmp, os.O_TRUNC, data, mode, owner)
    os.rename(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


def _write_synced(path: Path, how: int, data: bytes, mode: int,
                  owner: tuple[int, int] | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | how | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        if owner:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int = 0o700, owner: tuple[int, int] | None = None) -> None:
    """mkdir -p, durably: each directory created is fsync'd into its parent."""
    missing = []
    d = path
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue
        if owner:
            os.chown(d, *owner)
        fsync_dir(d.parent)
