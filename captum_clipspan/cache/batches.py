"""Row spans of a cache pass and its batches: those of a one-process pass, whatever the number of
processes, so every row is computed in the same batch and the arrays are the same bit for bit."""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..sources import split_batch

Rows = list[tuple[int, int]]  # row spans [start, stop), sorted and disjoint


def merge_spans(rows: Sequence[Sequence[int]]) -> Rows:
    """Sorted, disjoint spans covering the same rows as ``rows``."""
    merged: Rows = []
    for start, stop in sorted((int(a), int(b)) for a, b in rows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def gaps(rows: Rows, n: int) -> Rows:
    """The spans of ``0..n`` that ``rows`` (sorted, disjoint) do not cover."""
    found, at = [], 0
    for start, stop in rows:
        if start > at:
            found.append((at, start))
        at = max(at, stop)
    return found + ([(at, n)] if at < n else [])


def cut(start: int, stop: int, bounds: list[int]) -> Rows:
    """The span ``start..stop`` cut at the batch bounds inside it."""
    points = [start, *bounds[bisect_right(bounds, start):bisect_left(bounds, stop)], stop]
    return list(zip(points[:-1], points[1:], strict=True))


def batch_bounds(source: Dataset | DataLoader, n: int, batch_size: int) -> list[int]:
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


def piece_loader(source: Dataset | DataLoader, pieces: Rows, num_workers: int,
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


def loaded_pieces(clip: Any, source: Dataset | DataLoader, pieces: Rows,
                  num_workers: int) -> Iterator[tuple[int, int, Tensor, Tensor]]:
    """``(start, stop, images, labels)`` of each piece (:func:`piece_loader`), on the model's
    device and dtype; a source that yields another number of images for a piece is refused."""
    loader = piece_loader(source, pieces, num_workers, pin_memory=clip.device.type == "cuda")
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
