"""The lock files that keep a second writer out of a cache folder: ``lock``, held by a pass (its
process 0 under torch.distributed), and ``lock.rank{r}``, held by process ``r > 0``, so the
processes of one pass never refuse each other."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .format import LOCK_FILE, RANK_FILE_PATTERN

try:
    import fcntl
except ImportError:  # Windows: no flock, so passes there are not guarded against a second writer
    fcntl = None


def rank_lock_name(rank: int) -> str:
    """The name of the lock file held by process ``rank > 0`` of a distributed pass."""
    return f"lock.rank{rank}"


def _lock_file(file: Path) -> int:
    """Open ``file`` and lock it exclusively; refuse at once, naming the holder, if it is held."""
    try:
        handle = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise OSError(error.errno, f"cannot create the lock file {file} ({error.strerror}); a "
                      "cache pass needs a writable folder (DecompositionCache.open reads a "
                      "finished cache without one).") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(handle, 256, 0).decode(errors="replace").strip()
        os.close(handle)
        raise RuntimeError(f"the cache at {file.parent} is being written by another process or "
                           f"thread ({holder or 'it has not written its pid yet'}); wait for it "
                           "to finish, or write to another folder.") from None
    except OSError as error:
        os.close(handle)
        raise OSError(error.errno, f"cannot lock {file} ({error.strerror}): this file system "
                      "does not support flock; write the cache on a local disk.") from None
    return handle


@contextmanager
def writer_lock(path: Path, name: str = LOCK_FILE, role: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path/name`` for a whole pass; refuse at once if it is held.

    A pass holds ``lock``; under torch.distributed its process ``r > 0`` holds ``lock.rank{r}``,
    so the processes of one pass never refuse each other. ``role`` is written into the lock file
    after the holder's pid and host, for the message of a refused writer.
    """
    if fcntl is None:
        yield
        return
    handle = _lock_file(path / name)
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"pid {os.getpid()} on host {socket.gethostname()}{role}\n".encode(), 0)
        yield
    finally:
        os.close(handle)  # releases the lock


def check_rank_locks(path: Path) -> None:
    """Refuse while a process of an earlier distributed pass still holds its ``lock.rank{r}``
    (its process 0 gone, it may still write)."""
    if fcntl is None:
        return
    for file in sorted(path.glob("lock.rank*")):
        if RANK_FILE_PATTERN.fullmatch(file.name):
            os.close(_lock_file(file))
