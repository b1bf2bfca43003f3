"""Mean-ablating heads and the controls to compare against: worst-group accuracy before and
after, random heads (one draw, its expectation over every set, the best of several) and the
oracle chosen on validation data."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..cache import DecompositionCache
from ..components import parse_component, parse_components
from ..decomposition import decompose
from ..evaluation import ComponentMeans, ablated_embeddings, predict, worst_group_accuracy
from ..hooked.clip import HookedCLIP
from ..sources import ImageSource, as_dataset, iterate_batches
from ..text import ZeroShotClassifier
from ..validation import (
    check_labels,
    match_classes,
    resolve_head,
    resolve_layer,
)
from .concepts import Head

# Ablation -------------------------------------------------------------------------------------

def _head_names(clip: HookedCLIP, means: ComponentMeans, heads: Sequence[Head]) -> list[str]:
    """``(layer, head)`` pairs -> validated component names ``head.L.H`` (may be empty)."""
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Sequence):
        raise TypeError(f"heads must be a list of (layer, head) pairs, got {heads!r}.")
    vit = clip.visual
    names = []
    for pair in heads:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"heads must be (layer, head) pairs, got {pair!r} in {heads!r}.")
        layer, head = resolve_layer(pair[0], vit.n_layers), resolve_head(pair[1], vit.n_heads)
        names.append(f"head.{layer}.{head}")
    if names:
        parse_components(names, vit.n_layers, means.layers, vit.n_heads)  # heads in the means
    return sorted(set(names), key=names.index)


def _predictions(clip: HookedCLIP, means: ComponentMeans, head_sets: Sequence[Sequence[str]],
                 data: DecompositionCache | ImageSource, classifier: ZeroShotClassifier,
                 labels: Any, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Predictions of the unmodified model ``[N]``, with each head set ablated ``[S, N]``, and
    the labels ``[N]`` (``labels`` or the data's)."""
    class_embeddings = classifier.class_embeddings.float().cpu()
    if not isinstance(data, DecompositionCache):
        data = as_dataset(clip, data)  # a folder path: its labels are named
    settings = [[], *head_sets]  # the unmodified model first
    predicted, found = [], []
    for terms, layers, batch_labels in _head_batches(clip, means, data, head_sets, batch_size):
        embeddings = ablated_embeddings(terms, means, settings, layers=layers).float().cpu()
        predicted.append(predict(embeddings, class_embeddings))  # [B, 1 + S]
        found.append(batch_labels)
    predictions = torch.cat(predicted).T
    labels = check_labels(torch.cat(found) if labels is None else labels, predictions.shape[1],
                          class_embeddings.shape[0], match_classes(data, classifier, labels))
    return predictions[0], predictions[1:], labels


def _head_batches(clip: HookedCLIP, means: ComponentMeans, data: DecompositionCache | ImageSource,
                  head_sets: Sequence[Sequence[str]], batch_size: int,
                  ) -> Iterator[tuple[Any, tuple[int, ...], Tensor]]:
    """``(direct terms, their head layers, labels)`` per batch: a cache's chunks, or the images
    decomposed at head granularity over the means' layers."""
    if not isinstance(data, DecompositionCache):
        for images, batch_labels in iterate_batches(clip, data, batch_size):
            yield decompose(clip, images, granularity="head", convention=means.convention,
                            layers=means.layers), means.layers, batch_labels
        return
    data.check_model(clip)
    if means.convention != data.convention:
        raise ValueError(f"the means use the {means.convention!r} convention and the cache "
                         f"{data.convention!r}; use ComponentMeans.from_cache(cache).")
    missing = {parse_component(name).layer for names in head_sets for name in names} - set(
        data.layers)
    if missing:
        raise ValueError(f"layers {sorted(missing)} are not in the cache (cached: "
                         f"{list(data.layers)}).")
    for _, chunk in data.chunks(["image_embed", "heads", "labels"], batch_size):
        yield chunk, data.layers, chunk["labels"]


