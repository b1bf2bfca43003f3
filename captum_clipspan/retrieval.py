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

from .cache import DecompositionCache
from .decomposition import decompose
from .hooked.clip import HookedCLIP
from .validation import resolve_head, resolve_layer, resolve_layers


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
    layer = resolve_layer(layer, cache.attns.shape[1])
    head = resolve_head(head, cache.n_heads)
    if not 1 <= k <= len(cache):
        raise ValueError(f"k must be in 1..{len(cache)} (the cache size), got {k}.")
    vector, is_image = _query_vector(cache, layer, head, query, clip)
    metric = metric or ("cosine" if is_image else "dot")
    if metric not in ("dot", "cosine"):
        raise ValueError(f"metric must be 'dot' or 'cosine', got {metric!r}.")
    if metric == "cosine":
        vector = F.normalize(vector, dim=-1)
    scores = []
    for start in range(0, len(cache), chunk):
        rows = cache.term(f"head.{layer}.{head}", slice(start, start + chunk))
        if metric == "cosine":
            rows = F.normalize(rows, dim=-1)
        scores.append(rows @ vector)
    values, indices = torch.cat(scores).topk(k, largest=not lowest)
    return RetrievalResult(indices, values, layer, head, metric)


def _query_vector(cache: DecompositionCache, layer: int, head: int, query: str | Tensor | int,
                  clip: HookedCLIP | None) -> tuple[Tensor, bool]:
    width = cache.image_embed.shape[1]
    if isinstance(query, int) and not isinstance(query, bool):
        if not 0 <= query < len(cache):
            raise ValueError(f"an int query is a cached image index in 0..{len(cache) - 1}.")
        return cache.term(f"head.{layer}.{head}", [query])[0], True
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


def nearest_neighbors(cache: DecompositionCache, layer: int, head: int, query: int | Tensor,
                      k: int = 10, clip: HookedCLIP | None = None) -> RetrievalResult:
    """The images whose direct effect through one head is most similar to a query image's.

    Cosine similarity of the head's direct effects (:func:`retrieve` with an image query); a
    cached query image is left out of its own neighbours.

    Args:
        cache: a :class:`~captum_clipspan.DecompositionCache` that holds ``layer``.
        layer, head: the head.
        query: a cached image's index, or an image ``[3, H, W]`` (needs ``clip``).
        k: how many neighbours.
        clip: the model that wrote the cache, for an image query.

    Returns:
        A :class:`RetrievalResult` with ``metric="cosine"``, most similar first.

    Examples::

        >>> near = cs.retrieval.nearest_neighbors(cache, layer=11, head=3, query=0, k=8)
        >>> near.indices   # the 8 images head 11.3 sees most like image 0
    """
    cached = isinstance(query, int) and not isinstance(query, bool)
    if cached and not 1 <= k < len(cache):
        raise ValueError(f"k must be in 1..{len(cache) - 1} (the other cached images), got {k}.")
    top = retrieve(cache, layer, head, query, k=k + cached, clip=clip, metric="cosine")
    if not cached:
        return top
    keep = (top.indices != query).nonzero()[:k, 0]
    return RetrievalResult(top.indices[keep], top.scores[keep], top.layer, top.head, "cosine")


@dataclass
class HeadSimilarity:
    """How alike heads' direct effects are over a dataset.

    Attributes:
        matrix: ``[K, K]`` mean over images of the cosine between two heads' centered direct
            effects (1 on the diagonal; near 0 for heads that write unrelated directions).
        heads: the ``K`` ``(layer, head)`` pairs, in the matrix's order.
    """

    matrix: Tensor
    heads: list[tuple[int, int]]


def centered_cosines(effects: Tensor, means: Tensor) -> Tensor:
    """Summed over images, the cosine between every pair of heads' centered direct effects.

    Args:
        effects: ``[N, K, E]`` direct effects of ``K`` heads on ``N`` images.
        means: ``[K, E]`` each head's mean direct effect over the dataset.

    Returns:
        ``[K, K]`` sums over the ``N`` images (divide by the dataset size for the mean).
    """
    centered = F.normalize(effects - means, dim=-1)
    return torch.einsum("nke,nje->kj", centered, centered)


def head_similarity(cache: DecompositionCache, layers: int | list[int] | None = None,
                    chunk: int = 4096) -> HeadSimilarity:
    """Head-by-head similarity of direct effects over a cache: how entangled heads are.

    For heads ``a`` and ``b``, the mean over images of ``cos(c_a - mean(c_a), c_b - mean(c_b))``,
    streamed over the cache in chunks (two passes: the means, then the cosines).

    Args:
        cache: a :class:`~captum_clipspan.DecompositionCache`.
        layers: cached model layers to include (``None``: all cached layers).
        chunk: images read at once.

    Returns:
        A :class:`HeadSimilarity` over every head of the chosen layers.

    Examples::

        >>> sim = cs.retrieval.head_similarity(cache)
        >>> plot_head_similarity(sim.matrix, sim.heads)
    """
    chosen = (list(cache.layers) if layers is None else
              list(resolve_layers(layers, cache.attns.shape[1])))
    missing = [layer for layer in chosen if layer not in cache.layers]
    if missing or not chosen:
        raise ValueError(f"layers {missing or chosen} are not cached; cached layers: "
                         f"{list(cache.layers)}.")
    if len(cache) == 0:
        raise ValueError("the cache holds no images.")
    rows = [cache.layers.index(layer) for layer in chosen]
    heads = [(layer, head) for layer in chosen for head in range(cache.n_heads)]

    def chunks():
        for _, block in cache.chunks(["heads"], chunk):
            yield block["heads"][:, rows].flatten(1, 2)  # [n, K, E]

    means = sum(block.sum(dim=0) for block in chunks()) / len(cache)
    total = sum(centered_cosines(block, means) for block in chunks())
    return HeadSimilarity(total / len(cache), heads)
