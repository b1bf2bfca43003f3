"""Removing spurious cues: the paper's Waterbirds experiment (Sec. 5.1), as reusable pieces.

A zero-shot classifier that leans on a spurious cue (the background of a bird photo) fails on the
groups where the cue and the class disagree. The paper finds the heads whose TextSpan texts
describe the cue, mean-ablates their direct terms and measures worst-group accuracy before and
after, against ablating the same number of random heads (the best of several draws,
"top-random"):

* :func:`~captum_clipspan.evaluation.worst_group_accuracy` scores predictions per group;
* :class:`WaterbirdsDataset` reads the Waterbirds ``metadata.csv`` layout;
* :func:`head_concept_scores` and :func:`heads_matching` rank heads of a
  :class:`~captum_clipspan.TextSpanReport` by how well their texts cover a concept;
* :func:`ablate_heads` and :func:`random_heads_baseline` ablate heads with
  :func:`~captum_clipspan.evaluation.ablated_embeddings` (direct mode) and report both accuracies.

Examples::

    >>> cache = cs.cache_decomposition(clip, data, "cache/")
    >>> report = cs.TextSpan(clip, bank=cs.text_bank("general")).fit(cache, m=10)
    >>> heads = cs.heads_matching(report, "a photo of a place", clip=clip, k=4)
    >>> means = cs.ComponentMeans.from_cache(cache)
    >>> study = cs.ablate_heads(clip, means, heads, cache, classifier, labels, groups)
    >>> study["before"]["worst_group"], study["after"]["worst_group"]
    >>> cs.random_heads_baseline(clip, means, cache, classifier, labels, groups, k=4)["after"]
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .attr.textspan import TextSpanReport
from .cache import DecompositionCache
from .components import parse_component, parse_components
from .decomposition import decompose
from .evaluation import ComponentMeans, ablated_embeddings, predict
from .evaluation import worst_group_accuracy as worst_group_accuracy  # public here too
from .hooked.clip import HookedCLIP
from .sources import ImageSource, as_dataset, iterate_batches, open_image
from .text import ZeroShotClassifier
from .validation import (
    check_labels,
    check_text_embeddings,
    match_classes,
    read_text,
    resolve_head,
    resolve_layer,
)

__all__ = ["WaterbirdsDataset", "ablate_heads", "expected_best_of", "head_concept_scores",
           "head_sets_accuracy", "heads_matching", "oracle_heads", "random_heads_baseline",
           "random_heads_expectation", "spurious_cue_study", "spurious_table",
           "worst_group_accuracy"]

Head = tuple[int, int]


# Waterbirds -----------------------------------------------------------------------------------

WATERBIRDS_SPLITS = {"train": 0, "val": 1, "test": 2}
"""Split name -> the ``split`` value in Waterbirds' ``metadata.csv``."""

_WATERBIRDS_COLUMNS = ("img_filename", "y", "place", "split")


