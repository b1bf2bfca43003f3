"""Head-specific image retrieval (the paper's Figures 1 and 5).

Images of a cache are ranked by one head's direct effect: its dot product with a text query (how
much the head pushes the image towards the text), or its cosine similarity with the same head's
direct effect on a query image (images the head "sees" alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import DecompositionCache
from .decomposition import decompose
from .hooked.clip import HookedCLIP


@dataclass
class RetrievalResult:
    """The top images of a cache for one head.

    Attributes:
        indices: ``[k]`` positions in the cache (and in the dataset it was made from).
        scores: ``[k]`` the head's scores, best first.
        layer, head: the head.
        metric: ``"dot"`` or ``"cosine"``.
    """

    indices: Tensor
    scores: Tensor
    layer: int
    head: int
    metric: str


def retrieve(cache: DecompositionCache, layer: int, head: int, query: str | Tensor | int,
             k: int = 10, clip: HookedCLIP | None = None, metric: str | None = None,
             lowest: bool = False, chunk: int = 8192) -> RetrievalResult:
    """Top-``k`` cached images for one head and a query.

    Args:
        cache: a :class:`~captum_clipspan.DecompositionCache` that holds ``layer``.
        layer, head: the head (``layer`` is a model layer index; negative counts from the end).
        query: a text (needs ``clip``), a text embedding ``[E]``, an image ``[3, H, W]`` (needs
            ``clip``; compared through this head's direct effect on it) or an int: a cached image.
        k: how many images.
        clip: the model that wrote the cache; needed for string and image queries.
        metric: ``"dot"`` (default for texts) or ``"cosine"`` (default for images).
        lowest: return the lowest-scoring images instead (the paper's red-bordered examples).
        chunk: rows scored at once (memory stays bounded for large caches).

    Examples::

        >>> top = cs.retrieve(cache, layer=11, head=4, query="a photo taken in Paris", clip=clip)
        >>> top.indices   # positions in the dataset
    """
    n_layers = cache.attns.shape[1]
    layer = layer % n_layers
    if not 0 <= head < cache.n_heads:
        raise ValueError(f"head must be in 0..{cache.n_heads - 1}, got {head}.")
    if not 1 <= k <= len(cache):
        raise ValueError(f"k must be in 1..{len(cache)} (the cache size), got {k}.")
    vector, is_image = _query_vector(cache, layer, head, query, clip)
    metric = metric or ("cosine" if is_image else "dot")
    if metric not in ("dot", "cosine"):
        raise ValueError(f"metric must be 'dot' or 'cosine', got {metric!r}.")
    if metric == "cosine":
        vector = F.normalize(vector, dim=-1)
    outputs = cache.head(layer, head)
    scores = []
    for start in range(0, len(cache), chunk):
        rows = torch.from_numpy(outputs[start:start + chunk].astype("float32"))
        if metric == "cosine":
            rows = F.normalize(rows, dim=-1)
        scores.append(rows @ vector)
    values, indices = torch.cat(scores).topk(k, largest=not lowest)
    return RetrievalResult(indices, values, layer, head, metric)


def _query_vector(cache: DecompositionCache, layer: int, head: int, query: str | Tensor | int,
                  clip: HookedCLIP | None) -> tuple[Tensor, bool]:
    width = cache.image_embeds.shape[1]
    if isinstance(query, int) and not isinstance(query, bool):
        if not 0 <= query < len(cache):
            raise ValueError(f"an int query is a cached image index in 0..{len(cache) - 1}.")
        return torch.from_numpy(cache.head(layer, head)[query].astype("float32")), True
    if isinstance(query, str) or (isinstance(query, Tensor) and query.dim() == 3):
        if clip is None:
            raise ValueError("text and image queries need clip= (the model of the cache).")
        cache.check_model(clip)
        if isinstance(query, str):
            return clip.encode_text(query)[0].float().cpu(), False
        parts = decompose(clip, query[None].to(device=clip.device, dtype=clip.dtype),
                          granularity="head", convention=cache.convention, layers=[layer])
        return parts.heads[0, 0, head].float().cpu(), True
    if isinstance(query, Tensor) and query.shape == (width,):
        return query.float().cpu(), False
    raise TypeError(f"query must be a string, a text embedding [{width}], an image [3, H, W] "
                    f"or a cached image index, got {type(query).__name__}"
                    f"{list(query.shape) if isinstance(query, Tensor) else ''}.")
