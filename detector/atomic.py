"""Files and folders that survive a crash or a power loss: whole or absent, never half-written.

A rename alone is atomic only while the machine stays up: after a power loss the new name may point at a file whose
data never reached the disk, or the rename itself may be lost. So every writer here does what trusted writers do:
write under a temporary name in the same folder, fsync the file (every file, for a folder), rename it into place,
then fsync the folder that holds the name. Checkpoints, model folders, Parquet shards, stream state and the final
collection files all go through here.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


def sync_file(path: str | os.PathLike) -> None:
    """Flush one file's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(path: str | os.PathLike) -> None:
    """Flush a folder's entries (the names created, renamed or removed in it) to the disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and Windows) cannot fsync a folder; the rename is then as durable as it gets
        pass
    finally:
        os.close(fd)


def sync_tree(folder: str | os.PathLike) -> None:
    """fsync every file and folder under `folder`, the folder itself last: before it is renamed into place."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            sync_file(Path(root) / name)
        sync_directory(root)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path` to write the whole file to; when the block ends without an error the file
    is fsynced, renamed to `path` and its folder fsynced. On an error the temporary file goes and `path` is untouched."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield temporary
        sync_file(temporary)
        os.replace(temporary, path)
        sync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """`path` holds `text` whole, after a crash or a power loss too (`atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
