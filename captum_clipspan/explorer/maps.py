"""Patch maps for the explorer's thumbnails: each head's direct effect per patch along each of
its TextSpan directions (what :class:`~captum_clipspan.PatchContribution` computes for one head,
here for every planned head of an image from one decomposition pass), stored as 8-bit values on
a shared colour scale per (head, text)."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..attr.base import patch_grid
from ..decomposition import compute_dtype, decompose
from ..hooked.clip import HookedCLIP
from .images import ImageRows
from .selection import TextBases

__all__ = ["MAP_BUDGET", "PatchMaps", "encode_int8", "head_patch_maps", "pair_maps",
           "plan_maps"]


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


MAP_BUDGET = 1 << 29
"""Bytes of per-(token, head) terms one decomposition pass of the patch maps may hold: the
images of a pass are bounded so that its ``[B, L_s, N, H, X]`` terms stay under it (``L_s`` the
layers of its heads, ``X`` the columns :func:`pair_maps` projects on)."""


def head_patch_maps(clip: HookedCLIP, images: ImageRows, bases: TextBases,
                    plan: Sequence[Sequence[int]], batch_size: int = 64,
                    show_progress: bool = True) -> PatchMaps:
    """Patch maps of the planned (row, head) pairs, one forward pass per image for all heads.

    Each batch of images is decomposed once at token granularity (:func:`pair_maps`); every
    head planned on an image is read from it and projected on its own TextSpan directions
    (``bases.basis[k, :counts[k]]``): the values of :class:`~captum_clipspan.PatchContribution`
    with ``heads=[(layer, head)]`` and ``texts=`` those directions, for one forward pass per
    image instead of one per (image, head).

    Args:
        clip: the model that wrote the cache.
        images: the cache rows' images (anything with ``model_input(rows) -> [B, 3, S, S]``).
        bases: the heads and their TextSpan directions.
        plan: per head of ``bases``, the rows to map (:func:`plan_maps`).
        batch_size: the most images per forward pass (fewer when their per-token terms would
            pass :data:`MAP_BUDGET`).
        show_progress: a progress bar over images.

    Returns:
        :class:`PatchMaps`, with ``maps[(row, k)]`` ``[m_k, g, g]`` (float32, cosine-similarity
        units) for every planned pair.

    Examples::

        >>> plan = plan_maps([[3, 8], [8]], spotlight=[], limit=10)   # head 0: rows 3, 8; ...
        >>> maps = head_patch_maps(clip, ImageRows(files, clip.preprocess), bases, plan)
        >>> maps.maps[(8, 1)].shape   # [m_1, g, g]
    """
    from tqdm.auto import tqdm

    wanted: dict[int, list[int]] = {}  # row -> the heads (indices into bases) mapped on it
    for k, rows in enumerate(plan):
        for row in rows:
            wanted.setdefault(int(row), []).append(k)
    vit = clip.visual
    grid = (int(vit.grid_size[0]), int(vit.grid_size[1]))
    maps: dict[tuple[int, int], Tensor] = {}
    scale = torch.zeros(bases.basis.shape[:2])
    with tqdm(total=len(wanted), desc="patch maps", unit="img", disable=not show_progress) as bar:
        for rows in _passes(clip, bases, wanted, batch_size):
            pairs = [(i, k) for i, row in enumerate(rows) for k in wanted[row]]
            inputs = images.model_input(rows).to(device=clip.device, dtype=clip.dtype)
            values = pair_maps(clip, inputs, pairs, bases).float().cpu()  # [P, m, g, g]
            for (i, k), value in zip(pairs, values, strict=True):
                m = bases.counts[k]
                maps[(rows[i], k)] = value[:m].clone()  # not a view: the batch is freed
                scale[k, :m] = torch.maximum(scale[k, :m], value[:m].abs().amax((1, 2)))
            bar.update(len(rows))
    return PatchMaps(maps, scale, grid)


def _passes(clip: HookedCLIP, bases: TextBases, wanted: dict[int, list[int]],
            batch_size: int) -> list[list[int]]:
    """The rows of ``wanted`` in passes of at most ``batch_size`` images whose token terms
    (``[B, L_s, N, H, X]``, as :func:`pair_maps` sizes them) stay within :data:`MAP_BUDGET`."""
    vit = clip.visual
    cell = vit.n_tokens * vit.n_heads * torch.empty(
        (), dtype=compute_dtype(vit.dtype)).element_size()
    passes: list[list[int]] = []
    rows: list[int] = []
    heads: set[int] = set()
    # Rows whose heads share layers pass together: the token terms of fewer layers per pass.
    for row in sorted(wanted, key=lambda row: sorted({bases.heads[k][0] for k in wanted[row]})):
        grown = heads | set(wanted[row])
        columns = min(vit.output_dim, sum(bases.counts[k] for k in grown))
        layers = len({bases.heads[k][0] for k in grown})
        if rows and (len(rows) == batch_size or
                     (len(rows) + 1) * layers * columns * cell > MAP_BUDGET):
            passes.append(rows)
            rows, grown = [], set(wanted[row])
        rows.append(row)
        heads = grown
    return passes + [rows] if rows else passes


def pair_maps(clip: HookedCLIP, inputs: Tensor, pairs: Sequence[tuple[int, int]],
              bases: TextBases, in_pass: bool | None = None) -> Tensor:
    """The patch maps of (image, head) pairs, from one decomposition of ``inputs``.

    ``inputs`` are decomposed once at token granularity over the pairs' layers; each pair's head
    is read from it and projected on its own directions. The projection happens in the pass
    (the union of the pairs' directions as ``text_embeddings``: ``X`` columns) when they are
    fewer than the joint width ``E``, else after it (``X = E``): the same values either way,
    those of :class:`~captum_clipspan.PatchContribution` (``"reference"`` convention,
    normalized) with the head alone and its directions as texts.

    Args:
        clip: the model.
        inputs: ``[B, 3, S, S]`` preprocessed images.
        pairs: ``P`` pairs ``(i, k)``: the image ``inputs[i]`` and the head ``bases.heads[k]``.
        bases: the heads and their directions ``[K, m, E]`` (zero rows pad heads with fewer).
        in_pass: ``True``/``False`` force the projection in or after the pass (default: the
            cheaper).

    Returns:
        ``[P, m, g, g]`` in the decomposition's dtype (zero maps for a head's padding rows).

    Examples::

        >>> maps = pair_maps(clip, images, [(0, 3), (1, 3), (1, 7)], bases)   # [3, m, g, g]
    """
    vit = clip.visual
    heads = sorted({k for _, k in pairs})
    layers = sorted({bases.heads[k][0] for k in heads})
    basis = bases.basis.to(device=vit.device, dtype=compute_dtype(vit.dtype))
    directions = torch.cat([basis[k, :bases.counts[k]] for k in heads])  # [X, E]
    if in_pass is None:
        in_pass = directions.shape[0] < vit.output_dim
    parts = decompose(clip, inputs, granularity="token", layers=layers,
                      text_embeddings=directions if in_pass else None)
    index = {name: torch.tensor(values, device=vit.device) for name, values in (
        ("image", [i for i, _ in pairs]), ("head", [bases.heads[k][1] for _, k in pairs]),
        ("layer", [layers.index(bases.heads[k][0]) for _, k in pairs]))}
    tokens = parts.tokens[index["image"], index["layer"], :, index["head"]]  # [P, N, X]
    m = bases.basis.shape[1]
    if in_pass:  # each pair's own columns; a head's padding rows read an appended zero column
        first = dict(zip(heads, [0, *itertools.accumulate(bases.counts[k] for k in heads)],
                         strict=False))
        columns = torch.tensor([[first[k] + j if j < bases.counts[k] else len(directions)
                                 for j in range(m)] for _, k in pairs], device=vit.device)
        padded = torch.cat([tokens, tokens.new_zeros(*tokens.shape[:-1], 1)], -1)
        per_token = padded.gather(-1, columns[:, None].expand(-1, tokens.shape[1], -1))
    else:
        chosen = basis[torch.tensor([k for _, k in pairs], device=vit.device)]  # [P, m, E]
        per_token = torch.einsum("pne,pme->pnm", tokens, chosen)
    return patch_grid(per_token.transpose(1, 2), vit)  # [P, m, g, g]
