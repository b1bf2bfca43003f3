"""Heads whose TextSpan texts cover a concept: the spurious cue's heads (the paper's Sec. 5.1)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..attr.textspan import TextSpanReport
from ..hooked.clip import HookedCLIP
from ..validation import (
    check_text_embeddings,
)

Head = tuple[int, int]
"""A head as ``(layer, head)``."""


# Head selection -------------------------------------------------------------------------------

def _concept_directions(concept: Any, clip: HookedCLIP | None, width: int,
                        center: bool = False) -> Tensor:
    """A concept (string, strings or text embeddings) -> unit directions ``[T, E]`` (centered on
    their mean first when ``center``)."""
    if isinstance(concept, str) or (isinstance(concept, (list, tuple)) and concept
                                    and all(isinstance(t, str) for t in concept)):
        if clip is None:
            raise ValueError("a concept given as text needs clip= to encode it (or pass its "
                             "text embeddings [T, E]).")
        concept = clip.encode_text(list(concept) if not isinstance(concept, str) else concept)
    elif not isinstance(concept, Tensor):
        raise TypeError(f"concept must be a string, a non-empty list of strings or text "
                        f"embeddings [T, {width}], got {type(concept).__name__}.")
    directions = check_text_embeddings(concept.detach().float().cpu(), width)
    if (directions.norm(dim=-1) == 0).any():
        raise ValueError("concept embeddings must be non-zero.")
    directions = torch.nn.functional.normalize(directions, dim=-1)
    if center:
        if directions.shape[0] < 2:
            raise ValueError("center=True needs a concept of two or more texts (their mean is "
                             "removed); got one.")
        directions = directions - directions.mean(0)
        if (directions.norm(dim=-1) < 1e-6).any():
            raise ValueError("center=True: the concept's texts do not differ (a text equals "
                             "their mean).")
        directions = torch.nn.functional.normalize(directions, dim=-1)
    return directions


def head_concept_scores(report: TextSpanReport, concept: Any, clip: HookedCLIP | None = None,
                        m: int | None = None, center: bool = False) -> dict[Head, float]:
    """How well each head's first ``m`` TextSpan texts cover a concept, in ``[0, 1]``.

    The score of a head is the mean, over the concept's unit directions ``c``, of
    ``||B_m c||^2``, where ``B_m`` ``[m, E]`` are the head's first ``m`` orthonormal TextSpan
    basis rows: the fraction of a unit variance along ``c`` that the head's text span explains
    (the squared cosine between ``c`` and the span). It is 1 when the concept lies in the span
    and 0 when it is orthogonal to it; no forward pass is needed for embeddings.

    Args:
        report: a :class:`~captum_clipspan.TextSpanReport`.
        concept: a string, a list of strings (encoded with ``clip``), or text embeddings
            ``[E]`` / ``[T, E]`` (normalized here).
        clip: the model, needed when ``concept`` is text.
        m: basis rows per head (default: the fewest texts of any head, so every head is scored
            with a span of the same size).
        center: remove the mean of the concept's texts before scoring, so that a head is
            scored on the differences among them (``"striped"`` vs ``"dotted"`` background)
            rather than on what they share (``"a photo of an object on a ... background"``,
            which every head's span holds in part). Needs two or more texts.

    Returns:
        ``{(layer, head): score}`` in the report's order.
    """
    if not isinstance(report, TextSpanReport):
        raise TypeError(f"report must be a TextSpanReport, got {type(report).__name__}.")
    if len(report) == 0:
        raise ValueError("the report has no heads.")
    m_max = min(len(result.texts) for result in report.results.values())
    if m is None:
        m = m_max
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= m_max:
        raise ValueError(f"m must be an int in 1..{m_max} (the fewest texts of any head), "
                         f"got {m!r}.")
    width = next(iter(report.results.values())).basis.shape[-1]
    directions = _concept_directions(concept, clip, width, center)
    return {key: float(((result.basis[:m].float().cpu() @ directions.T) ** 2).sum(0).mean())
            for key, result in report.results.items()}


def heads_matching(report: TextSpanReport, concept: Any, clip: HookedCLIP | None = None,
                   k: int = 4, m: int | None = None, center: bool = False) -> list[Head]:
    """The ``k`` heads whose TextSpan texts best match a concept (see :func:`head_concept_scores`).

    Args:
        report: a :class:`~captum_clipspan.TextSpanReport`.
        concept: a string (e.g. ``"a photo of a place"``), a list of strings, or text
            embeddings ``[T, E]``.
        clip: the model, needed when ``concept`` is text.
        k: how many heads, ``1..len(report)``.
        m: basis rows per head (default: the fewest texts of any head).
        center: score the differences among the concept's texts (see
            :func:`head_concept_scores`).

    Returns:
        ``k`` ``(layer, head)`` pairs, best first (ties: lower layer, then head, first).
    """
    return top_heads(head_concept_scores(report, concept, clip, m, center), k)


def top_heads(scores: dict[Head, float], k: int) -> list[Head]:
    """The ``k`` best-scored heads, best first (ties: lower layer, then head, first)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(scores):
        raise ValueError(f"k must be an int in 1..{len(scores)} (the report's heads), "
                         f"got {k!r}.")
    return sorted(scores, key=lambda key: (-scores[key], key))[:k]
