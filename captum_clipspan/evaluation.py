"""Evaluation, written once: mean-ablated embeddings, zero-shot prediction and accuracy.

Every study in the package composes these pieces:

* :class:`ComponentMeans` holds each direct term's mean over a reference set;
* :func:`ablated_embeddings` is the one mean-ablation formula (replace some terms by their
  means, or keep only some and replace everything else);
* :func:`predict` and :func:`correct` classify embeddings against class embeddings;
* :func:`head_accuracy` and :func:`worst_group_accuracy` are the accuracies the paper reports;
* :func:`paired_bootstrap` puts a confidence interval on a difference between two methods
  scored on the same items.

:class:`~captum_clipspan.MeanAblation` (its attributions and studies), TextSpan's projection
accuracy, the spurious-cue study and the neuron ablations all call them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .components import LN_BIAS, POOL_MLP, direct_term, head_names
from .decomposition import TERM_FIELDS, in_text_columns
from .validation import check_indices, check_labels, match_classes

if TYPE_CHECKING:
    from .cache import DecompositionCache
    from .text import ZeroShotClassifier

__all__ = ["ComponentMeans", "ablated_embeddings", "correct", "deviations_from_means",
           "head_accuracy",
           "mean_image_embedding", "paired_bootstrap", "predict", "worst_group_accuracy"]


# Means of the direct terms ---------------------------------------------------------------------

@dataclass
class ComponentMeans:
    """Means of every component over a reference set.

    Attributes:
        direct: joint-space means of the normalized direct terms, by
            :class:`~captum_clipspan.Decomposition` field: ``embed`` ``[X]``, ``attns`` ``[L, X]``,
            ``mlps`` ``[L, X]``, ``heads`` ``[L_s, H, X]`` (and the ``"centered"`` biases). Used by
            ``"direct"`` mode.
        residual: residual-space means per token: ``embed`` ``[N, D]``, ``attn_out`` and
            ``mlp_out`` ``[L, N, D]``, ``z`` ``[L, N, H, d_head]``. Used by ``"total"`` mode;
            empty when the means came from a :class:`~captum_clipspan.DecompositionCache`.
        layers: the layers of ``direct["heads"]``.
        convention: the decomposition convention of ``direct``.
        count: how many images were averaged.
    """

    direct: dict[str, Tensor]
    layers: tuple[int, ...]
    convention: str
    count: int
    residual: dict[str, Tensor] = field(default_factory=dict)

    def whole_terms(self) -> tuple[str, ...]:
        """The whole-model terms these means hold besides the layers: ``"embed"``, and
        ``"ln_post.bias"`` / ``"pool_mlp"`` where the decomposition has them."""
        extra = [name for name, field_name in ((LN_BIAS, "ln_bias"), (POOL_MLP, "pool_mlp"))
                 if field_name in self.direct]
        return ("embed", *extra)

    def in_text_columns(self, text_embeddings: Tensor | None) -> ComponentMeans:
        """The direct means read against texts ``[T, E]`` (``X = T``); unchanged for ``None``."""
        if text_embeddings is None:
            return self
        direct = {name: in_text_columns(value, text_embeddings.to(value))
                  for name, value in self.direct.items()}
        return ComponentMeans(direct, self.layers, self.convention, self.count, self.residual)

    @classmethod
    def from_cache(cls, cache: DecompositionCache, chunk: int = 4096) -> ComponentMeans:
        """Direct-term means of a cache, read in chunks (memory bounded by ``chunk`` rows)."""
        names = [n for n in TERM_FIELDS if getattr(cache, n) is not None]
        sums = {n: torch.zeros(getattr(cache, n).shape[1:], dtype=torch.float64) for n in names}
        for _, block in cache.chunks(names, chunk, torch.float64):
            for name, values in block.items():
                sums[name] += values.sum(0)
        direct = {n: (s / len(cache)).float() for n, s in sums.items()}
        return cls(direct, cache.layers, cache.convention, len(cache))


def mean_image_embedding(cache: DecompositionCache, chunk: int = 4096) -> Tensor:
    """The mean image embedding ``[E]`` of a cache (accumulated in float64, read in chunks)."""
    total = torch.zeros(cache.image_embed.shape[1], dtype=torch.float64)
    for _, block in cache.chunks(["image_embed"], chunk, torch.float64):
        total += block["image_embed"].sum(0)
    return (total / max(len(cache), 1)).float()


# The one mean-ablation formula -----------------------------------------------------------------

def deviations_from_means(terms: Any, means: ComponentMeans,
                          settings: Mapping[str, Sequence[str]] | Sequence[Sequence[str]], *,
                          layers: Sequence[int] | None = None,
                          project: Callable[[str, Tensor], Tensor] | None = None) -> Tensor:
    """``sum_{c in S} (t_{c,i} - mean_c)`` for each setting ``S``: how far the named components
    are from their means (``[N, S, X]``; zero for an empty setting).

    Mean-ablating the components of ``S`` changes an embedding by minus this; see
    :func:`ablated_embeddings` for the arguments. Computed in the terms' dtype (at least fp32).
    """
    field_of = terms.get if isinstance(terms, Mapping) else lambda key: getattr(terms, key)
    term_layers = tuple(layers if layers is not None else getattr(terms, "layers", means.layers))
    groups = list(settings.values()) if isinstance(settings, Mapping) else list(settings)
    like = next(value for value in (field_of(name) for name in ("image_embed", "embed", "heads"))
                if value is not None)
    dtype = torch.promote_types(like.dtype, torch.float32)
    cached: dict[str, Tensor] = {}

    def deviation(name: str) -> Tensor:
        if name not in cached:
            term = direct_term(terms, name, term_layers).to(dtype)
            value = term - direct_term(means.direct, name, means.layers).to(term)
            cached[name] = value if project is None else project(name, value)
        return cached[name]

    zero = like.new_zeros(like.shape[0], like.shape[-1], dtype=dtype)
    return torch.stack([sum((deviation(name) for name in names), zero) for names in groups],
                       dim=1)


def ablated_embeddings(terms: Any, means: ComponentMeans,
                       settings: Mapping[str, Sequence[str]] | Sequence[Sequence[str]], *,
                       layers: Sequence[int] | None = None, keep: bool = False,
                       mean_embedding: Tensor | None = None,
                       project: Callable[[str, Tensor], Tensor] | None = None) -> Tensor:
    """Embeddings with components mean-ablated, one per setting (the paper's Sec. 3.2).

    For a setting's component names ``S`` and image ``i``:

    * replace (default): ``e_i - sum_{c in S} (t_{c,i} - mean_c)``: the named components are
      replaced by their means, everything else is left as it is;
    * ``keep=True``: ``mean(e) + sum_{c in S} (t_{c,i} - mean_c)``: only the named components
      vary, everything else is replaced by its mean (a per-component probe).

    Args:
        terms: one batch of direct terms: a :class:`~captum_clipspan.Decomposition` or a
            mapping of its fields (a cache chunk), in columns ``X`` (joint space or texts).
        means: :class:`ComponentMeans` in the same columns (see
            :meth:`ComponentMeans.in_text_columns`).
        settings: ``{name: [component names]}`` or a list of name lists (component names as
            in :mod:`captum_clipspan.components`).
        layers: the layers of ``terms``' heads (default: ``terms.layers``, else
            ``means.layers``).
        keep: keep only the named components (see above).
        mean_embedding: ``[X]`` the mean embedding for ``keep=True`` (default: the sum of the
            whole-layer means, which equals it for a complete decomposition).
        project: ``(name, deviation [N, X]) -> [N, X]`` applied to each component's deviation
            from its mean (TextSpan's projection on a head's basis).

    Returns:
        ``[N, S, X]`` embeddings in the terms' dtype (at least fp32), on their device.

    Examples::

        >>> means = cs.ComponentMeans.from_cache(cache)
        >>> for rows, chunk in cache.chunks(["image_embed", "attns"], 1024):
        ...     ablated = ablated_embeddings(chunk, means, {"no attn 0": ["attn.0"]})
    """
    deviations = deviations_from_means(terms, means, settings, layers=layers, project=project)
    if not keep:
        field_of = terms.get if isinstance(terms, Mapping) else lambda key: getattr(terms, key)
        return field_of("image_embed").to(deviations)[:, None] - deviations
    base = mean_embedding if mean_embedding is not None else _mean_total(means)
    return base.to(deviations) + deviations


def _mean_total(means: ComponentMeans) -> Tensor:
    """The mean embedding: the sum of the whole-layer means (a complete decomposition)."""
    direct = means.direct
    total = direct["embed"] + direct["attns"].sum(0) + direct["mlps"].sum(0)
    for extra in ("ln_bias", "pool_mlp"):
        if extra in direct:
            total = total + direct[extra]
    return total


# Zero-shot prediction and accuracy ------------------------------------------------------------

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


def head_accuracy(cache: DecompositionCache, classifier: ZeroShotClassifier, labels: Any = None,
                  chunk: int = 2048) -> Tensor:
    """Zero-shot accuracy of every cached head alone, all other components mean-ablated.

    Image ``i`` gets ``mean(embedding) + c_i - mean(c)`` for head ``c``
    (:func:`ablated_embeddings` with ``keep=True``): only that head's variation across images is
    left to tell the classes apart (a per-head probe).

    Args:
        cache: a :class:`~captum_clipspan.DecompositionCache`.
        classifier: a :class:`~captum_clipspan.ZeroShotClassifier`.
        labels: ``[N]`` class indices (default: the cache's labels).
        chunk: images processed at once.

    Returns:
        ``[L_s, H]`` accuracies, rows in ``cache.layers`` order.
    """
    labels = check_labels(cache.labels[:] if labels is None else labels, len(cache),
                          classifier.class_embeddings.shape[0],
                          match_classes(cache, classifier, labels))
    means = ComponentMeans.from_cache(cache, chunk)
    mean_embedding = mean_image_embedding(cache, chunk)
    class_embeddings = classifier.class_embeddings.float().cpu()
    settings = [[name] for name in head_names(cache.layers, cache.n_heads)]
    hits = torch.zeros(len(settings))
    for rows, block in cache.chunks(["heads"], chunk):
        embeddings = ablated_embeddings(block, means, settings, layers=cache.layers, keep=True,
                                        mean_embedding=mean_embedding)
        hits += correct(embeddings, class_embeddings, labels[rows]).sum(0)
    return (hits / len(cache)).reshape(len(cache.layers), cache.n_heads)


def worst_group_accuracy(predictions: Any, labels: Any, groups: Any,
                         n_groups: int | None = None) -> dict[str, Any]:
    """Average and worst-group accuracy of predictions.

    Args:
        predictions: ``[N]`` predicted class indices, or ``[N, C]`` float scores (their argmax).
        labels: ``[N]`` true class indices.
        groups: ``[N]`` group indices (Waterbirds: ``2 * y + place``).
        n_groups: the number of groups ``G`` (default ``groups.max() + 1``); groups in
            ``0..G - 1`` without examples are skipped and listed under ``"empty"``.

    Returns:
        ``{"average": float, "worst_group": float, "worst_group_id": int, "per_group":
        {group: accuracy}, "counts": {group: examples}, "empty": [group, ...], "count": N}``;
        the worst group is the lowest accuracy among groups with examples (lowest id on ties).

    Raises:
        TypeError: for non-integer labels or groups (or predictions that are neither indices nor
            float scores).
        ValueError: for mismatched shapes, negative indices, no examples, or a group id
            ``>= n_groups``.

    Examples::

        >>> worst_group_accuracy([0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 2, 2], n_groups=4)["empty"]
        [3]
    """
    if isinstance(predictions, Tensor) and predictions.is_floating_point() or (
            not isinstance(predictions, Tensor)
            and np.asarray(predictions).dtype.kind == "f"):
        scores = torch.as_tensor(predictions)
        if scores.dim() != 2:
            raise ValueError(f"float predictions must be scores [N, C], got shape "
                             f"{list(scores.shape)}; pass class indices as an integer [N].")
        predictions = scores.argmax(-1)
    predictions = check_indices(predictions, "predictions")
    n = predictions.shape[0]
    if n == 0:
        raise ValueError("no examples: predictions, labels and groups are empty.")
    labels = check_indices(labels, "labels", n)
    groups = check_indices(groups, "groups", n)
    top = int(groups.max()) + 1
    if n_groups is None:
        n_groups = top
    elif top > n_groups:
        raise ValueError(f"groups must be in 0..{n_groups - 1} (n_groups={n_groups}), got a "
                         f"group {top - 1}.")
    hit = (predictions == labels).double()
    counts = torch.bincount(groups, minlength=n_groups)
    hits = torch.bincount(groups, weights=hit, minlength=n_groups)
    present = [g for g in range(n_groups) if counts[g] > 0]
    per_group = {g: float(hits[g] / counts[g]) for g in present}
    worst = min(present, key=lambda g: (per_group[g], g))
    return {"average": float(hit.mean()), "worst_group": per_group[worst],
            "worst_group_id": worst, "per_group": per_group,
            "counts": {g: int(counts[g]) for g in present},
            "empty": [g for g in range(n_groups) if counts[g] == 0], "count": n}


# Confidence intervals ------------------------------------------------------------------------

def paired_bootstrap(a: Any, b: Any, statistic: Callable[[Tensor], Any] | None = None,
                     n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                     strata: Any = None) -> dict[str, float]:
    """``statistic(a) - statistic(b)`` on paired items, with a percentile bootstrap interval.

    Items are resampled with replacement, the same rows for ``a`` and ``b`` (so what the two
    share, e.g. an image's difficulty, cancels); with ``strata``, within each stratum, keeping
    its size (e.g. the groups of a worst-group accuracy).

    Args:
        a, b: ``[N, ...]`` per-item values of two methods, row ``i`` of each on item ``i``.
        statistic: ``[n, ...] -> scalar`` (default: the mean over rows); e.g. a pooled IoU
            ``lambda t: t[:, 0].sum() / t[:, 1].sum()`` of rows ``(intersection, union)``.
        n_resamples: bootstrap resamples.
        confidence: the interval's coverage, in ``(0, 1)``.
        seed: seed of the resampling.
        strata: optional ``[N]`` integer stratum of each item.

    Returns:
        ``{"difference", "low", "high", "confidence", "n"}``: the observed difference and the
        interval's ends.

    Examples::

        >>> result = paired_bootstrap(torch.tensor([1., 1, 0, 1]), torch.tensor([0., 1, 0, 0]))
        >>> result["difference"]
        0.5
    """
    first = torch.as_tensor(a).double()
    second = torch.as_tensor(b).double()
    if first.shape != second.shape or first.dim() == 0 or first.shape[0] == 0:
        raise ValueError(f"a and b must be paired [N, ...] values with N >= 1, got shapes "
                         f"{list(first.shape)} and {list(second.shape)}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}.")
    n = first.shape[0]
    layers = (torch.zeros(n, dtype=torch.long) if strata is None
              else check_indices(strata, "strata", n))
    generator = torch.Generator().manual_seed(seed)
    rows = torch.empty(n_resamples, n, dtype=torch.long)
    for stratum in layers.unique():
        members = (layers == stratum).nonzero().flatten()
        picks = torch.randint(len(members), (n_resamples, len(members)), generator=generator)
        rows[:, members] = members[picks]
    if statistic is None:
        per_item = (first - second).reshape(n, -1).mean(1)
        differences = per_item[rows].mean(1)
        observed = float(per_item.mean())
    else:
        differences = torch.tensor([float(statistic(first[r])) - float(statistic(second[r]))
                                    for r in rows], dtype=torch.float64)
        observed = float(statistic(first)) - float(statistic(second))
    tail = (1 - confidence) / 2
    low, high = torch.quantile(differences, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return {"difference": observed, "low": float(low), "high": float(high),
            "confidence": float(confidence), "n": n}
