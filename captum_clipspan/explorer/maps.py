"""Patch maps for the explorer's thumbnails: each head's direct effect per patch along each of
its TextSpan directions, computed with :class:`~captum_clipspan.PatchContribution` and stored
as 8-bit values on a shared colour scale per (head, text)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..attr.patches import PatchContribution
from ..hooked.clip import HookedCLIP
from .images import ImageRows
from .selection import TextBases

__all__ = ["PatchMaps", "encode_int8", "head_patch_maps", "plan_maps"]


@dataclass
class PatchMaps:
    """Patch maps of some (image, head) pairs.

    Attributes:
        maps: ``{(row, k): [m_k, g, g]}`` for cache row ``row`` and the ``k``-th head of the
            bases, one map per text of the head (cosine-similarity units).
        scale: ``[K, m]`` the largest absolute value of each (head, text)'s maps: the colour
            scale runs from ``-scale`` to ``+scale``.
        grid: ``(g, g)`` the patch grid.
    """

    maps: dict[tuple[int, int], Tensor]
    scale: Tensor
    grid: tuple[int, int]

    def encoded(self, row: int, k: int) -> str | None:
        """The maps of (row, head ``k``) as base64 int8, each text on its own scale."""
        maps = self.maps.get((row, k))
        if maps is None:
            return None
        scale = self.scale[k, :maps.shape[0], None, None].clamp_min(1e-30)
        return encode_int8(maps / scale)


def encode_int8(values: Tensor) -> str:
    """Values in ``[-1, 1]`` as base64 of int8 (``round(127 * v)``), row-major."""
    codes = (values.clamp(-1, 1) * 127).round().to(torch.int8)
    return base64.b64encode(codes.contiguous().numpy().tobytes()).decode("ascii")


def plan_maps(head_rows: Sequence[Sequence[int]], spotlight: Sequence[int],
              limit: int) -> list[list[int]]:
    """Which rows get a map for each head, until ``limit`` (image, head) pairs: first the rows
    each head's page shows, taken in turn across heads (every head's first row, then every
    head's second row, ...) so that a limit leaves no head without maps; then the spotlight
    images, one at a time for every head.

    Args:
        head_rows: per head, the rows its page shows, most important first.
        spotlight: rows whose image pages show every head's maps.
        limit: the most (image, head) pairs.

    Returns:
        Per head, its rows, without repeats.
    """
    depth = max((len(rows) for rows in head_rows), default=0)
    pairs = [(k, rows[i]) for i in range(depth) for k, rows in enumerate(head_rows)
             if i < len(rows)]
    pairs += [(k, row) for row in spotlight for k in range(len(head_rows))]
    plan: list[dict[int, None]] = [{} for _ in head_rows]
    budget = limit
    for k, row in pairs:
        if budget > 0 and row not in plan[k]:
            plan[k][row] = None
            budget -= 1
    return [list(rows) for rows in plan]


def head_patch_maps(clip: HookedCLIP, images: ImageRows, bases: TextBases,
                    plan: Sequence[Sequence[int]], batch_size: int = 64,
                    show_progress: bool = True) -> PatchMaps:
    """Patch maps of the planned (row, head) pairs, one PatchContribution pass per head.

    Args:
        clip: the model that wrote the cache.
        images: the cache rows' images.
        bases: the heads and their TextSpan directions.
        plan: per head of ``bases``, the rows to map (:func:`plan_maps`).
        batch_size: images per forward pass.
        show_progress: a progress bar over heads.
    """
    from tqdm.auto import tqdm

    maps: dict[tuple[int, int], Tensor] = {}
    scale = torch.zeros(bases.basis.shape[:2])
    for k in tqdm(range(len(bases.heads)), desc="patch maps", unit="head",
                  disable=not show_progress):
        rows = list(plan[k])
        if not rows:
            continue
        texts = bases.basis[k, :bases.counts[k]].to(clip.device)
        attribution = PatchContribution(clip, heads=[bases.heads[k]])
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            inputs = images.model_input(batch).to(device=clip.device, dtype=clip.dtype)
            with torch.no_grad():
                values = attribution.attribute(inputs, texts=texts).float().cpu()
            scale[k, :values.shape[1]] = torch.maximum(scale[k, :values.shape[1]],
                                                       values.abs().amax((0, 2, 3)))
            maps.update({(row, k): value for row, value in zip(batch, values, strict=True)})
    grid = tuple(clip.visual.grid_size)
    return PatchMaps(maps, scale, (int(grid[0]), int(grid[1])))