def _to_tensor(image: Any) -> Tensor:
    """A PIL image -> float tensor ``[3, H, W]`` in ``[0, 1]`` (the default transform)."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class WaterbirdsDataset(Dataset):
    """The Waterbirds layout: a folder with ``metadata.csv`` and the images it names.

    ``metadata.csv`` has the columns ``img_id, img_filename, y, split, place, place_filename``
    of Sagawa et al.'s release; ``img_filename, y, place, split`` are required. ``y`` is the
    class (0 landbird, 1 waterbird), ``place`` the background (0 land, 1 water), ``split``
    0/1/2 for train/val/test.

    Args:
        root: the folder holding ``metadata.csv``; ``img_filename`` is relative to it.
        split: ``"train"``, ``"val"``, ``"test"`` (or 0, 1, 2), or ``None`` for every row.
        transform: maps a PIL image to a tensor ``[3, H, W]`` (e.g. ``clip.preprocess``;
            default: the pixels as floats in ``[0, 1]``).

    Attributes:
        files: ``[N]`` image paths, in metadata order.
        labels: ``LongTensor [N]``, ``y``.
        places: ``LongTensor [N]``, ``place``.
        groups: ``LongTensor [N]``, ``2 * y + place`` (0 landbird on land, 1 landbird on water,
            2 waterbird on land, 3 waterbird on water).

    Examples::

        >>> data = WaterbirdsDataset("waterbird_complete95_forest2water2", "test",
        ...                          transform=clip.preprocess)
        >>> image, y = data[0]
        >>> data.groups.shape    # [N]
    """

    classes = ("landbird", "waterbird")
    n_groups = 4

    def __init__(self, root: str | Path, split: str | int | None = "test",
                 transform: Callable[[Any], Tensor] | None = None) -> None:
        self.root = Path(root)
        metadata = self.root / "metadata.csv"
        if not metadata.is_file():
            raise ValueError(f"no metadata.csv in {str(root)!r}: a Waterbirds folder holds "
                             f"metadata.csv with columns {list(_WATERBIRDS_COLUMNS)}.")
        if split is not None and split not in WATERBIRDS_SPLITS and split not in (0, 1, 2):
            raise ValueError(f"split must be one of {list(WATERBIRDS_SPLITS)}, 0, 1, 2 or None, "
                             f"got {split!r}.")
        wanted = WATERBIRDS_SPLITS.get(split, split) if isinstance(split, str) else split
        reader = csv.DictReader(io.StringIO(read_text(metadata, "Waterbirds metadata"),
                                            newline=""))
        missing = [c for c in _WATERBIRDS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{metadata} lacks the columns {missing} (has "
                             f"{reader.fieldnames}).")
        try:
            rows = list(reader)
        except csv.Error as error:
            raise ValueError(f"{metadata} is not a CSV file ({error}).") from None
        try:
            parsed = [(row["img_filename"], int(row["y"]), int(row["place"]), int(row["split"]))
                      for row in rows]
        except ValueError as error:
            raise ValueError(f"{metadata}: y, place and split must be integers ({error}).") \
                from None
        bad = [p for p in parsed if p[1] not in (0, 1) or p[2] not in (0, 1)]
        if bad:
            raise ValueError(f"{metadata}: y and place must be 0 or 1, got row {bad[0]}.")
        chosen = [p for p in parsed if wanted is None or p[3] == wanted]
        if not chosen:
            raise ValueError(f"{metadata} has no rows in split {split!r}.")
        self.files = [self.root / p[0] for p in chosen]
        self.labels = torch.tensor([p[1] for p in chosen], dtype=torch.long)
        self.places = torch.tensor([p[2] for p in chosen], dtype=torch.long)
        self.groups = 2 * self.labels + self.places
        self.transform = transform if transform is not None else _to_tensor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(open_image(self.files[index])), int(self.labels[index])


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


# The whole experiment -------------------------------------------------------------------------

def spurious_cue_study(clip: HookedCLIP, reference: DecompositionCache | ImageSource,
                       data: DecompositionCache | ImageSource,
                       classifier: ZeroShotClassifier, concept: Any, labels: Any, groups: Any,
                       *, k: int = 4, draws: int = 5, seed: int = 0,
                       bank: Any = "general", text_embeddings: Tensor | None = None,
                       m: int = 10, center: bool = False, n_groups: int | None = None,
                       batch_size: int = 64, show_progress: bool = True) -> dict[str, Any]:
    """The paper's experiment end to end: label heads, ablate the cue's heads, compare.

    TextSpan labels every head on ``reference`` images, the ``k`` heads whose texts best
    cover ``concept`` (:func:`heads_matching`) are mean-ablated (means over ``reference``), and
    ``data`` is scored before, after, and with the best of ``draws`` random choices of ``k``
    heads (:func:`random_heads_baseline`).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        reference: the images TextSpan and the means are computed on (a cache of this model, or
            images: a folder, a tensor ``[N, 3, H, W]`` of model inputs, a Dataset or a
            DataLoader), e.g. the training distribution; they need no labels.
        data: the labelled evaluation images (a cache or images).
        classifier: a :class:`~captum_clipspan.ZeroShotClassifier` of the classes.
        concept: the spurious cue, as for :func:`heads_matching` (a string, strings or text
            embeddings).
        labels: ``[N]`` class indices of ``data``, or ``None`` for the data's labels.
        groups: ``[N]`` group indices of ``data``.
        k: heads to ablate.
        draws: random draws of ``k`` heads for the baseline.
        seed: seed of the random draws.
        bank: TextSpan's text bank (a name, a path or a list of texts).
        text_embeddings: optional ``[M, E]`` embeddings of ``bank``.
        m: TextSpan texts per head.
        center: score the differences among the concept's texts (:func:`head_concept_scores`).
        n_groups: number of groups (see :func:`worst_group_accuracy`).
        batch_size: images per forward pass.
        show_progress: progress bars.

    Returns:
        ``{"heads", "concept_scores", "before", "after", "random", "report", "means"}``: the
        ablated heads (best first), every head's score, the :func:`worst_group_accuracy` dicts
        of the unmodified and the ablated model, the random baseline
        (:func:`random_heads_baseline`'s dict), the :class:`~captum_clipspan.TextSpanReport` and
        the :class:`~captum_clipspan.ComponentMeans` of ``reference`` (for further controls).

    Examples::

        >>> study = cs.spurious_cue_study(clip, reference_images, test, classifier,
        ...                               ["water", "forest", "beach"], None, test.groups,
        ...                               center=True)
        >>> print(cs.spurious_table(study))
    """
    import tempfile

    from .attr.textspan import TextSpan
    from .cache import cache_decomposition

    with tempfile.TemporaryDirectory() as scratch:
        cache = reference if isinstance(reference, DecompositionCache) else cache_decomposition(
            clip, reference, Path(scratch) / "reference", batch_size=batch_size,
            show_progress=show_progress)
        report = TextSpan(clip, bank=bank, text_embeddings=text_embeddings).fit(
            cache, m=m, show_progress=show_progress)
        means = ComponentMeans.from_cache(cache)
    scores = head_concept_scores(report, concept, clip, center=center)  # encodes concept once
    heads = top_heads(scores, k)
    ablated = ablate_heads(clip, means, heads, data, classifier, labels, groups, n_groups,
                           batch_size)
    random = random_heads_baseline(clip, means, data, classifier, labels, groups, k=k,
                                   draws=draws, seed=seed, n_groups=n_groups,
                                   batch_size=batch_size)
    return {"heads": heads, "concept_scores": scores, "before": ablated["before"],
            "after": ablated["after"], "random": random, "report": report, "means": means}


def spurious_table(study: dict[str, Any]) -> str:
    """A Markdown table of a :func:`spurious_cue_study`: accuracy before, after ablating the
    concept's heads, and after ablating the best random heads; when the study has them, the
    expectation over random head sets (``"random_expectation"``, from
    :func:`random_heads_expectation`) and the oracle (``"oracle"``: ``{"heads", "after"}``)."""
    def heads(pairs: Sequence[Head]) -> str:
        return ", ".join(f"{layer}.{head}" for layer, head in pairs)

    random = study["random"]
    rows = [("unmodified", "", study["before"]),
            ("concept heads ablated", heads(study["heads"]), study["after"]),
            (f"random heads ablated (best of {len(random['draws'])})", heads(random["heads"]),
             random["after"])]
    expectation = study.get("random_expectation")
    if expectation is not None:
        sets = (f"all {len(expectation['sets'])}" if expectation["exhaustive"]
                else f"{len(expectation['sets'])} sampled")
        rows.append((f"random heads ablated (mean over {sets} sets)", "", expectation["mean"]))
        rows += [(f"random heads ablated (expected best of {d})", "", scores)
                 for d, scores in expectation["best_of"].items()]
    if study.get("oracle") is not None:
        rows.append(("oracle heads (chosen on validation)", heads(study["oracle"]["heads"]),
                     study["oracle"]["after"]))
    lines = ["| model | heads ablated | average accuracy | worst-group accuracy |",
             "|---|---|---:|---:|"]
    lines += [f"| {name} | {pairs or '-'} | {scores['average']:.3f} | "
              f"{scores['worst_group']:.3f} |" for name, pairs, scores in rows]
    return "\n".join(lines)
