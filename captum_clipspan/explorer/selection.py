"""Which images the explorer shows: each head's top and bottom images along each of its
TextSpan texts, found in one streamed pass over the cache.

An image's *coordinate* along a head's text is the head's direct effect on it, centred on the
head's mean over the images, projected on that text's TextSpan direction (the text's
embedding restricted to the head's span, orthogonal to the texts chosen before it): the
coordinates TextSpan's variance explained is measured in (cosine-similarity units).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..attr.textspan import TextSpanReport
from ..cache import DecompositionCache

__all__ = ["TextBases", "TopImages", "featured_rows", "top_images"]


@dataclass
class TextBases:
    """The report's heads with their TextSpan directions, padded to one width.

    Attributes:
        heads: the ``K`` ``(layer, head)`` pairs, in report order.
        rows: ``[K]`` each head's row in the cache's ``heads`` array (``layer_row * H + head``).
        basis: ``[K, m, E]`` unit directions (zero rows pad heads with fewer texts).
        mean: ``[K, E]`` each head's mean direct effect (what TextSpan centred on).
        counts: ``[K]`` how many texts each head has.
    """

    heads: list[tuple[int, int]]
    rows: Tensor
    basis: Tensor
    mean: Tensor
    counts: list[int]

    @classmethod
    def from_report(cls, report: TextSpanReport, cache: DecompositionCache) -> TextBases:
        """The bases of the report's heads that the cache holds."""
        heads = [key for key in report if key[0] in cache.layers and key[1] < cache.n_heads]
        if not heads:
            raise ValueError(f"the TextSpan report holds no head of the cache (cached layers "
                             f"{list(cache.layers)}, report heads {list(report)[:8]}).")
        m = max(len(report[key].texts) for key in heads)
        width = cache.heads.shape[-1]
        basis = torch.zeros(len(heads), m, width)
        for k, key in enumerate(heads):
            rows = report[key].basis.float()
            basis[k, :rows.shape[0]] = rows
        mean = torch.stack([report[key].mean.float() for key in heads])
        rows = torch.tensor([cache.layers.index(layer) * cache.n_heads + head
                             for layer, head in heads])
        return cls(heads, rows, basis, mean, [len(report[key].texts) for key in heads])

    def coordinates(self, head_terms: Tensor) -> Tensor:
        """``[n, L_s, H, E]`` cached head terms -> ``[n, K, m]`` coordinates along the texts."""
        chosen = head_terms.flatten(1, 2)[:, self.rows] - self.mean
        return torch.einsum("nke,kme->nkm", chosen, self.basis)


@dataclass
class TopImages:
    """The images with the largest and smallest coordinate along each head's texts.

    Attributes:
        top, bottom: ``[K, m, n]`` cache rows, most extreme first.
        top_scores, bottom_scores: ``[K, m, n]`` their coordinates.
        scale: ``[K, m]`` the largest absolute coordinate over the cache (the range of a text).
    """

    top: Tensor
    bottom: Tensor
    top_scores: Tensor
    bottom_scores: Tensor
    scale: Tensor


def top_images(cache: DecompositionCache, bases: TextBases, n: int,
               chunk: int = 4096) -> TopImages:
    """Each head's ``n`` top and bottom images along each of its texts, in one streamed pass.

    Args:
        cache: the decomposition cache.
        bases: the heads and their directions (:meth:`TextBases.from_report`).
        n: images per side (at most the cache size).
        chunk: images read at once.
    """
    n = min(n, len(cache))
    best = worst = None
    scale = torch.zeros(bases.basis.shape[:2])
    for rows, block in cache.chunks(["heads"], chunk):
        values = bases.coordinates(block["heads"]).permute(1, 2, 0)  # [K, m, n_chunk]
        index = torch.arange(rows.start, rows.stop).expand_as(values)
        scale = torch.maximum(scale, values.abs().amax(-1))
        best = _keep(best, values, index, n, largest=True)
        worst = _keep(worst, values, index, n, largest=False)
    return TopImages(best[1], worst[1], best[0], worst[0], scale)


def _keep(kept: tuple[Tensor, Tensor] | None, values: Tensor, index: Tensor, n: int,
          largest: bool) -> tuple[Tensor, Tensor]:
    """The ``n`` most extreme of the kept ``(values, rows)`` and a new chunk's."""
    if kept is not None:
        values = torch.cat([kept[0], values], -1)
        index = torch.cat([kept[1], index], -1)
    top, where = values.topk(min(n, values.shape[-1]), dim=-1, largest=largest)
    return top, index.gather(-1, where)


def featured_rows(tops: TopImages, extra: Sequence[int] = ()) -> list[int]:
    """Every cache row a head page shows, then ``extra`` rows, without repeats, in order."""
    rows = torch.cat([tops.top.flatten(), tops.bottom.flatten()]).tolist()
    return list(dict.fromkeys([*rows, *extra]))
