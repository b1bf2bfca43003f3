"""Writing a cache: :func:`cache_decomposition`, one pass of a model over a dataset, resumable and
shared out over the processes of torch.distributed (see :mod:`captum_clipspan.cache`)."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..decomposition import CONVENTIONS, PER_IMAGE_FIELDS, decompose
from ..hooked.clip import HookedCLIP
from ..sources import ImageFolder, ImageSource, as_dataset, dataset_length
from ..validation import check_choice, check_count, resolve_layers
from .batches import Rows, batch_bounds, cut, gaps, loaded_pieces
from .checksums import checked_fields, row_checksums
from .distributed import World
from .fingerprint import (
    batch_digests,
    file_digests,
    image_digests,
    pieces_digest,
    source_digest,
)
from .folder import check_free_space, check_target, create_files, prepare_folder
from .format import CHECKSUMS, GRANULARITIES, LOCK_FILE, REBUILD, cache_meta, pass_identity
from .locks import check_rank_locks, rank_lock_name, writer_lock
from .progress import Commits, fold_rank_progress, load_progress
from .reader import DecompositionCache


def cache_decomposition(
    clip: HookedCLIP,
    images: ImageSource,
    path: str | Path,
    layers: int | Sequence[int] | None = None,
    convention: str = "reference",
    batch_size: int = 64,
    dtype: str = "float16",
    show_progress: bool = True,
    num_workers: int = 0,
    overwrite: bool = False,
    granularity: str = "head",
) -> DecompositionCache:
    """Decompose every image of a dataset into an on-disk, memory-mapped cache; resumable.

    Under ``torch.distributed`` (e.g. ``torchrun --nproc-per-node N``; any backend), every process
    of the default group calls this with the same arguments: the processes compare them first
    (the images by content: every file's path, size and mtime of a folder, every value of a
    TensorDataset, else the first batch of each process's share) and all refuse unless they
    agree. The images are cut into the batches of a one-process pass; each process decomposes a
    contiguous share of the batches not yet committed and writes its rows into the same files,
    so the cache is the same bit for bit as one process's. A killed pass resumes with any number
    of processes. Give each process its own device (``cuda:LOCAL_RANK``) and a folder on a local
    disk of one machine.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`. It runs in its own dtype: a bf16 or fp16
            model is decomposed with fp32 accumulation.
        images: an image folder path, a tensor ``[N, 3, H, W]``, a Dataset (items: image tensor or
            ``(image, label)``) or a DataLoader in a fixed order yielding images or
            ``(images, labels)``.
        path: the cache folder (created if missing). If it holds a pass of the same model,
            settings and images, that pass resumes there, or is returned when finished; one of
            another model, settings or images is refused, unless nothing of it was committed.
        layers: layers whose per-head (and per-token) terms are stored (``None``: all).
        convention: ``"reference"`` or ``"centered"``.
        batch_size: images per forward pass (ignored for a DataLoader: its batches are used).
        dtype: storage dtype of the terms, ``"float16"`` or ``"float32"`` (embeddings are fp32).
        show_progress: show a tqdm progress bar (of rank 0's share under torch.distributed).
        num_workers: DataLoader workers for folders and Datasets, which load the next batches
            while the model runs (a DataLoader keeps its own). Batches are pinned on CUDA.
        overwrite: delete the cache files in ``path`` (and nothing else) and build it anew.
        granularity: ``"head"``, or ``"token"`` to also store ``tokens``, the per (token, head)
            terms ``[N, L_s, N_tokens, H, E]`` of ``layers``. They take ``N_tokens`` times the
            disk of ``heads`` (and the memory of a batch of :func:`decompose` with
            ``granularity="token"``): keep ``layers`` and ``batch_size`` small.

    Returns:
        The finished :class:`DecompositionCache`.

    Raises:
        ValueError: the folder holds a cache of another model, settings or images, a damaged
            file, or other files; the processes of a distributed pass disagree on what defines
            it (the message names each difference: model, images, batch size, layers, ...); or
            the images are refused by :func:`decompose`.
        RuntimeError: another process or thread is writing this cache, or another process of
            this distributed pass failed (every process raises; the committed rows are kept).
        OSError: the disk has no room for the cache (before any image is decomposed, where the
            file system can say so).

    Examples::

        >>> cache = cs.cache_decomposition(clip, "images/", "cache/", layers=[-4, -3, -2, -1])
        >>> cache.heads.shape   # [N, 4, H, E]
    """
    check_choice(convention, "convention", CONVENTIONS)
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be 'head' (per-head terms) or 'token' (per-head and "
                         f"per-token terms), got {granularity!r}.")
    batch_size = check_count(batch_size, "batch_size")
    num_workers = check_count(num_workers, "num_workers", minimum=0)
    source = as_dataset(clip, images)
    n = dataset_length(source)
    if n == 0:
        raise ValueError("the image source is empty.")
    chosen = resolve_layers(layers, clip.visual.n_layers)
    with _Pass(clip, source, Path(path), n, chosen, convention, dtype, granularity, batch_size,
               num_workers, show_progress) as job:
        return job.run(overwrite)


class _Pass:
    """One process's part of a :func:`cache_decomposition` call (all of it in one process)."""

    def __init__(self, clip: HookedCLIP, source: Dataset | DataLoader, path: Path, n: int,
                 layers: tuple[int, ...], convention: str, dtype: str, granularity: str,
                 batch_size: int, num_workers: int, show_progress: bool) -> None:
        self.clip, self.source, self.path, self.n = clip, source, path, n
        self.layers, self.convention, self.dtype = layers, convention, dtype
        self.granularity, self.batch_size, self.num_workers = granularity, batch_size, num_workers
        self.show_progress = show_progress
        self.contents: str | None = None  # the digest of every image, where reading none
        self.arrays: dict[str, np.memmap] | None = None
        self.stack = ExitStack()
        self.world = World()
        self.stack.callback(self.world.close)

    def __enter__(self) -> _Pass:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.arrays = None
        self.stack.close()  # releases the locks, then the process group

    def run(self, overwrite: bool) -> DecompositionCache:
        world = self.world
        world.agree(lambda: self._plan(overwrite))
        committed, sharded = world.step(lambda: self._open_folder(overwrite))[0]
        world.step(self._lock_rank)
        pending = [piece for start, stop in gaps(committed, self.n)
                   for piece in cut(start, stop, self.bounds)]
        if pending:
            count = len(pending)
            shares = [pending[rank * count // world.size:(rank + 1) * count // world.size]
                      for rank in range(world.size)]
            world.agree(lambda: self._sampled_contents(shares))
            mine = shares[world.rank]
            batches = self._decomposed(mine)
            self.stack.callback(batches.close)
            first: list = []
            world.step(lambda: first.append(next(batches, None)))  # the images pass decompose
            world.step(self._create if world.rank == 0 and not committed else lambda: None)
            world.step(lambda: self._write(mine, first[0], batches, sharded))
        world.step(self._finalize if world.rank == 0 else lambda: None)
        return DecompositionCache.open(self.path)

    def _plan(self, overwrite: bool) -> dict[str, str]:
        """Settle the cache's description and the batches (in every process); what defines the
        pass, for the processes of a distributed pass to compare (nothing in one process)."""
        meta = self.meta = cache_meta(self.clip, self.source, self.n, self.layers,
                                      self.convention, self.dtype, self.granularity)
        self.bounds = batch_bounds(self.source, self.n, self.batch_size)
        if self.world.size == 1:
            return {}
        self.contents = source_digest(self.source)
        batches = (_short(self.bounds) if isinstance(self.source, DataLoader)
                   else str(self.batch_size))
        return {
            "image count": str(self.n), "batch size": batches, "layers": str(meta["layers"]),
            "convention": self.convention, "dtype": self.dtype, "granularity": self.granularity,
            "model fingerprint": meta["fingerprint"], "image source": meta["source"]["kind"],
            "image files": _short(meta["source"]), "classes": _short(meta["classes"]),
            "cache folder": str(self.path.resolve()), "overwrite": str(overwrite),
            "cache format": str(meta["version"]), "arrays": _short(meta["fields"]),
        } | ({} if self.contents is None else {"image contents": f"digest {self.contents}"})

    def _sampled_contents(self, shares: list[Rows]) -> dict[str, str]:
        """The images of a source that :func:`source_digest` cannot digest without reading them
        (a Dataset or DataLoader), compared on the first batch of each process's share."""
        if self.world.size == 1 or self.contents is not None:
            return {}
        firsts = [share[0] for share in shares if share]
        return {"image contents": f"digest {pieces_digest(self.clip, self.source, firsts)}"}

    def _open_folder(self, overwrite: bool) -> tuple[Rows, bool] | None:
        """In process 0: lock the folder and check what it holds; the committed rows, and
        whether they are recorded per process."""
        if self.world.rank:
            return None
        path = self.path
        check_target(path)
        path.mkdir(parents=True, exist_ok=True)
        self.stack.enter_context(writer_lock(path, LOCK_FILE, self.world.role))
        check_rank_locks(path)
        committed, sharded = prepare_folder(path, self.meta, overwrite)
        if committed:
            self._check_rows(committed)
        else:
            check_free_space(path, self.meta)
        return committed, sharded or self.world.size > 1

    def _lock_rank(self) -> None:
        if self.world.rank:
            self.stack.enter_context(writer_lock(self.path, rank_lock_name(self.world.rank),
                                                 self.world.role))

    def _create(self) -> None:
        self.arrays = create_files(self.path, self.meta)

    def _loaded(self, pieces: Rows) -> Iterator[tuple[int, int, Tensor, Tensor]]:
        """``(start, stop, images, labels)`` of each piece, on the model's device and dtype."""
        return loaded_pieces(self.clip, self.source, pieces, self.num_workers)

    def _decomposed(self, pieces: Rows) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """``(start, stop, arrays)`` of each piece: every cached field, as numpy on the CPU."""
        fields = self.meta["fields"]
        for start, stop, images, labels in self._loaded(pieces):
            parts = decompose(self.clip, images, granularity=self.granularity,
                              convention=self.convention, layers=self.layers)
            values = {name: getattr(parts, name) for name in PER_IMAGE_FIELDS} | {"labels": labels}
            values = {name: value.cpu().numpy() for name, value in values.items()
                      if name in fields}
            values["digests"] = batch_digests(self.source, start, images, labels)
            # As stored, so that the checksums are those of the bytes on disk.
            values = {name: np.ascontiguousarray(value, np.dtype(fields[name][0]))
                      for name, value in values.items()}
            values[CHECKSUMS] = row_checksums(values, checked_fields(fields), start)
            yield start, stop, values

    def _write(self, pieces: Rows, first: tuple | None, batches: Iterator, sharded: bool) -> None:
        """Write this process's pieces, committing each batch (arrays flushed, then progress)."""
        from tqdm.auto import tqdm

        arrays, self.arrays = self.arrays, None
        if first is None:
            return
        arrays = arrays or {name: np.lib.format.open_memmap(self.path / f"{name}.npy", mode="r+")
                            for name in self.meta["fields"]}
        commits = Commits(self.path, pass_identity(self.meta), self.world.rank, sharded)
        rows = sum(stop - start for start, stop in pieces)
        before = self.n - rows if self.world.size == 1 else 0
        progress = tqdm(total=before + rows, initial=before, unit="img", desc="decomposing"
                        + self.world.role, disable=not self.show_progress or self.world.rank)
        try:
            for start, stop, values in itertools.chain([first], batches):
                for name, array in arrays.items():
                    array[start:stop] = values[name]
                    array.flush()
                commits.add(start, stop)
                progress.update(stop - start)
        finally:
            progress.close()

    def _finalize(self) -> None:
        """In process 0, once every process committed its share: fold the per-process progress
        files into ``progress.json``, which marks the cache complete."""
        progress = load_progress(self.path)
        done = 0 if progress is None else progress["done"]
        if done < self.n:
            raise RuntimeError(f"the cache at {self.path} holds {done} of {self.n} rows after "
                               "every process finished its share; run the pass again to "
                               "complete it.")
        if progress["sharded"]:
            fold_rank_progress(self.path, self.n, pass_identity(self.meta))

    def _check_rows(self, committed: Rows) -> None:
        """Raise unless the source's committed rows are those cached: every file's path, size
        and mtime for a folder, else the images and labels of the first and last batch of each
        committed span (read again)."""
        source, path = self.source, self.path
        stored = np.load(path / "digests.npy", mmap_mode="r")
        if isinstance(source, ImageFolder):
            found = ((start, stop, file_digests(source, start, stop))
                     for start, stop in committed)
        else:
            spans = []
            for start, stop in committed:
                inside = cut(start, stop, self.bounds)
                spans += inside[:1] + inside[-1:] if len(inside) > 1 else inside
            found = ((start, stop, image_digests(images, labels))
                     for start, stop, images, labels in self._loaded(spans))
        for start, stop, digests in found:
            changed = np.flatnonzero((digests != stored[start:stop]).any(axis=1))
            if not changed.size:
                continue
            row = start + int(changed[0])
            if isinstance(source, ImageFolder):
                what = (f"the image file {source.files[row]} (row {row}) changed since it was "
                        "cached (its size or mtime differs)")
            else:
                what = (f"the images given differ from those the cache was built from (row {row} "
                        "has another image or label; random transforms make every pass differ)")
            raise ValueError(f"{what}; the cache at {path} cannot be reused with them: "
                             f"{REBUILD}")


def _short(value: Any) -> str:
    """A short digest of a JSON-able value, for processes to compare."""
    return "digest " + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]