def ablate_heads(clip: HookedCLIP, means: ComponentMeans, heads: Sequence[Head],
                 cache_or_images: DecompositionCache | ImageSource,
                 classifier: ZeroShotClassifier, labels: Any, groups: Any,
                 n_groups: int | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Worst-group accuracy before and after mean-ablating the direct terms of some heads.

    Each chosen head's direct term is replaced by its mean (:func:`ablated_embeddings`, direct
    mode); the image is classified by the argmax of the ablated embedding against the class
    embeddings.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        means: :class:`~captum_clipspan.ComponentMeans` whose layers hold the chosen heads
            (``ComponentMeans.from_cache(cache)`` or ``cs.component_means(clip, data)``).
        heads: ``(layer, head)`` pairs to ablate (e.g. from :func:`heads_matching`); an empty
            list ablates nothing.
        cache_or_images: a :class:`~captum_clipspan.DecompositionCache` of this model (read
            without a forward pass), or images (a folder, tensor ``[N, 3, H, W]``, Dataset or
            DataLoader).
        classifier: a :class:`~captum_clipspan.ZeroShotClassifier`.
        labels: ``[N]`` class indices, or ``None`` for the data's labels (matched to the
            classifier's class names by name when the data names them, as Waterbirds'
            ``landbird``/``waterbird``).
        groups: ``[N]`` group indices.
        n_groups: number of groups (see :func:`worst_group_accuracy`).
        batch_size: images per batch.

    Returns:
        ``{"heads": [(layer, head), ...], "before": {...}, "after": {...}}``, the two
        :func:`worst_group_accuracy` dicts.
    """
    names = _head_names(clip, means, heads)
    before, after, labels = _predictions(clip, means, [names], cache_or_images, classifier,
                                         labels, batch_size)
    return {"heads": _pairs(names),
            "before": worst_group_accuracy(before, labels, groups, n_groups),
            "after": worst_group_accuracy(after[0], labels, groups, n_groups)}


def _pairs(names: Sequence[str]) -> list[Head]:
    return [(component.layer, component.head) for component in map(parse_component, names)]


def random_heads_baseline(clip: HookedCLIP, means: ComponentMeans,
                          cache_or_images: DecompositionCache | ImageSource,
                          classifier: ZeroShotClassifier, labels: Any, groups: Any, k: int,
                          draws: int = 5, seed: int = 0, n_groups: int | None = None,
                          batch_size: int = 64) -> dict[str, Any]:
    """The paper's "top-random": the best of ``draws`` random choices of ``k`` heads.

    Each draw picks ``k`` distinct heads uniformly among the heads of ``means.layers`` (of the
    cache's layers too, for a cache); all draws are scored in one pass over the data. The best
    draw has the highest worst-group accuracy after ablation (then the highest average, then
    the earliest draw).

    Args:
        clip, means, cache_or_images, classifier, labels, groups, n_groups, batch_size: as for
            :func:`ablate_heads`.
        k: heads per draw.
        draws: how many random draws.
        seed: seed of the draws (a ``torch.Generator``).

    Returns:
        The best draw in :func:`ablate_heads`'s format, plus ``"draws"``: one
        ``{"heads": ..., "after": ...}`` per draw, in draw order.
    """
    layers = means.layers
    if isinstance(cache_or_images, DecompositionCache):
        layers = tuple(layer for layer in layers if layer in cache_or_images.layers)
    candidates = [(layer, head) for layer in layers for head in range(clip.visual.n_heads)]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(candidates):
        raise ValueError(f"k must be an int in 1..{len(candidates)} (the heads of the means' "
                         f"layers), got {k!r}.")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive int, got {draws!r}.")
    generator = torch.Generator().manual_seed(seed)
    chosen = [sorted(candidates[i] for i in torch.randperm(len(candidates),
                                                           generator=generator)[:k].tolist())
              for _ in range(draws)]
    head_sets = [_head_names(clip, means, heads) for heads in chosen]
    before, after, labels = _predictions(clip, means, head_sets, cache_or_images, classifier,
                                         labels, batch_size)
    results = [{"heads": heads, "after": worst_group_accuracy(predictions, labels, groups,
                                                              n_groups)}
               for heads, predictions in zip(chosen, after, strict=True)]
    best = max(range(draws), key=lambda i: (results[i]["after"]["worst_group"],
                                            results[i]["after"]["average"], -i))
    return {"heads": results[best]["heads"],
            "before": worst_group_accuracy(before, labels, groups, n_groups),
            "after": results[best]["after"], "draws": results}


# Controls: every random choice, its expectation, and the oracle -------------------------------

def _candidate_heads(clip: HookedCLIP, means: ComponentMeans,
                     cache_or_images: DecompositionCache | ImageSource) -> list[Head]:
    """The heads a random choice draws from: those of the means' layers (and the cache's)."""
    layers = means.layers
    if isinstance(cache_or_images, DecompositionCache):
        layers = tuple(layer for layer in layers if layer in cache_or_images.layers)
    return [(layer, head) for layer in layers for head in range(clip.visual.n_heads)]


def head_sets_accuracy(clip: HookedCLIP, means: ComponentMeans,
                       head_sets: Sequence[Sequence[Head]],
                       cache_or_images: DecompositionCache | ImageSource,
                       classifier: ZeroShotClassifier, labels: Any, groups: Any,
                       n_groups: int | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Worst-group accuracy with each of several head sets mean-ablated, in one pass over the data.

    Args:
        head_sets: lists of ``(layer, head)`` pairs, one per setting.
        clip, means, cache_or_images, classifier, labels, groups, n_groups, batch_size: as for
            :func:`ablate_heads`.

    Returns:
        ``{"before": {...}, "after": [{...}, ...]}``: :func:`worst_group_accuracy` of the
        unmodified model and one per head set, in order.
    """
    names = [_head_names(clip, means, heads) for heads in head_sets]
    before, after, labels = _predictions(clip, means, names, cache_or_images, classifier,
                                         labels, batch_size)
    return {"before": worst_group_accuracy(before, labels, groups, n_groups),
            "after": [worst_group_accuracy(predictions, labels, groups, n_groups)
                      for predictions in after]}


