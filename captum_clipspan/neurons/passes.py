"""Streamed passes of an accumulator over a dataset, resumable and shared out over the processes
of torch.distributed, built from the decomposition cache's machinery (:mod:`captum_clipspan.cache`).

A decomposition cache commits *rows*; the neuron lens keeps *accumulators* instead (sums over
images, a running top-k), whose size does not grow with the dataset. Everything else is the
cache's: the batches of a one-process pass (:func:`~captum_clipspan.cache.batches.batch_bounds`,
``cut``, ``gaps``, ``merge_spans``), loading them (``loaded_pieces``), the processes stepping
together (:class:`~captum_clipspan.cache.distributed.World`), the folder's lock and the per-process
locks (:mod:`~captum_clipspan.cache.locks`), atomic JSON and the pass identity
(:mod:`~captum_clipspan.cache.format`), the model fingerprint and row digests
(:mod:`~captum_clipspan.cache.fingerprint`).

The folder of an analysis holds ``lens.json`` (what it is computed from: model fingerprint,
settings, images), and for each pass ``NAME``: ``NAME.rank{r}.pt``, the state of process ``r``
with the row spans it covers, replaced atomically every ``checkpoint_seconds`` and at the end of
its share; ``NAME.partial.pt``, the states of an interrupted pass folded together when a pass
resumes; and ``NAME.pt`` once every row is in. A state records its rows, so folding never counts
a row twice, and a resumed pass, with any number of processes, computes only the rows no state
holds. Sums are combined in float64; the result equals a one-process pass up to rounding.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..cache.batches import Rows, batch_bounds, cut, gaps, loaded_pieces, merge_spans
from ..cache.distributed import World
from ..cache.fingerprint import batch_digests, file_digests, model_fingerprint
from ..cache.format import pass_identity, read_json, write_json_atomic
from ..cache.locks import check_rank_locks, rank_lock_name, writer_lock
from ..sources import ImageFolder

__all__ = ["PassFolder", "State", "source_record"]

State = dict[str, Tensor]
META_FILE = "lens.json"
LOCK_FILE = "lock"
REBUILD = "pass overwrite=True to rebuild it, or use another folder."


def source_record(clip: Any, source: Dataset | DataLoader, n: int) -> dict:
    """What the images are: an image folder's files (path, size, mtime digests), else the
    number of images and the digests of the first batch's images and labels."""
    if isinstance(source, ImageFolder):
        return {"kind": "folder",
                "files": [file.relative_to(source.root).as_posix() for file in source.files],
                "digest": _hash_hex(file_digests(source, 0, n))}
    bounds = batch_bounds(source, n, 8)
    _, _, images, labels = next(loaded_pieces(clip, source, [(0, bounds[1])], 0))
    return {"kind": "data", "digest": _hash_hex(batch_digests(source, 0, images, labels))}


