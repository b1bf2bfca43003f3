"""The result of a decomposition: a :class:`Decomposition` of image embeddings into direct terms.

Fields are named after the paper's terms (Gandelsman et al., Sec. 3): the embedding, each MSA and
MLP layer, and per-head and per-(token, head) terms of the selected layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

GRANULARITIES = ("layer", "head", "token")
CONVENTIONS = ("reference", "centered")


@dataclass
class Decomposition:
    """The direct-effect terms of a batch of image embeddings.

    ``X`` is the joint-space width ``E``, or the number of texts ``T`` when the decomposition was
    projected on text embeddings. ``L`` is the number of layers, ``L_s`` the number of selected
    layers (``layers``), ``N`` the number of tokens (prefix tokens first), ``H`` heads.

    Attributes:
        embed: ``[B, X]`` the embedding term (patch embedding, prefix tokens, positions, pre-norm).
        attns: ``[B, L, X]`` each whole MSA layer (its out-projection bias included).
        mlps: ``[B, L, X]`` each MLP layer.
        heads: ``[B, L_s, H, X]`` per-head terms (granularity ``"head"`` or ``"token"``).
        tokens: ``[B, L_s, N, H, X]`` per (token, head) terms (granularity ``"token"``).
        attn_biases: ``[B, L, X]`` the part of each MSA layer in no head: its out-projection bias
            (``"centered"`` only; in ``"reference"`` it is spread over the heads and tokens).
        ln_bias: ``[B, X]`` the readout's constant: the final norm's bias, and for attention
            pools their biases and position embedding, and a projection bias (``"centered"``
            only; in ``"reference"`` it is shared by the residual terms).
        pool_mlp: ``[B, X]`` an attention pool's own MLP branch (SigLIP, PE-Core), else ``None``.
        image_embed: ``[B, X]`` what the terms sum to: the image embedding (unit norm when
            ``normalized``), or its dot products with the texts.
        layers: the layer indices of ``heads`` and ``tokens``.
        convention: ``"reference"`` or ``"centered"``.
        normalized: whether every term was divided by the embedding's norm.
        text_embeddings: ``[T, E]`` the texts the terms were projected on, or ``None``.
    """

    embed: Tensor
    attns: Tensor
    mlps: Tensor
    image_embed: Tensor
    layers: tuple[int, ...]
    convention: str
    normalized: bool
    heads: Tensor | None = None
    tokens: Tensor | None = None
    attn_biases: Tensor | None = None
    ln_bias: Tensor | None = None
    pool_mlp: Tensor | None = None
    text_embeddings: Tensor | None = None

    def total(self) -> Tensor:
        """The sum of all terms, ``[B, X]``; equals ``image_embed`` up to rounding."""
        total = self.embed + self.attns.sum(1) + self.mlps.sum(1)
        for extra in (self.ln_bias, self.pool_mlp):
            if extra is not None:
                total = total + extra
        return total

    def convergence_delta(self) -> Tensor:
        """Completeness error per example and output column, ``total() - image_embed``."""
        return self.total() - self.image_embed

    def to(self, *args: Any, **kwargs: Any) -> Decomposition:
        """Move every tensor field (``Tensor.to`` arguments)."""
        values = {
            f.name: getattr(self, f.name).to(*args, **kwargs)
            if isinstance(getattr(self, f.name), Tensor) else getattr(self, f.name)
            for f in fields(self)
        }
        return Decomposition(**values)


PER_IMAGE_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Decomposition)
    if f.name not in ("layers", "convention", "normalized", "text_embeddings"))
"""The per-image tensor fields of a :class:`Decomposition` (what a cache stores of it)."""

TERM_FIELDS: tuple[str, ...] = tuple(
    name for name in PER_IMAGE_FIELDS if name not in ("image_embed", "tokens"))
"""The fields holding direct terms ``[B, ..., X]`` (what component means average)."""


def concatenate(parts: Sequence[Decomposition]) -> Decomposition:
    """Join decompositions of consecutive batches along the batch dimension."""
    first = parts[0]
    values = {
        f.name: torch.cat([getattr(p, f.name) for p in parts])
        if isinstance(getattr(first, f.name), Tensor) and f.name != "text_embeddings"
        else getattr(first, f.name)
        for f in fields(first)
    }
    return Decomposition(**values)