def expected_best_of(values: Sequence[float], draws: int) -> float:
    """The expected maximum of ``draws`` independent uniform picks among ``values``.

    With ``v_(1) <= ... <= v_(N)`` sorted, ``E[max] = sum_i v_(i) ((i/N)^d - ((i-1)/N)^d)``: the
    paper's "top-random" baseline in expectation, free of the luck of one draw seed.

    Examples::

        >>> expected_best_of([0.0, 1.0], 2)
        0.75
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive int, got {draws!r}.")
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if ordered.size == 0:
        raise ValueError("values is empty.")
    return _expected_at_best(ordered, draws)


def random_heads_expectation(clip: HookedCLIP, means: ComponentMeans,
                             cache_or_images: DecompositionCache | ImageSource,
                             classifier: ZeroShotClassifier, labels: Any, groups: Any, k: int,
                             best_of: Sequence[int] = (5, 20), max_sets: int = 1000,
                             seed: int = 0, n_groups: int | None = None,
                             batch_size: int = 64) -> dict[str, Any]:
    """Random heads as a distribution: every choice of ``k`` heads (or ``max_sets`` of them).

    All ``C(H, k)`` sets are scored when there are at most ``max_sets`` (the toy's 16 heads:
    120 pairs, 560 triples); otherwise ``max_sets`` distinct random sets (``seed``). Reported:
    the mean over sets (the expectation of one random draw) and, per ``d`` in ``best_of``, the
    expected result of the paper's "best of ``d`` draws" (:func:`expected_best_of`).

    Args:
        k: heads per set.
        best_of: numbers of draws ``d``.
        max_sets: most sets to score.
        seed: seed of the sampled sets when not exhaustive.
        clip, means, cache_or_images, classifier, labels, groups, n_groups, batch_size: as for
            :func:`ablate_heads`.

    Returns:
        ``{"sets": [[(layer, head), ...], ...], "exhaustive": bool, "before": {...},
        "after": [{...} per set], "worst_group": [S], "average": [S] (numpy),
        "mean": {"worst_group", "average"}, "best_of": {d: {"worst_group", "average"}}}``;
        ``best_of``'s average is that of the draw with the best worst group, in expectation.
    """
    from itertools import combinations
    from math import comb

    candidates = _candidate_heads(clip, means, cache_or_images)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(candidates):
        raise ValueError(f"k must be an int in 1..{len(candidates)} (the heads of the means' "
                         f"layers), got {k!r}.")
    total = comb(len(candidates), k)
    if total <= max_sets:
        sets = [list(chosen) for chosen in combinations(candidates, k)]
    else:
        rng, seen = np.random.default_rng(seed), set()
        while len(seen) < max_sets:
            seen.add(tuple(sorted(rng.choice(len(candidates), size=k, replace=False).tolist())))
        sets = [[candidates[i] for i in chosen] for chosen in sorted(seen)]
    scored = head_sets_accuracy(clip, means, sets, cache_or_images, classifier, labels, groups,
                                n_groups, batch_size)
    worst = np.array([after["worst_group"] for after in scored["after"]])
    average = np.array([after["average"] for after in scored["after"]])
    # the best draw is the best worst group (then average): rank sets by that pair
    order = np.lexsort((average, worst))
    return {"sets": sets, "exhaustive": total <= max_sets, "before": scored["before"],
            "after": scored["after"], "worst_group": worst, "average": average,
            "mean": {"worst_group": float(worst.mean()), "average": float(average.mean())},
            "best_of": {d: {"worst_group": _expected_at_best(worst[order], d),
                            "average": _expected_at_best(average[order], d)}
                        for d in best_of}}


def _expected_at_best(values_in_rank_order: np.ndarray, draws: int) -> float:
    """``E[value of the best-ranked of d draws]`` for values listed from worst to best rank."""
    cdf = np.arange(values_in_rank_order.size + 1, dtype=np.float64) / values_in_rank_order.size
    return float((values_in_rank_order * np.diff(cdf ** draws)).sum())


def oracle_heads(expectation: dict[str, Any]) -> list[Head]:
    """The head set with the best worst group (then average) among those a
    :func:`random_heads_expectation` scored: the ceiling of any choice of that many heads,
    when ``expectation`` was computed on a validation split (score the set on the test split
    with :func:`ablate_heads`)."""
    best = max(range(len(expectation["sets"])),
               key=lambda i: (expectation["worst_group"][i], expectation["average"][i], -i))
    return list(expectation["sets"][best])
