"""The resumable, memory-mapped decomposition cache (image sources and batching: :mod:`.sources`).

The cache is a folder of ``.npy`` files written through memory maps, one batch at a time, so memory
stays bounded by a batch whatever the dataset size. ``meta.json`` (the settings, a hash of every
weight of the image tower, the image files) is written first and atomically, and the arrays' disk
space is reserved before any row is written. After every batch the arrays are flushed and
``progress.json`` is replaced atomically; an interrupted pass resumes from the last committed batch
and ends with the same contents as an uninterrupted one.

Each row also stores a digest of what it was computed from: the file's relative path, size and
mtime for an image folder, else the image's values and label. A pass that resumes, or reuses a
finished cache, checks them (every file of a folder; the first and last committed batch of other
sources) and refuses other images. Opening checks every array's header, dtype, shape and size, and
a lock file keeps a second writer out.

Under ``torch.distributed`` every process of the pass writes its own rows of the same files: the
rows are cut into the batches of a one-process pass, the batches not yet committed are shared out
in order, and each process commits its batches to its own ``progress.rank{r}.json``. The process of
rank 0 creates the files, holds the folder's lock (the others hold ``lock.rank{r}``) and, once every
batch is committed, folds the per-process files into ``progress.json``. Every batch is the same as
in one process, so the arrays are the same bit for bit, also after a resumed pass.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import socket
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .decomposition import CONVENTIONS, PER_IMAGE_FIELDS, decompose, resolve_layers
from .hooked.clip import HookedCLIP
from .sources import (
    ImageFolder,
    ImageSource,
    as_dataset,
    dataset_length,
    split_batch,
)

CACHE_VERSION = 3  # 3: the embeddings array is "image_embed" (was "image_embeds")

try:
    import fcntl
except ImportError:  # Windows: no flock, so passes there are not guarded against a second writer
    fcntl = None

DIGEST_SIZE = 16
_HASH_CHUNK = 1 << 24  # bytes hashed at a time: bounds the host copy of a GPU tensor
_META, _PROGRESS, _LOCK = "meta.json", "progress.json", "lock"
_FIELDS = (*PER_IMAGE_FIELDS, "labels", "digests")  # every array a cache may hold
GRANULARITIES = ("head", "token")
# Per-process files of a pass under torch.distributed: progress of rank r and the lock it holds.
_RANK_FILE = re.compile(r"progress\.rank\d+\.(json|tmp)|lock\.rank\d+")
Rows = list[tuple[int, int]]  # row spans [start, stop), sorted and disjoint
# The files a cache folder may hold, progress first so that removing them one by one never leaves
# a progress.json without its arrays; overwrite=True deletes these and nothing else.
_OWNED = (_PROGRESS, "progress.tmp", _META, "meta.tmp", *(f"{name}.npy" for name in _FIELDS))
_META_KEYS = ("version", "n", "layers", "convention", "dtype", "fields", "fingerprint", "classes",
              "source")
_INFO_KEYS = ("model_name", "root")  # informational: the rows do not depend on them
_REBUILD = ("pass overwrite=True to cache_decomposition to rebuild the cache, or use a new "
            "folder.")


def _hash_tensor(digest: Any, tensor: Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes to ``digest``, one chunk at a time."""
    tensor = tensor.detach()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    flat = tensor.contiguous().reshape(-1).view(torch.uint8)
    for start in range(0, flat.numel(), _HASH_CHUNK):
        digest.update(flat[start:start + _HASH_CHUNK].cpu().numpy())


def model_fingerprint(clip: HookedCLIP) -> str:
    """A hash of the image tower: its module types and every parameter and buffer, streamed.

    It reads every weight once (about a second per GB on one CPU core) and copies none but a
    chunk at a time, so any change to any weight, fine-tuned early layers included, gives another
    fingerprint.
    """
    vit, tower = clip.visual, clip.visual.model
    digest = hashlib.sha256()
    digest.update(repr((vit.n_layers, vit.n_heads, vit.output_dim, tuple(vit.image_size))).encode())
    digest.update(repr([(name, type(module).__name__)
                        for name, module in tower.named_modules()]).encode())
    for kind, named in (("parameter", tower.named_parameters()), ("buffer", tower.named_buffers())):
        for name, tensor in named:
            digest.update(f"{kind} {name}".encode())
            _hash_tensor(digest, tensor)
    return digest.hexdigest()[:16]


def _file_digests(folder: ImageFolder, start: int, stop: int) -> np.ndarray:
    """Row digests ``[stop - start, DIGEST_SIZE]`` of a folder's files from path, size and mtime."""
    rows = np.empty((stop - start, DIGEST_SIZE), np.uint8)
    for row, file in enumerate(folder.files[start:stop]):
        stat = file.stat()
        key = f"{file.relative_to(folder.root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}"
        rows[row] = np.frombuffer(hashlib.sha256(key.encode()).digest()[:DIGEST_SIZE], np.uint8)
    return rows


