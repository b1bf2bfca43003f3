"""Zero-shot evaluation, written once: classify embeddings by their class-embedding scores and
count what is right.

Every accuracy in the package (mean-ablation studies, per-head probes, TextSpan's projections,
worst-group accuracy, the toys' training records) goes through :func:`predict` and
:func:`correct`; :meth:`~captum_clipspan.ZeroShotClassifier.accuracy` wraps them for one set of
embeddings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .cache import DecompositionCache

__all__ = ["correct", "mean_image_embedding", "predict"]


def predict(embeddings: Tensor, class_embeddings: Tensor) -> Tensor:
    """The class of each embedding: the argmax of its dot product with the class embeddings.

    With unit-norm class embeddings this is CLIP's zero-shot rule (the image's norm does not
    change the argmax, so ablated or partial embeddings need no renormalizing).

    Args:
        embeddings: ``[..., E]``.
        class_embeddings: ``[C, E]``.

    Returns:
        ``LongTensor [...]`` class indices, on ``embeddings``' device.
    """
    weights = class_embeddings.to(device=embeddings.device, dtype=torch.float32)
    return (embeddings.float() @ weights.T).argmax(-1)


def correct(embeddings: Tensor, class_embeddings: Tensor, labels: Tensor) -> Tensor:
    """Whether each embedding is classified as its label.

    Args:
        embeddings: ``[N, ..., E]``: one or more settings per image (e.g. ``[N, L, H, E]``, one
            per head).
        class_embeddings: ``[C, E]``.
        labels: ``[N]`` class indices.

    Returns:
        ``BoolTensor [N, ...]``; ``.sum(0)`` counts the correct images of each setting.
    """
    predictions = predict(embeddings, class_embeddings)
    labels = labels.to(predictions.device).reshape(-1, *[1] * (predictions.dim() - 1))
    return predictions == labels


def mean_image_embedding(cache: DecompositionCache, chunk: int = 4096) -> Tensor:
    """The mean image embedding ``[E]`` of a cache (accumulated in float64, read in chunks)."""
    total = torch.zeros(cache.image_embed.shape[1], dtype=torch.float64)
    for _, block in cache.chunks(["image_embed"], chunk, torch.float64):
        total += block["image_embed"].sum(0)
    return (total / max(len(cache), 1)).float()
