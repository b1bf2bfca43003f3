"""Checksums of a cache's rows: one 64-bit SHA-256 prefix per row of every array, computed from the
bytes as stored and written with the rows, so that a read can tell that a row is what was committed.

A checksum covers the array's name and the row's index besides its bytes, so a row moved to another
index or another array of the same shape (two files swapped) fails too; ``0`` marks a row never
written. Rows are checked the first time a reader reads them, and :meth:`RowChecks.verify_all`
checks a whole cache. The cost is one SHA-256 of every byte, once per reader: measured 0.7 GB/s on
one loaded core (1.5 GB/s unloaded), so 7 to 14 s of CPU for a 10 GB cache, about what reading it
from a disk takes; later reads of a checked row cost nothing more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .format import CHECKSUMS, REBUILD

UNWRITTEN = 0  # the checksum of a row never written (the file's reserved space is zeros)


def checked_fields(fields: Sequence[str]) -> list[str]:
    """The arrays that carry a checksum column, in the order of the columns."""
    return [name for name in fields if name != CHECKSUMS]


def row_checksum(name: str, index: int, row: np.ndarray) -> int:
    """The checksum of row ``index`` of the array ``name`` (never :data:`UNWRITTEN`)."""
    digest = hashlib.sha256(f"{name}\0{index}\0".encode())
    digest.update(np.ascontiguousarray(row).view(np.uint8).reshape(-1))
    return int.from_bytes(digest.digest()[:8], "little") or 1


def row_checksums(values: Mapping[str, np.ndarray], fields: Sequence[str],
                  start: int) -> np.ndarray:
    """Checksums ``[b, len(fields)]`` of the rows ``start..start + b`` in ``values``."""
    rows = len(values[fields[0]])
    out = np.empty((rows, len(fields)), np.uint64)
    for column, name in enumerate(fields):
        for row in range(rows):
            out[row, column] = row_checksum(name, start + row, values[name][row])
    return out


class DamagedRows(ValueError):
    """Rows of a cache array that do not match their checksums, or were never written."""


def unwritten_rows(path: Path, checksums: np.ndarray, rows: Sequence[Sequence[int]]) -> None:
    """Raise :class:`DamagedRows` if a committed row (in the spans ``rows``) of any array has no
    checksum: a progress file claims rows that were never written."""
    for start, stop in rows:
        missing = np.flatnonzero((np.asarray(checksums[start:stop]) == UNWRITTEN).any(axis=1))
        if missing.size:
            raise DamagedRows(f"the cache at {path} claims rows {start}..{stop - 1} as "
                              f"committed, but {missing.size} of them were never written (the "
                              f"first: row {start + int(missing[0])}): its progress file is "
                              f"wrong; {REBUILD}")


class RowChecks:
    """Checks the rows of a cache's arrays against their checksums, each row once per reader.

    Args:
        path: the cache folder (for messages).
        arrays: the arrays as read from disk, by name.
        checksums: the checksums array ``[N, len(arrays)]``, columns in the order of ``arrays``.
    """

    def __init__(self, path: Path, arrays: Mapping[str, np.ndarray],
                 checksums: np.ndarray) -> None:
        self.path, self.arrays, self.checksums = path, dict(arrays), checksums
        self.columns = {name: column for column, name in enumerate(self.arrays)}
        # Rows are marked only once checked, so readers in several threads may check a row
        # twice but never skip one.
        self.checked = {name: np.zeros(len(array), bool) for name, array in self.arrays.items()}

    def check(self, name: str, rows: slice | np.ndarray | int = slice(None)) -> None:
        """Raise :class:`DamagedRows` unless the rows ``rows`` of ``name`` match their
        checksums; rows checked before by this reader are not read again."""
        checked = self.checked[name]
        if checked[rows].all():
            return
        indices = np.atleast_1d(np.arange(len(checked))[rows])
        indices = np.unique(indices[~checked[indices]])
        bad = self._damaged(name, indices)
        if bad.size:
            raise DamagedRows(self._describe(name, bad))
        checked[indices] = True

    def verify_all(self) -> None:
        """Check every row of every array; raise :class:`DamagedRows` naming each damaged array
        and its first damaged rows."""
        found = []
        for name in self.arrays:
            bad = self._damaged(name, np.flatnonzero(~self.checked[name]))
            if bad.size:
                found.append(self._describe(name, bad))
            else:
                self.checked[name][:] = True
        if found:
            raise DamagedRows("; ".join(found))

    def _damaged(self, name: str, indices: np.ndarray) -> np.ndarray:
        array, column = self.arrays[name], self.columns[name]
        expected = np.asarray(self.checksums[indices, column])
        found = np.array([row_checksum(name, int(index), array[index]) for index in indices],
                         np.uint64)
        return indices[found != expected]

    def _describe(self, name: str, bad: np.ndarray) -> str:
        unwritten = self.checksums[bad, self.columns[name]] == UNWRITTEN
        what = ("were never written" if unwritten.all() else
                "do not match the checksums recorded when they were written (damaged on disk, "
                "or the file was replaced or swapped with another)")
        first = ", ".join(str(int(row)) for row in bad[:3]) + (", ..." if bad.size > 3 else "")
        return (f"the cache file {self.path / name}.npy is damaged: {bad.size} row(s) ({first}) "
                f"{what}; {REBUILD}")


class CheckedArray(np.ndarray):
    """A read-only cache array whose rows are checked (:class:`RowChecks`) when they are read:
    by indexing, numpy functions and ufuncs (``np.array_equal(a, b)``, ``a.sum()``, ``a >= 0``),
    which return plain arrays. A raw view of its buffer (``np.asarray``, ``torch.from_numpy``)
    is not checked."""

    _checks: RowChecks | None = None
    _name: str = ""
    _rows_known: bool = False  # False in views that are not this array's own rows

    @classmethod
    def wrap(cls, array: np.ndarray, name: str, checks: RowChecks) -> CheckedArray:
        """``array`` (the rows of ``name`` in ``checks``) as a checked array."""
        checked = array.view(cls)
        checked._checks, checked._name, checked._rows_known = checks, name, True
        return checked

    def __array_finalize__(self, source: np.ndarray | None) -> None:
        self._checks = getattr(source, "_checks", None)
        self._name = getattr(source, "_name", "")
        self._rows_known = False  # a reshaped or transposed view: check every row

    def _check(self, key: object = slice(None)) -> None:
        if self._checks is None:
            return
        first = key[0] if isinstance(key, tuple) and key else key
        if not self._rows_known or self.ndim == 0 or first is Ellipsis or first is None:
            first = slice(None)
        if not isinstance(first, slice):
            try:
                first = np.arange(self.shape[0])[first]
            except (IndexError, TypeError, ValueError):
                first = slice(None)  # e.g. a mask of the whole shape: check every row
        self._checks.check(self._name, first)

    def __getitem__(self, key: object) -> object:
        value = super().__getitem__(key)  # first, so a bad index is numpy's error
        self._check(key)
        return value.view(np.ndarray) if isinstance(value, np.ndarray) else value

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: object,
                        **kwargs: object) -> object:
        return getattr(ufunc, method)(*_plain(inputs), **dict(zip(kwargs, _plain(
            kwargs.values()), strict=True)))

    def __array_function__(self, func: object, types: object, args: tuple,
                           kwargs: dict) -> object:
        return func(*_plain(args), **dict(zip(kwargs, _plain(kwargs.values()), strict=True)))


def _plain(values: object) -> list:
    """``values`` with each checked array (also inside a list or tuple) checked whole and
    replaced by a plain view."""
    out = []
    for value in values:
        if isinstance(value, (list, tuple)):
            value = type(value)(_plain(value))
        elif isinstance(value, CheckedArray):
            value._check()
            value = value.view(np.ndarray)
        out.append(value)
    return out