def _image_digests(images: Tensor, labels: Tensor) -> np.ndarray:
    """Row digests ``[b, DIGEST_SIZE]`` of each image's raw values and its label."""
    rows = np.empty((images.shape[0], DIGEST_SIZE), np.uint8)
    images = images.detach().cpu()
    for row in range(images.shape[0]):
        digest = hashlib.sha256(f"label {int(labels[row])}".encode())
        _hash_tensor(digest, images[row])
        rows[row] = np.frombuffer(digest.digest()[:DIGEST_SIZE], np.uint8)
    return rows


def _batch_digests(source: Dataset | DataLoader, start: int, images: Tensor,
                   labels: Tensor) -> np.ndarray:
    if isinstance(source, ImageFolder):
        return _file_digests(source, start, start + images.shape[0])
    return _image_digests(images, labels)


def _write_json_atomic(path: Path, value: dict) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as handle:
        json.dump(value, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _identity(meta: dict) -> str:
    """A digest of everything the rows depend on: ``meta`` less its informational keys."""
    core = {key: value for key, value in meta.items() if key not in _INFO_KEYS}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


class _DamagedFile(ValueError):
    """A missing or unreadable ``meta.json`` or ``progress.json``; the message says what to do."""

    def __init__(self, file: Path, why: str) -> None:
        remedy = ("run cache_decomposition again with the same model, images and settings to "
                  "restore it, or " + _REBUILD) if file.name == _META else _REBUILD
        super().__init__(f"the cache file {file} is {why}; {remedy}")


def _read_json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _DamagedFile(file, f"damaged (not readable JSON: {error})") from None
    if not isinstance(value, dict):
        raise _DamagedFile(file, f"damaged (a JSON {type(value).__name__}, not an object)")
    return value


def _rank_progress(rank: int) -> str:
    return f"progress.rank{rank}.json"


def _rank_progress_files(path: Path) -> list[Path]:
    """The per-process progress files in ``path`` (and their temporary files), sorted."""
    return sorted(file for file in path.glob("progress.rank*")
                  if _RANK_FILE.fullmatch(file.name) and file.name.startswith("progress"))


def _merge(rows: Sequence[Sequence[int]]) -> Rows:
    """Sorted, disjoint spans covering the same rows as ``rows``."""
    merged: Rows = []
    for start, stop in sorted((int(a), int(b)) for a, b in rows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def _read_progress_file(file: Path) -> tuple[Rows, str | None]:
    """The committed spans and the pass identity of ``progress.json`` (``{"done", "meta"}``) or
    of one process's ``progress.rank{r}.json`` (``{"rows", "meta"}``)."""
    value = _read_json(file)
    meta = value.get("meta")
    if file.name == _PROGRESS:
        done = value.get("done")
        if type(done) is not int or done < 0 or not isinstance(meta, (str, type(None))):
            raise _DamagedFile(file, "damaged (no valid 'done' count)")
        return ([(0, done)] if done else []), meta
    rows = value.get("rows")
    valid = isinstance(rows, list) and all(
        isinstance(span, list) and len(span) == 2 and all(type(end) is int for end in span)
        and 0 <= span[0] < span[1] for span in rows)
    if not valid or not isinstance(meta, str):
        raise _DamagedFile(file, "damaged (no valid 'rows' list of [start, stop] spans)")
    return _merge(rows), meta


def _load_progress(path: Path) -> dict | None:
    """What is committed, from ``progress.json`` and every process's ``progress.rank{r}.json``.

    Returns:
        ``None`` when there is no progress file, else ``{"rows": the committed spans, "done": how
        many rows from row 0 on are committed, "meta": the identity of the pass that committed
        them, "file": the file to name in errors, "sharded": whether per-process files exist}``.
    """
    files = [path / _PROGRESS] if (path / _PROGRESS).exists() else []
    files += [file for file in _rank_progress_files(path) if file.suffix == ".json"]
    if not files:
        return None
    rows: Rows = []
    identity, named = None, files[0]
    for file in files:
        spans, meta = _read_progress_file(file)
        if not spans:
            continue
        if rows and meta != identity:
            raise _DamagedFile(file, f"damaged (its rows are from another pass than those of "
                                     f"{named.name})")
        rows, identity, named = rows + spans, meta, named if rows else file
    rows = _merge(rows)
    done = rows[0][1] if rows and rows[0][0] == 0 else 0
    return {"rows": rows, "done": done, "meta": identity, "file": named,
            "sharded": any(file.name != _PROGRESS for file in files)}


def _check_progress(progress: dict, meta: dict) -> None:
    """Raise unless ``progress`` is that of the pass described by ``meta``."""
    stop = progress["rows"][-1][1] if progress["rows"] else 0
    if progress["meta"] != _identity(meta) or stop > meta["n"]:
        raise _DamagedFile(progress["file"], "not the progress of the pass in meta.json")


def _load_meta(path: Path) -> dict:
    file = path / _META
    if not file.is_file():
        raise _DamagedFile(file, "missing")
    meta = _read_json(file)
    version = meta.get("version")
    if type(version) is int and version != CACHE_VERSION:
        raise ValueError(f"the cache at {path} is in cache format {version}; this version of "
                         f"captum_clipspan reads format {CACHE_VERSION}: {_REBUILD}")
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise _DamagedFile(file, f"damaged (no {', '.join(missing)})")
    try:
        fields = {name: (np.dtype(dt), [int(size) for size in shape])
                  for name, (dt, shape) in meta["fields"].items()}
    except (AttributeError, TypeError, ValueError):
        fields = {}
    if not fields or not set(fields) <= set(_FIELDS) or type(meta["n"]) is not int:
        raise _DamagedFile(file, "damaged (its 'n' or 'fields' entry is invalid)")
    return meta


def _check_array(file: Path, dtype: str, shape: Sequence[int]) -> None:
    """Raise a ValueError naming ``file`` unless it is a whole ``.npy`` of this dtype and shape."""
    if not file.is_file():
        raise ValueError(f"the cache file {file} is missing; {_REBUILD}")
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(file, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in readers:
                raise ValueError(f"unsupported .npy format {version}")
            found_shape, fortran, found_dtype = readers[version](handle)
            offset, size = handle.tell(), os.fstat(handle.fileno()).st_size
    except (OSError, ValueError) as error:
        raise ValueError(f"the cache file {file} is damaged (its .npy header cannot be read: "
                         f"{error}); {_REBUILD}") from None
    if fortran or found_dtype != np.dtype(dtype) or list(found_shape) != list(shape):
        raise ValueError(f"the cache file {file} holds a {found_dtype} array of shape "
                         f"{list(found_shape)}{' in Fortran order' if fortran else ''}, but "
                         f"meta.json says {dtype} {list(shape)}; {_REBUILD}")
    expected = offset + np.dtype(dtype).itemsize * math.prod(shape)
    if size != expected:
        raise ValueError(f"the cache file {file} is {size} bytes where its header needs "
                         f"{expected}: it was truncated or extended; {_REBUILD}")


def _check_arrays(path: Path, meta: dict) -> None:
    for name, (dtype, shape) in meta["fields"].items():
        _check_array(path / f"{name}.npy", dtype, shape)


@dataclass
class DecompositionCache:
    """A memory-mapped cache of per-image direct effects (normalized, joint space).

    Attributes:
        path: the cache folder.
        heads: ``[N, L_s, H, E]`` per-head terms of the cached layers.
        attns: ``[N, L, E]`` whole MSA layers; ``mlps``: ``[N, L, E]``; ``embed``: ``[N, E]``.
        image_embed: ``[N, E]`` unit-norm image embeddings (what the terms sum to).
        labels: ``[N]`` int labels (``-1`` where the source had none).
        layers: the model layers of ``heads``; ``convention``: the decomposition convention.
        attn_biases, ln_bias: ``[N, L, E]`` and ``[N, E]`` for the ``"centered"`` convention.
        pool_mlp: ``[N, E]`` an attention pool's own MLP term (SigLIP, PE-Core), else ``None``.
        tokens: ``[N, L_s, N_tokens, H, E]`` per (token, head) terms of the cached layers (prefix
            tokens first) in a cache built with ``granularity="token"``, else ``None``; summed
            over tokens they give ``heads``.
        digests: ``[N, 16]`` uint8 digest of what each row was computed from (the file's path,
            size and mtime for an image folder, else the image's values and label).
        classes: class names of an image folder with class sub-folders, else ``[]``.
        files: the image file of each row for an image folder, else ``[]``.
    """

    path: Path
    meta: dict
    heads: np.ndarray
    attns: np.ndarray
    mlps: np.ndarray
    embed: np.ndarray
    image_embed: np.ndarray
    labels: np.ndarray
    digests: np.ndarray | None = None
    attn_biases: np.ndarray | None = None
    ln_bias: np.ndarray | None = None
    pool_mlp: np.ndarray | None = None
    tokens: np.ndarray | None = None

    @property
    def image_embeds(self) -> np.ndarray:
        """The former name of :attr:`image_embed` (deprecated)."""
        warnings.warn("DecompositionCache.image_embeds is now image_embed.", FutureWarning,
                      stacklevel=2)
        return self.image_embed

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.meta["layers"])

    @property
    def convention(self) -> str:
        return self.meta["convention"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    @property
    def files(self) -> list[Path]:
        """The image file of each row, in order, for a cache of an image folder; else ``[]``.

        Paths are under the folder that the latest :func:`cache_decomposition` call was given.
        """
        source = self.meta["source"]
        if source["kind"] != "folder":
            return []
        root = Path(self.meta["root"])
        return [root / name for name in source["files"][:len(self)]]

    @property
    def n_heads(self) -> int:
        return self.heads.shape[2]

    @property
    def n_layers(self) -> int:
        """The model's layer count (``attns`` and ``mlps`` hold every layer)."""
        return self.attns.shape[1]

    def __len__(self) -> int:
        return self.heads.shape[0]

    def tensor(self, name: str, rows: slice | Sequence[int] | None = None,
               dtype: torch.dtype | None = None) -> Tensor:
        """Rows of one cached array as a tensor (a copy, read from the memory map).

        Args:
            name: a cached array: ``"heads"``, ``"attns"``, ``"mlps"``, ``"embed"``,
                ``"image_embed"``, ``"labels"`` (and the optional ones this cache holds).
            rows: a slice or indices (default: every row).
            dtype: the tensor's dtype (default: float32 for terms, int64 for labels).

        Examples::

            >>> cache.tensor("image_embed", slice(0, 256)).shape    # [256, E]
        """
        array = self._array(name)
        values = array[slice(None) if rows is None else rows]
        if dtype is None:
            dtype = torch.float32 if np.issubdtype(array.dtype, np.floating) else torch.int64
        return torch.from_numpy(np.array(values)).to(dtype)  # a copy: the map is read-only

    def term(self, name: str, rows: slice | Sequence[int] | None = None) -> Tensor:
        """One component's cached direct terms ``[N, E]`` by its name (``"attn.3"``,
        ``"head.11.4"``, ...: :mod:`captum_clipspan.components`), as float32; only that
        component's slice is read from the memory map."""
        from .components import FIELDS, parse_component

        component = parse_component(name)
        array = self._array(FIELDS[component.kind])
        rows = slice(None) if rows is None else rows
        if component.kind == "head":
            if component.layer not in self.layers or not 0 <= component.head < self.n_heads:
                raise ValueError(f"{name!r} is not cached: heads of layers {list(self.layers)}, "
                                 f"0..{self.n_heads - 1}.")
            values = self.head(component.layer, component.head)[rows]
        elif component.layer is not None:
            if not 0 <= component.layer < self.n_layers:
                raise ValueError(f"{name!r}: the model has layers 0..{self.n_layers - 1}.")
            values = array[rows, component.layer]
        else:
            values = array[rows]
        return torch.from_numpy(np.array(values)).float()

    def chunks(self, names: Sequence[str], chunk: int = 4096,
               dtype: torch.dtype | None = None) -> Iterator[tuple[slice, dict[str, Tensor]]]:
        """``(rows, {name: tensor})`` for consecutive blocks of ``chunk`` rows: a pass over the
        cache in bounded memory (see :meth:`tensor`)."""
        if isinstance(names, str):
            raise TypeError(f"names must be a list of array names, got the string {names!r}.")
        for name in names:
            self._array(name)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive int, got {chunk!r}.")
        for start in range(0, len(self), chunk):
            rows = slice(start, min(start + chunk, len(self)))
            yield rows, {name: self.tensor(name, rows, dtype) for name in names}

    def _array(self, name: str) -> np.ndarray:
        array = getattr(self, name, None) if name in self.meta["fields"] else None
        if array is None:
            raise ValueError(f"this cache holds no array {name!r}; it holds "
                             f"{sorted(self.meta['fields'])}.")
        return array

    @classmethod
    def open(cls, path: str | Path, allow_partial: bool = False) -> DecompositionCache:
        """Open a cache folder read-only; a partial one only with ``allow_partial`` (its rows
        committed from row 0 on, by one process or by every process of a distributed pass).

        Raises:
            ValueError: naming the file, if ``meta.json`` or ``progress.json`` is missing or
                damaged, or an array's header, dtype, shape or size is not what meta.json says.
        """
        path = Path(path)
        if not (path / _META).is_file() and not (path / _PROGRESS).is_file():
            raise ValueError(f"{path} is not a decomposition cache (no meta.json).")
        meta, progress = _load_meta(path), _load_progress(path)
        done = 0 if progress is None else progress["done"]
        if progress is not None:
            _check_progress(progress, meta)
        if done < meta["n"] and (not allow_partial or progress is None):
            raise ValueError(f"the cache at {path} is incomplete ({done} of {meta['n']} "
                             "images); run cache_decomposition again to resume it.")
        _check_arrays(path, meta)
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r")[:done]
                  for name in meta["fields"]}
        return cls(path=path, meta=meta, **arrays)

    def check_model(self, clip: HookedCLIP) -> None:
        """Raise unless this cache was written by the same model weights."""
        if self.meta["fingerprint"] != model_fingerprint(clip):
            raise ValueError(f"the cache at {self.path} was written by another model "
                             f"({self.meta.get('model_name')!r}, fingerprint "
                             f"{self.meta['fingerprint']}); use a cache of this model.")

    def head(self, layer: int, head: int) -> np.ndarray:
        """One head's direct effects ``[N, E]`` (``layer`` is a model layer index)."""
        from .validation import resolve_head, resolve_layer

        layer = resolve_layer(layer, self.attns.shape[1])
        head = resolve_head(head, self.n_heads)
        if layer not in self.layers:
            raise ValueError(f"layer {layer} is not cached; cached layers: {list(self.layers)}.")
        return self.heads[:, self.layers.index(layer), head]


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
    of the default group calls this with the same arguments. The images are cut into the batches
    of a one-process pass; each process decomposes a contiguous share of the batches not yet
    committed and writes its rows into the same files, so the cache is the same bit for bit as
    one process's. A killed pass resumes with any number of processes. Give each process its own
    device (``cuda:LOCAL_RANK``) and a folder on a local disk of one machine.

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
            file, or other files; the processes of a distributed pass were given different
            models, images or settings; or the images are refused by :func:`decompose`.
        RuntimeError: another process or thread is writing this cache, or another process of
            this distributed pass failed (every process raises; the committed rows are kept).
        OSError: the disk has no room for the cache (before any image is decomposed, where the
            file system can say so).

    Examples::

        >>> cache = cs.cache_decomposition(clip, "images/", "cache/", layers=[-4, -3, -2, -1])
        >>> cache.heads.shape   # [N, 4, H, E]
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be 'head' (per-head terms) or 'token' (per-head and "
                         f"per-token terms), got {granularity!r}.")
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    source = as_dataset(clip, images)
    n = dataset_length(source)
    if n == 0:
        raise ValueError("the image source is empty.")
    chosen = resolve_layers(layers, clip.visual.n_layers)
    with _Pass(clip, source, Path(path), n, chosen, convention, dtype, granularity, batch_size,
               num_workers, show_progress) as job:
        return job.run(overwrite)


class _World:
    """The processes of a pass: those of torch.distributed's default group, or this one alone."""

    def __init__(self) -> None:
        import torch.distributed as dist

        active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank, self.size = (dist.get_rank(), dist.get_world_size()) if active else (0, 1)
        # Object collectives on the CPU whatever the backend (NCCL needs a device per process).
        self.group = (dist.new_group(backend="gloo")
                      if active and dist.get_backend() != "gloo" else None)

    @property
    def role(self) -> str:
        return f" (rank {self.rank} of a {self.size}-process pass)" if self.size > 1 else ""

    def step(self, work: Callable[[], Any]) -> list[Any]:
        """Run ``work`` here and wait for the other processes; return every process's result.

        If ``work`` raised in any process, every process raises: that error where it happened,
        a RuntimeError naming the failed process elsewhere (so that none waits forever).
        """
        if self.size == 1:
            return [work()]
        import torch.distributed as dist

        try:
            result, failure = work(), None
        except BaseException as error:  # KeyboardInterrupt too: the others must not hang
            result, failure = None, error
        gathered: list[Any] = [None] * self.size
        message = None if failure is None else f"{type(failure).__name__}: {failure}"
        dist.all_gather_object(gathered, (message, result), group=self.group)
        if failure is not None:
            raise failure
        for rank, (message, _) in enumerate(gathered):
            if message is not None:
                raise RuntimeError(f"process {rank} of this {self.size}-process cache pass "
                                   f"failed ({message}); the rows committed so far are kept: "
                                   "run the same pass again to resume it.")
        return [value for _, value in gathered]

    def close(self) -> None:
        if self.group is not None:
            import torch.distributed as dist

            dist.destroy_process_group(self.group)
            self.group = None


class _Pass:
    """One process's part of a :func:`cache_decomposition` call (all of it in one process)."""

    def __init__(self, clip: HookedCLIP, source: Dataset | DataLoader, path: Path, n: int,
                 layers: tuple[int, ...], convention: str, dtype: str, granularity: str,
                 batch_size: int, num_workers: int, show_progress: bool) -> None:
        self.clip, self.source, self.path, self.n = clip, source, path, n
        self.layers, self.convention, self.dtype = layers, convention, dtype
        self.granularity, self.batch_size, self.num_workers = granularity, batch_size, num_workers
        self.show_progress = show_progress
        self.arrays: dict[str, np.memmap] | None = None
        self.stack = ExitStack()
        self.world = _World()
        self.stack.callback(self.world.close)

    def __enter__(self) -> _Pass:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.arrays = None
        self.stack.close()  # releases the locks, then the process group

    def run(self, overwrite: bool) -> DecompositionCache:
        world = self.world
        identities = world.step(self._plan)
        if len(set(identities)) > 1:
            other = next(rank for rank, found in enumerate(identities) if found != identities[0])
            raise ValueError(f"the processes of this {world.size}-process cache pass were given "
                             f"different models, images or settings (process {other} differs "
                             "from process 0); give every process the same arguments.")
        committed, sharded = world.step(lambda: self._open_folder(overwrite))[0]
        world.step(self._lock_rank)
        pending = [piece for start, stop in _gaps(committed, self.n)
                   for piece in _cut(start, stop, self.bounds)]
        if pending:
            count, rank = len(pending), world.rank
            mine = pending[rank * count // world.size:(rank + 1) * count // world.size]
            batches = self._decomposed(mine)
            self.stack.callback(batches.close)
            first: list = []
            world.step(lambda: first.append(next(batches, None)))  # the images pass decompose
            world.step(self._create if world.rank == 0 and not committed else lambda: None)
            world.step(lambda: self._write(mine, first[0], batches, sharded))
        world.step(self._finalize if world.rank == 0 else lambda: None)
        return DecompositionCache.open(self.path)

    def _plan(self) -> str:
        """Settle the cache's description and the batches (in every process); its identity."""
        self.meta = _cache_meta(self.clip, self.source, self.n, self.layers, self.convention,
                                self.dtype, self.granularity)
        self.bounds = _batch_bounds(self.source, self.n, self.batch_size)
        return _identity(self.meta)

    def _open_folder(self, overwrite: bool) -> tuple[Rows, bool] | None:
        """In process 0: lock the folder and check what it holds; the committed rows, and
        whether they are recorded per process."""
        if self.world.rank:
            return None
        path = self.path
        _check_target(path)
        path.mkdir(parents=True, exist_ok=True)
        self.stack.enter_context(_writer_lock(path, _LOCK, self.world.role))
        _check_rank_locks(path)
        committed, sharded = _prepare_folder(path, self.meta, overwrite)
        if committed:
            self._check_rows(committed)
        else:
            _check_free_space(path, self.meta)
        return committed, sharded or self.world.size > 1

    def _lock_rank(self) -> None:
        if self.world.rank:
            self.stack.enter_context(_writer_lock(self.path, f"lock.rank{self.world.rank}",
                                                  self.world.role))

    def _create(self) -> None:
        self.arrays = _create_files(self.path, self.meta)

    def _loaded(self, pieces: Rows) -> Iterator[tuple[int, int, Tensor, Tensor]]:
        """``(start, stop, images, labels)`` of each piece, on the model's device and dtype."""
        clip = self.clip
        loader = _piece_loader(self.source, pieces, self.num_workers,
                               pin_memory=clip.device.type == "cuda")
        batches = iter(loader)
        try:
            for (start, stop), batch in zip(pieces, batches, strict=True):
                images, labels = split_batch(batch)
                if images.shape[0] != stop - start:
                    raise ValueError(f"the image source gave {images.shape[0]} images for rows "
                                     f"{start}..{stop - 1}; give a Dataset whose items are "
                                     "single images, or a DataLoader whose collate_fn keeps "
                                     "every image.")
                yield start, stop, images.to(clip.device, clip.dtype, non_blocking=True), labels
        finally:
            # Forked workers share the pass's lock file; stop them now, not when a traceback
            # that still references this frame is collected, or the lock outlives the pass.
            getattr(batches, "_shutdown_workers", lambda: None)()

    def _decomposed(self, pieces: Rows) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """``(start, stop, arrays)`` of each piece: every cached field, as numpy on the CPU."""
        fields = self.meta["fields"]
        for start, stop, images, labels in self._loaded(pieces):
            parts = decompose(self.clip, images, granularity=self.granularity,
                              convention=self.convention, layers=self.layers)
            values = {name: getattr(parts, name) for name in PER_IMAGE_FIELDS} | {"labels": labels}
            values = {name: value.cpu().numpy() for name, value in values.items()
                      if name in fields}
            values["digests"] = _batch_digests(self.source, start, images, labels)
            yield start, stop, values

    def _write(self, pieces: Rows, first: tuple | None, batches: Iterator, sharded: bool) -> None:
        """Write this process's pieces, committing each batch (arrays flushed, then progress)."""
        from tqdm.auto import tqdm

        arrays, self.arrays = self.arrays, None
        if first is None:
            return
        arrays = arrays or {name: np.lib.format.open_memmap(self.path / f"{name}.npy", mode="r+")
                            for name in self.meta["fields"]}
        commits = _Commits(self.path, _identity(self.meta), self.world.rank, sharded)
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
        progress = _load_progress(self.path)
        done = 0 if progress is None else progress["done"]
        if done < self.n:
            raise RuntimeError(f"the cache at {self.path} holds {done} of {self.n} rows after "
                               "every process finished its share; run the pass again to "
                               "complete it.")
        if progress["sharded"]:
            _write_json_atomic(self.path / _PROGRESS, {"done": self.n,
                                                       "meta": _identity(self.meta)})
            for file in _rank_progress_files(self.path):
                file.unlink(missing_ok=True)

    def _check_rows(self, committed: Rows) -> None:
        """Raise unless the source's committed rows are those cached: every file's path, size
        and mtime for a folder, else the images and labels of the first and last batch of each
        committed span (read again)."""
        source, path = self.source, self.path
        stored = np.load(path / "digests.npy", mmap_mode="r")
        if isinstance(source, ImageFolder):
            found = ((start, stop, _file_digests(source, start, stop))
                     for start, stop in committed)
        else:
            spans = []
            for start, stop in committed:
                inside = _cut(start, stop, self.bounds)
                spans += inside[:1] + inside[-1:] if len(inside) > 1 else inside
            found = ((start, stop, _image_digests(images, labels))
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
                             f"{_REBUILD}")


class _Commits:
    """Records the rows one process committed, after each batch: ``progress.json``'s count in a
    one-process pass from row 0, else the process's own ``progress.rank{r}.json``."""

    def __init__(self, path: Path, identity: str, rank: int, sharded: bool) -> None:
        self.identity = identity
        self.file = path / (_rank_progress(rank) if sharded else _PROGRESS)
        self.rows: Rows | None = None
        if sharded:  # keep what this rank's file already holds, from an earlier pass
            self.rows = _read_progress_file(self.file)[0] if self.file.exists() else []

    def add(self, start: int, stop: int) -> None:
        if self.rows is None:
            _write_json_atomic(self.file, {"done": stop, "meta": self.identity})
            return
        self.rows = _merge([*self.rows, (start, stop)])
        _write_json_atomic(self.file, {"rows": [list(span) for span in self.rows],
                                       "meta": self.identity})


def _batch_bounds(source: Dataset | DataLoader, n: int, batch_size: int) -> list[int]:
    """Where the batches of a one-process pass start, then ``n``: a DataLoader's own batches
    (read from its batch sampler, no image loaded), else every ``batch_size`` rows."""
    if not isinstance(source, DataLoader):
        return [*range(0, n, batch_size), n]
    if source.batch_sampler is None:
        raise ValueError("the DataLoader has batch_size=None (no batches); give it a batch_size, "
                         "or pass its Dataset.")
    bounds = [0, *itertools.accumulate(len(indices) for indices in source.batch_sampler)]
    if bounds[-1] != n:
        raise ValueError(f"the image source would have yielded {bounds[-1]} of its {n} images (a "
                         "DataLoader with drop_last=True?); give a DataLoader that yields every "
                         "image once.")
    return bounds


def _gaps(rows: Rows, n: int) -> Rows:
    """The spans of ``0..n`` that ``rows`` (sorted, disjoint) do not cover."""
    gaps, at = [], 0
    for start, stop in rows:
        if start > at:
            gaps.append((at, start))
        at = max(at, stop)
    return gaps + ([(at, n)] if at < n else [])


def _cut(start: int, stop: int, bounds: list[int]) -> Rows:
    """The span ``start..stop`` cut at the batch bounds inside it."""
    points = [start, *bounds[bisect_right(bounds, start):bisect_left(bounds, stop)], stop]
    return list(zip(points[:-1], points[1:], strict=True))


def _piece_loader(source: Dataset | DataLoader, pieces: Rows, num_workers: int,
                  pin_memory: bool) -> DataLoader:
    """A DataLoader with one batch per piece: rows ``start..stop`` of the source, loaded by
    index (rows before them are never read). A DataLoader's dataset, collate_fn and worker
    settings are kept."""
    batches = [range(start, stop) for start, stop in pieces]
    if not isinstance(source, DataLoader):
        return DataLoader(source, batch_sampler=batches, num_workers=num_workers,
                          pin_memory=pin_memory)
    workers = {} if not source.num_workers else {
        "prefetch_factor": source.prefetch_factor, "worker_init_fn": source.worker_init_fn,
        "multiprocessing_context": source.multiprocessing_context, "timeout": source.timeout}
    return DataLoader(source.dataset, batch_sampler=batches, collate_fn=source.collate_fn,
                      num_workers=source.num_workers, pin_memory=source.pin_memory or pin_memory,
                      **workers)


def _cache_meta(clip: HookedCLIP, source: Dataset | DataLoader, n: int, layers: tuple[int, ...],
                convention: str, dtype: str, granularity: str = "head") -> dict:
    vit = clip.visual
    width, n_layers = vit.output_dim, vit.n_layers
    fields = {
        "heads": (dtype, [n, len(layers), vit.n_heads, width]),
        "attns": (dtype, [n, n_layers, width]),
        "mlps": (dtype, [n, n_layers, width]),
        "embed": (dtype, [n, width]),
        "image_embed": ("float32", [n, width]),
        "labels": ("int64", [n]),
        "digests": ("uint8", [n, DIGEST_SIZE]),
    }
    if convention == "centered":
        fields["attn_biases"] = (dtype, [n, n_layers, width])
        fields["ln_bias"] = (dtype, [n, width])
    if vit.pool is not None and vit.pool.has_mlp:
        fields["pool_mlp"] = (dtype, [n, width])
    if granularity == "token":
        fields["tokens"] = (dtype, [n, len(layers), vit.n_tokens, vit.n_heads, width])
    if isinstance(source, ImageFolder):
        record = {"kind": "folder",
                  "files": [file.relative_to(source.root).as_posix() for file in source.files]}
        root = str(source.root.resolve())
    else:
        record, root = {"kind": "data"}, None
    meta = {"version": CACHE_VERSION, "n": n, "layers": list(layers), "convention": convention,
            "dtype": dtype, "fields": fields, "fingerprint": model_fingerprint(clip),
            "classes": getattr(source, "classes", []), "source": record,
            "model_name": clip.model_name, "root": root}
    return json.loads(json.dumps(meta))  # as it reads back from meta.json (lists, not tuples)


def _check_target(path: Path) -> None:
    """Refuse a path that is a file or a folder holding anything but cache files."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"the cache path {path} is a file; give a new or empty folder.")
    if path.is_dir():
        foreign = sorted(entry.name for entry in path.iterdir()
                         if entry.name not in _OWNED and entry.name != _LOCK
                         and not _RANK_FILE.fullmatch(entry.name))
        if foreign:
            more = ", ..." if len(foreign) > 3 else ""
            raise ValueError(f"{path} exists and is not an empty folder or a decomposition cache "
                             f"(it holds {', '.join(foreign[:3])}{more}); give a new or empty "
                             "folder.")


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
def _writer_lock(path: Path, name: str = _LOCK, role: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path/name`` for a whole pass; refuse at once if it is held.

    A pass holds ``lock``; under torch.distributed its process ``r > 0`` holds ``lock.rank{r}``,
    so the processes of one pass never refuse each other.
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


def _check_rank_locks(path: Path) -> None:
    """Refuse while a process of an earlier distributed pass still holds its ``lock.rank{r}``
    (its process 0 gone, it may still write)."""
    if fcntl is None:
        return
    for file in sorted(path.glob("lock.rank*")):
        if _RANK_FILE.fullmatch(file.name):
            os.close(_lock_file(file))


def _remove_cache_files(path: Path) -> None:
    for file in _rank_progress_files(path):
        file.unlink(missing_ok=True)
    for name in _OWNED:
        (path / name).unlink(missing_ok=True)


def _prepare_folder(path: Path, meta: dict, overwrite: bool) -> tuple[Rows, bool]:
    """Check that the folder holds a compatible pass (repairing a lost meta.json); return the
    rows it has committed, after clearing it when there are none, and whether they are
    recorded per process."""
    progress = None if overwrite else _load_progress(path)
    if progress is None or not progress["rows"]:
        _remove_cache_files(path)  # nothing committed: start over with this call's settings
        return [], False
    try:
        existing = _load_meta(path)
    except _DamagedFile as damage:
        if progress["meta"] != _identity(meta):
            count = sum(stop - start for start, stop in progress["rows"])
            raise ValueError(f"{damage}. Its {count} committed images are not from this model, "
                             "these settings and images, so it cannot be restored from this "
                             "call.") from None
        _write_json_atomic(path / _META, meta)  # the committed rows are this call's: restore it
        existing = meta
    if existing["source"] != meta["source"]:
        raise ValueError(f"the cache at {path} was built from other images "
                         f"({_source_difference(existing['source'], meta['source'])}); "
                         f"{_REBUILD}")
    different = [key for key in _META_KEYS if existing[key] != meta[key]]
    if different:
        raise ValueError(f"{path} holds a cache with other settings ({', '.join(different)} "
                         "differ: another model, dataset size, layers, convention, dtype or "
                         f"granularity); {_REBUILD}")
    _check_progress(progress, existing)
    _check_arrays(path, meta)
    if existing != meta:  # only informational keys differ: the folder moved, the model's name
        _write_json_atomic(path / _META, meta)
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


def _check_free_space(path: Path, meta: dict) -> None:
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


def _create_files(path: Path, meta: dict) -> dict[str, np.memmap]:
    """Write ``meta.json``, then every array's header with its space reserved; on failure remove
    them all, leaving an empty folder."""
    arrays: dict[str, np.memmap] = {}
    try:
        _write_json_atomic(path / _META, meta)
        for name, (dtype, shape) in meta["fields"].items():
            file = path / f"{name}.npy"
            arrays[name] = np.lib.format.open_memmap(file, mode="w+", dtype=np.dtype(dtype),
                                                     shape=tuple(shape))
            _reserve(file)
    except OSError as error:
        arrays.clear()
        _remove_cache_files(path)
        raise OSError(error.errno, f"could not create the cache files in {path} "
                      f"({_cache_bytes(meta) / 2**30:.2f} GiB): {error.strerror or error}; free "
                      "some space or choose a folder on another disk.") from error
    return arrays
