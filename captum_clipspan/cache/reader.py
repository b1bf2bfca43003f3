"""Reading a cache: :class:`DecompositionCache`, the arrays of a cache folder as read-only memory
maps, opened only once ``meta.json``, the progress and every array's header agree, and every row
checked against its checksum the first time it is read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..components import FIELDS, parse_component
from ..hooked.clip import HookedCLIP
from ..validation import resolve_head, resolve_layer
from .checksums import CheckedArray, RowChecks, checked_fields, unwritten_rows
from .fingerprint import model_fingerprint
from .format import CHECKSUMS, META_FILE, PROGRESS_FILE, check_arrays, load_meta
from .progress import check_progress, load_progress


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
        checksums: ``[N, A]`` uint64 checksum of each row of every other array, recorded when
            the row was written (:mod:`~captum_clipspan.cache.checksums`).
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
    checksums: np.ndarray | None = None
    row_checks: RowChecks | None = field(default=None, repr=False, compare=False)

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

    def verify(self) -> None:
        """Check every row of every array against its checksum (reads the whole cache once: 7 to
        14 s of CPU per 10 GB, plus the disk's read time); rows checked before are skipped.

        Raises:
            ValueError: naming each damaged file and its first damaged rows.
        """
        if self.row_checks is not None:
            self.row_checks.verify_all()

    @classmethod
    def open(cls, path: str | Path, allow_partial: bool = False,
             check_rows: bool = True) -> DecompositionCache:
        """Open a cache folder read-only; a partial one only with ``allow_partial`` (its rows
        committed from row 0 on, by one process or by every process of a distributed pass).

        Args:
            path: the cache folder.
            allow_partial: open an unfinished cache (its rows committed from row 0 on).
            check_rows: check each row against its checksum the first time this reader reads
                it (a SHA-256 of the whole row: 7 to 14 s of CPU per 10 GB read, once; a head's
                column reads every row of ``heads`` once). ``False`` trusts the files.
                Either way, rows a progress file claims but that were never written are refused.

        Raises:
            ValueError: naming the file, if ``meta.json`` or ``progress.json`` is missing or
                damaged, an array's header, dtype, shape or size is not what meta.json says, a
                committed row was never written, or (when read) a row does not match its
                checksum.
        """
        path = Path(path)
        if not (path / META_FILE).is_file() and not (path / PROGRESS_FILE).is_file():
            raise ValueError(f"{path} is not a decomposition cache (no meta.json).")
        meta, progress = load_meta(path), load_progress(path)
        done = 0 if progress is None else progress["done"]
        if progress is not None:
            check_progress(progress, meta)
        if done < meta["n"] and (not allow_partial or progress is None):
            raise ValueError(f"the cache at {path} is incomplete ({done} of {meta['n']} "
                             "images); run cache_decomposition again to resume it.")
        check_arrays(path, meta)
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r")[:done]
                  for name in meta["fields"]}
        unwritten_rows(path, arrays[CHECKSUMS], [(0, done)])
        checks = RowChecks(path, {name: arrays[name] for name in checked_fields(meta["fields"])},
                           arrays[CHECKSUMS])
        if check_rows:
            arrays |= {name: CheckedArray.wrap(array, name, checks)
                       for name, array in checks.arrays.items()}
        return cls(path=path, meta=meta, row_checks=checks, **arrays)

    def check_model(self, clip: HookedCLIP) -> None:
        """Raise unless this cache was written by the same model weights."""
        if self.meta["fingerprint"] != model_fingerprint(clip):
            raise ValueError(f"the cache at {self.path} was written by another model "
                             f"({self.meta.get('model_name')!r}, fingerprint "
                             f"{self.meta['fingerprint']}); use a cache of this model.")

    def head(self, layer: int, head: int) -> np.ndarray:
        """One head's direct effects ``[N, E]`` (``layer`` is a model layer index)."""
        layer = resolve_layer(layer, self.attns.shape[1])
        head = resolve_head(head, self.n_heads)
        if layer not in self.layers:
            raise ValueError(f"layer {layer} is not cached; cached layers: {list(self.layers)}.")
        return self.heads[:, self.layers.index(layer), head]
