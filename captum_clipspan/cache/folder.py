"""A cache folder made ready for a pass: refused when it holds other files or another pass,
repaired when only its ``meta.json`` was lost, and its files created with their disk space
reserved before any row is written."""

from __future__ import annotations

import errno
import math
import os
import shutil
from pathlib import Path

import numpy as np

from .batches import Rows
from .checksums import unwritten_rows
from .format import (
    CHECKSUMS,
    LOCK_FILE,
    META_FILE,
    META_KEYS,
    OWNED_FILES,
    RANK_FILE_PATTERN,
    REBUILD,
    DamagedFile,
    check_arrays,
    load_meta,
    pass_identity,
    write_json_atomic,
)
from .progress import check_progress, load_progress, rank_progress_files


def check_target(path: Path) -> None:
    """Refuse a path that is a file or a folder holding anything but cache files."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"the cache path {path} is a file; give a new or empty folder.")
    if path.is_dir():
        foreign = sorted(entry.name for entry in path.iterdir()
                         if entry.name not in OWNED_FILES and entry.name != LOCK_FILE
                         and not RANK_FILE_PATTERN.fullmatch(entry.name))
        if foreign:
            more = ", ..." if len(foreign) > 3 else ""
            raise ValueError(f"{path} exists and is not an empty folder or a decomposition cache "
                             f"(it holds {', '.join(foreign[:3])}{more}); give a new or empty "
                             "folder.")


def remove_cache_files(path: Path) -> None:
    """Delete the cache files in ``path`` (progress first), and nothing else."""
    for file in rank_progress_files(path):
        file.unlink(missing_ok=True)
    for name in OWNED_FILES:
        (path / name).unlink(missing_ok=True)


def prepare_folder(path: Path, meta: dict, overwrite: bool) -> tuple[Rows, bool]:
    """Check that the folder holds a compatible pass (repairing a lost meta.json); return the
    rows it has committed, after clearing it when there are none, and whether they are
    recorded per process."""
    progress = None if overwrite else load_progress(path)
    if progress is None or not progress["rows"]:
        remove_cache_files(path)  # nothing committed: start over with this call's settings
        return [], False
    try:
        existing = load_meta(path)
    except DamagedFile as damage:
        if progress["meta"] != pass_identity(meta):
            count = sum(stop - start for start, stop in progress["rows"])
            raise ValueError(f"{damage}. Its {count} committed images are not from this model, "
                             "these settings and images, so it cannot be restored from this "
                             "call.") from None
        write_json_atomic(path / META_FILE, meta)  # the committed rows are this call's: restore it
        existing = meta
    if existing["source"] != meta["source"]:
        raise ValueError(f"the cache at {path} was built from other images "
                         f"({_source_difference(existing['source'], meta['source'])}); "
                         f"{REBUILD}")
    different = [key for key in META_KEYS if existing[key] != meta[key]]
    if different:
        raise ValueError(f"{path} holds a cache with other settings ({', '.join(different)} "
                         "differ: another model, dataset size, layers, convention, dtype or "
                         f"granularity); {REBUILD}")
    check_progress(progress, existing)
    check_arrays(path, meta)
    unwritten_rows(path, np.load(path / f"{CHECKSUMS}.npy", mmap_mode="r"), progress["rows"])
    if existing != meta:  # only informational keys differ: the folder moved, the model's name
        write_json_atomic(path / META_FILE, meta)
    return progress["rows"], progress["sharded"]


def _source_difference(old: dict, new: dict) -> str:
    if old["kind"] != new["kind"]:
        return ("it holds an image folder" if old["kind"] == "folder"
                else "it holds a tensor, Dataset or DataLoader, not an image folder")
    old_files, new_files = set(old["files"]), set(new["files"])
    added = sorted(new_files - old_files)
    removed = sorted(old_files - new_files)
    parts = [f"{len(names)} files {what}, e.g. {names[0]}"
             for names, what in ((added, "added"), (removed, "removed")) if names]
    return "; ".join(parts) or "the same files in another order"


def _cache_bytes(meta: dict) -> int:
    """Disk bytes of the arrays (data; each header adds at most a few hundred bytes)."""
    return sum(np.dtype(dtype).itemsize * math.prod(shape)
               for dtype, shape in meta["fields"].values())


def check_free_space(path: Path, meta: dict) -> None:
    """Raise an ENOSPC OSError if the disk of ``path`` has no room for the arrays of ``meta``."""
    needed, free = _cache_bytes(meta), shutil.disk_usage(path).free
    if needed > free:
        raise OSError(errno.ENOSPC, f"the cache at {path} needs {needed / 2**30:.2f} GiB but its "
                      f"disk has {free / 2**30:.2f} GiB free; free some space or choose a folder "
                      "on another disk.")


def _reserve(file: Path) -> None:
    """Allocate a file's blocks now: writing a sparse memory map on a full disk is a SIGBUS."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(file, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise  # EOPNOTSUPP and the like: a file system that cannot reserve space


def create_files(path: Path, meta: dict) -> dict[str, np.memmap]:
    """Write ``meta.json``, then every array's header with its space reserved; on failure remove
    them all, leaving an empty folder."""
    arrays: dict[str, np.memmap] = {}
    try:
        write_json_atomic(path / META_FILE, meta)
        for name, (dtype, shape) in meta["fields"].items():
            file = path / f"{name}.npy"
            arrays[name] = np.lib.format.open_memmap(file, mode="w+", dtype=np.dtype(dtype),
                                                     shape=tuple(shape))
            _reserve(file)
    except OSError as error:
        arrays.clear()
        remove_cache_files(path)
        raise OSError(error.errno, f"could not create the cache files in {path} "
                      f"({_cache_bytes(meta) / 2**30:.2f} GiB): {error.strerror or error}; free "
                      "some space or choose a folder on another disk.") from error
    return arrays