def _hash_hex(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()[:32]


def _length(rows: Rows) -> int:
    return sum(stop - start for start, stop in rows)


class PassFolder:
    """The folder of one analysis over a dataset, locked for its lifetime (a context manager).

    Args:
        path: the folder (created if missing).
        clip: the model; its fingerprint is part of the identity.
        source: the images (from :func:`captum_clipspan.sources.as_dataset`).
        settings: the analysis's settings (JSON values); with the model and the images, they
            decide whether the folder's states can be reused.
        batch_size: images per forward pass (a DataLoader's own batches are used).
        overwrite: delete the analysis's files in ``path`` and start anew.
        num_workers: DataLoader workers.
        show_progress: tqdm bars (rank 0's share under torch.distributed).
        checkpoint_seconds: how often a process saves its state during a pass.
    """

    def __init__(self, path: str | Path, clip: Any, source: Dataset | DataLoader, n: int,
                 settings: dict, batch_size: int, overwrite: bool = False, num_workers: int = 0,
                 show_progress: bool = True, checkpoint_seconds: float = 120.0) -> None:
        self.path, self.clip, self.source, self.n = Path(path), clip, source, n
        self.num_workers, self.show_progress = num_workers, show_progress
        self.checkpoint_seconds = checkpoint_seconds
        self.stack = ExitStack()
        self.world = World()
        self.stack.callback(self.world.close)
        try:
            self.bounds = batch_bounds(source, n, batch_size)
            self.world.agree(lambda: self._plan(settings), what="neuron lens pass")
            self.world.step(lambda: self._open(overwrite) if self.world.rank == 0 else None)
            self.world.step(self._lock_rank)
        except BaseException:
            self.stack.close()
            raise

    def __enter__(self) -> PassFolder:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stack.close()

    @property
    def files(self) -> list[Path]:
        """The image file of each row for an image folder, else ``[]``."""
        return list(self.source.files) if isinstance(self.source, ImageFolder) else []

    def _plan(self, settings: dict) -> dict[str, str]:
        """Record what the pass is computed from; returns it by name, for the processes to
        compare (:meth:`~captum_clipspan.cache.distributed.World.agree`)."""
        folder = isinstance(self.source, ImageFolder)
        self.meta = {"version": 1, "n": self.n, "fingerprint": model_fingerprint(self.clip),
                     "settings": settings,
                     "source": source_record(self.clip, self.source, self.n),
                     "model_name": self.clip.model_name,
                     "root": str(self.source.root.resolve()) if folder else None}
        self.identity = pass_identity(self.meta)
        return {"model": f"digest {self.meta['fingerprint']}",
                "images": f"digest {pass_identity({'source': self.meta['source']})}",
                "number of images": str(self.n),
                "settings": f"digest {pass_identity({'settings': settings})}"}

    def _open(self, overwrite: bool) -> None:
        """In process 0: lock the folder, refuse another analysis's folder, clear on overwrite."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise ValueError(f"the lens folder {path} is a file; give a new or empty folder.")
        path.mkdir(parents=True, exist_ok=True)
        foreign = sorted(entry.name for entry in path.iterdir() if not _owned(entry.name))
        if foreign:
            raise ValueError(f"{path} holds files that are not a neuron lens pass "
                             f"({', '.join(foreign[:3])}); give a new or empty folder.")
        self.stack.enter_context(writer_lock(path, LOCK_FILE, self.world.role))
        check_rank_locks(path)
        meta_file = path / META_FILE
        if meta_file.is_file() and not overwrite:
            existing = read_json(meta_file)
            if pass_identity(existing) != self.identity:
                raise ValueError(f"the lens folder {path} holds a pass of "
                                 f"{_difference(existing, self.meta)}; {REBUILD}")
        else:
            for file in [*path.glob("*.pt"), *path.glob("*.tmp")]:
                file.unlink()
            write_json_atomic(meta_file, self.meta)

    def _lock_rank(self) -> None:
        if self.world.rank:
            self.stack.enter_context(writer_lock(self.path, rank_lock_name(self.world.rank),
                                                 self.world.role))

    def run(self, name: str, fresh: Callable[[], State],
            update: Callable[[State, Tensor, Tensor], None],
            combine: Callable[[State, State], None], description: str = "") -> State:
        """One pass ``name`` over the images (resumed where a state holds rows); its final state.

        Args:
            name: the pass's file stem.
            fresh: a new, empty state.
            update: ``update(state, rows [b], images [b, 3, H, W])`` adds a batch.
            combine: ``combine(state, other)`` folds ``other`` (other rows) into ``state``.
            description: the progress bar's label.
        """
        world, final = self.world, self.path / f"{name}.pt"
        if all(world.step(final.is_file)):
            return self._load(final)["state"]
        committed = world.step(lambda: self._fold(name, combine) if world.rank == 0 else None)[0]
        pending = [piece for start, stop in gaps(committed, self.n)
                   for piece in cut(start, stop, self.bounds)]
        count = len(pending)
        mine = pending[world.rank * count // world.size:(world.rank + 1) * count // world.size]
        done = self.n - sum(stop - start for start, stop in pending)
        world.step(lambda: self._stream(name, mine, fresh, update, done, description))
        world.step(lambda: self._finish(name, combine) if world.rank == 0 else None)
        return self._load(final)["state"]

    def _stream(self, name: str, pieces: Rows, fresh: Callable[[], State],
                update: Callable[[State, Tensor, Tensor], None], done: int,
                description: str) -> None:
        from tqdm.auto import tqdm

        if not pieces:
            return
        state, rows, saved = fresh(), [], time.monotonic()
        total = sum(stop - start for start, stop in pieces)
        before = done if self.world.size == 1 else 0
        progress = tqdm(total=before + total, initial=before, unit="img",
                        desc=description + self.world.role,
                        disable=not self.show_progress or bool(self.world.rank))
        file = self.path / f"{name}.rank{self.world.rank}.pt"
        try:
            for start, stop, images, _ in self._batches(pieces):
                update(state, torch.arange(start, stop), images)
                rows = merge_spans([*rows, (start, stop)])
                progress.update(stop - start)
                if time.monotonic() - saved >= self.checkpoint_seconds:
                    self._save(file, rows, state)
                    saved = time.monotonic()
            self._save(file, rows, state)
        finally:
            progress.close()

    def _batches(self, pieces: Rows) -> Iterator[tuple[int, int, Tensor, Tensor]]:
        return loaded_pieces(self.clip, self.source, pieces, self.num_workers)

    def _fold(self, name: str, combine: Callable[[State, State], None]) -> Rows:
        """In process 0: fold every saved state of pass ``name`` into ``NAME.partial.pt`` (and
        delete the per-process files); the rows it covers."""
        partial = self.path / f"{name}.partial.pt"
        ranks = sorted(self.path.glob(f"{name}.rank*.pt"))
        rows: Rows = []
        state: State | None = None
        for file in [partial] * partial.is_file() + ranks:
            payload = self._load(file)
            spans = merge_spans(payload["rows"])
            union = merge_spans(rows + spans)
            if union == rows:
                continue  # already folded (an interrupted fold left the file behind)
            if _length(union) != _length(rows) + _length(spans):
                raise ValueError(f"the lens file {file} overlaps other saved rows (damaged); "
                                 f"{REBUILD}")
            if state is None:
                state = payload["state"]
            else:
                combine(state, payload["state"])
            rows = union
        if ranks and state is not None:
            self._save(partial, rows, state)
        for file in ranks:
            file.unlink()
        return rows

    def _finish(self, name: str, combine: Callable[[State, State], None]) -> None:
        rows = self._fold(name, combine)
        if rows != [(0, self.n)]:
            raise RuntimeError(f"the pass {name!r} in {self.path} holds rows {rows} of "
                               f"0..{self.n} after every process finished; run it again to "
                               "complete it.")
        partial = self.path / f"{name}.partial.pt"
        os.replace(partial, self.path / f"{name}.pt")

    def _save(self, file: Path, rows: Rows, state: State) -> None:
        """Write ``{identity, rows, state}`` through a synced temporary file."""
        temporary = file.with_suffix(".tmp")
        with open(temporary, "wb") as handle:
            torch.save({"identity": self.identity, "rows": [list(span) for span in rows],
                        "state": state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, file)

    def _load(self, file: Path) -> dict:
        try:
            payload = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 (any unreadable file gets the same message)
            raise ValueError(f"the lens file {file} is damaged ({error}); {REBUILD}") from None
        if not isinstance(payload, dict) or payload.get("identity") != self.identity:
            raise ValueError(f"the lens file {file} is not from this pass (another model, "
                             f"settings or images); {REBUILD}")
        return payload


def _owned(name: str) -> bool:
    return (name in (META_FILE, LOCK_FILE, "lens.tmp") or name.startswith("lock.rank")
            or name.endswith((".pt", ".tmp")))


def _difference(old: dict, new: dict) -> str:
    if old.get("fingerprint") != new["fingerprint"]:
        return (f"another model ({old.get('model_name')!r}, fingerprint "
                f"{old.get('fingerprint')}; this one is {new['fingerprint']})")
    if old.get("settings") != new["settings"]:
        keys = sorted(key for key in new["settings"]
                      if old.get("settings", {}).get(key) != new["settings"][key])
        return f"other settings ({', '.join(keys)} differ)"
    return "other images"

