"""The scores that colour the explorer's head grid, one ``[L_s, H]`` array each.

* the share of the image embedding's variance that a head's direct effect carries;
* TextSpan's variance explained by the head's texts;
* with labels and a classifier: the drop in zero-shot accuracy when the head alone is
  mean-ablated, and the accuracy of the head alone (every other component mean-ablated), both
  through :mod:`captum_clipspan.evaluation`, the one mean-ablation formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..attr.textspan import TextSpanReport
from ..cache import DecompositionCache
from ..components import head_names
from ..evaluation import ComponentMeans, ablated_embeddings, correct, head_accuracy
from ..validation import check_labels

__all__ = ["HeadScore", "ablation_drop", "head_scores", "variance_share"]


@dataclass
class HeadScore:
    """One colouring of the head grid.

    Attributes:
        key: a short identifier (``"variance"``, ``"textspan"``, ``"ablation"``, ``"alone"``).
        name: the name shown in the score menu.
        unit: the unit of ``values`` as shown (``"%"``, ``"points"``).
        description: what a cell's number means, in a sentence or two.
        values: ``[L_s, H]`` in ``unit``, NaN for a head without a value.
    """

    key: str
    name: str
    unit: str
    description: str
    values: Tensor

    def to_json(self) -> dict[str, Any]:
        """The score as plain JSON values (NaN becomes ``None``)."""
        rows = [[None if value != value else round(value, 4) for value in row]
                for row in self.values.tolist()]
        return {"key": self.key, "name": self.name, "unit": self.unit,
                "description": self.description, "values": rows}


def variance_share(cache: DecompositionCache, chunk: int = 4096) -> Tensor:
    """Each head's variance over the cache as a share of the image embedding's variance.

    ``sum_i ||c_i - mean(c)||^2 / sum_i ||e_i - mean(e)||^2``, accumulated in float64 in one
    pass. Shares need not sum to one: heads' directions are not orthogonal.

    Returns:
        ``[L_s, H]`` fractions, rows in ``cache.layers`` order.
    """
    heads_sum = heads_square = embed_sum = embed_square = 0
    for _, block in cache.chunks(["heads", "image_embed"], chunk, torch.float64):
        heads_sum = heads_sum + block["heads"].sum(0)
        heads_square = heads_square + block["heads"].square().sum((0, -1))
        embed_sum = embed_sum + block["image_embed"].sum(0)
        embed_square = embed_square + block["image_embed"].square().sum()
    n = max(len(cache), 1)
    heads_var = heads_square - heads_sum.square().sum(-1) / n
    embed_var = embed_square - embed_sum.square().sum() / n
    return (heads_var / embed_var.clamp_min(1e-30)).float()


def ablation_drop(cache: DecompositionCache, classifier: Any, labels: Any,
                  chunk: int = 2048) -> tuple[Tensor, float]:
    """Zero-shot accuracy lost when each head alone is mean-ablated (its direct effect replaced
    by its mean over the cache, everything else left as it is).

    Returns:
        ``([L_s, H]`` baseline accuracy minus the ablated accuracy, the baseline accuracy).
    """
    labels = check_labels(labels, len(cache), classifier.class_embeddings.shape[0])
    means = ComponentMeans.from_cache(cache, chunk)
    class_embeddings = classifier.class_embeddings.float().cpu()
    settings = [[name] for name in head_names(cache.layers, cache.n_heads)]
    hits, baseline = torch.zeros(len(settings)), 0.0
    for rows, block in cache.chunks(["image_embed", "heads"], chunk):
        ablated = ablated_embeddings(block, means, settings, layers=cache.layers)
        hits += correct(ablated, class_embeddings, labels[rows]).sum(0)
        baseline += float(correct(block["image_embed"], class_embeddings, labels[rows]).sum())
    baseline /= len(cache)
    drop = baseline - hits / len(cache)
    return drop.reshape(len(cache.layers), cache.n_heads), baseline


def head_scores(cache: DecompositionCache, report: TextSpanReport, classifier: Any = None,
                labels: Any = None) -> list[HeadScore]:
    """The grid's colourings: variance share and TextSpan's variance explained always; the
    mean-ablation drop and the head-alone accuracy when ``classifier`` is given.

    Args:
        cache: the decomposition cache.
        report: TextSpan results of (some of) the cache's heads.
        classifier: a :class:`~captum_clipspan.ZeroShotClassifier`, or ``None``.
        labels: ``[N]`` class indices (default: the cache's labels).
    """
    explained = torch.full((len(cache.layers), cache.n_heads), float("nan"))
    for (layer, head), result in report.items():
        if layer in cache.layers and len(result.variance_explained):
            explained[cache.layers.index(layer), head] = float(result.variance_explained[-1])
    scores = [
        HeadScore("variance", "share of the embedding's variance", "%",
                  "How much the image embedding varies along this head's direct effect: the "
                  "head's variance over all images as a percentage of the embedding's total "
                  "variance (heads overlap, so shares need not sum to 100).",
                  100 * variance_share(cache)),
        HeadScore("textspan", "TextSpan variance explained", "%",
                  "Percentage of the head's variance (over images) that the span of its "
                  "TextSpan texts explains (after the last text).", 100 * explained),
    ]
    if classifier is None:
        return scores
    labels = cache.tensor("labels") if labels is None else labels
    drop, baseline = ablation_drop(cache, classifier, labels)
    chance = 100 / classifier.class_embeddings.shape[0]
    scores.append(HeadScore(
        "ablation", "mean-ablation drop", "points",
        f"Zero-shot accuracy lost (percentage points) when only this head's direct effect is "
        f"replaced by its mean over the images; the whole model scores {100 * baseline:.1f}%.",
        100 * drop))
    scores.append(HeadScore(
        "alone", "accuracy of the head alone", "%",
        f"Zero-shot accuracy when every other component is mean-ablated, so only this head's "
        f"variation tells the classes apart (chance: {chance:.1f}%).",
        100 * head_accuracy(cache, classifier, labels)))
    return scores
