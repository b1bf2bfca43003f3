"""Classifiers and head probes over the synthetic scenes' attribute families, and what each
head carries by ground truth.

Three ways to name a head's family, compared by :func:`head_roles`:

* **planted** (ground truth, no text): the family whose values explain the largest fraction of
  the variance of the head's direct effect over images (:func:`family_variance`, the R^2 of a
  one-hot regression on the family's labels);
* **probe**: the family whose zero-shot prompts the head alone classifies best, above chance
  (:func:`probe_heads`, :func:`probe_families`);
* **TextSpan**: the family most of the head's first TextSpan texts name
  (:func:`textspan_families`).

Examples::

    >>> classifier = family_classifier(clip, "color")         # 8 colors, the scenes' prompts
    >>> probes = probe_heads(clip, cache, read_labels(folder))
    >>> probes["color"]["heads"].shape                          # [L_s, H] accuracies
    >>> family_variance(cache, read_labels(folder))["color"]   # [L_s, H] R^2
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..evaluation import head_accuracy
from ..hooked.clip import HookedCLIP
from ..text import ZeroShotClassifier
from .scenes import ATTRIBUTES, family_prompts

__all__ = ["family_classifier", "family_variance", "head_roles", "probe_families",
           "probe_heads", "read_labels", "textspan_families"]


def family_classifier(clip: HookedCLIP, family: str,
                      values: Sequence[str] | None = None) -> ZeroShotClassifier:
    """A classifier over one attribute family (or some of its ``values``), from the scenes' own
    prompts (:func:`~captum_clipspan.toy.scenes.family_prompts`)."""
    return ZeroShotClassifier.from_prompts(clip, family_prompts(family, values))


def read_labels(folder: Path) -> dict[str, np.ndarray]:
    """Per-family label indices ``[N]`` of a folder written by ``write_image_folder``."""
    with open(Path(folder) / "labels.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["file"])
    return {family: np.array([values.index(row[family]) for row in rows])
            for family, values in ATTRIBUTES.items()}


def probe_heads(clip: HookedCLIP, cache: Any, labels: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per family: each head's accuracy alone (``[L_s, H]``) and the whole model's accuracy."""
    results = {}
    embeds = cache.tensor("image_embed")
    for family in ATTRIBUTES:
        classifier = family_classifier(clip, family)
        results[family] = {"heads": head_accuracy(cache, classifier, labels[family]),
                           "model": classifier.accuracy(embeds, labels[family])}
    return results


def family_variance(cache: Any, labels: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """Per family, the fraction of each head's direct-effect variance its values explain.

    For head ``c`` with direct effects ``c_i`` (joint space) and a family with value ``y_i``,
    ``R^2 = sum_v n_v ||mean_{y=v} c - mean c||^2 / sum_i ||c_i - mean c||^2``: the between-value
    share of the total variance, 1 when the head's output is a function of the family alone.
    Families are independent in the scenes, so the shares of one head sum to at most about 1.

    Args:
        cache: a :class:`~captum_clipspan.DecompositionCache` of labelled scenes.
        labels: ``{family: [N] value indices}`` (:func:`read_labels`).

    Returns:
        ``{family: [L_s, H]}`` in ``[0, 1]``.
    """
    heads = cache.tensor("heads", dtype=torch.float64)  # [N, L_s, H, E]
    centered = heads - heads.mean(0)
    total = centered.pow(2).sum((0, 3)).clamp(min=1e-300)
    result = {}
    for family, values in labels.items():
        index = torch.as_tensor(values, dtype=torch.long)
        k = len(ATTRIBUTES[family])
        sums = torch.zeros(k, *centered.shape[1:], dtype=torch.float64).index_add_(0, index,
                                                                                   centered)
        counts = torch.bincount(index, minlength=k).double().clamp(min=1)
        between = (sums.pow(2).sum(-1) / counts[:, None, None]).sum(0)
        result[family] = (between / total).float()
    return result


def probe_families(probes: dict[str, Any]) -> list[list[str]]:
    """Each head's family by the probe: the best accuracy above chance, as a share of the room
    above chance (``(acc - chance) / (1 - chance)``); ``[L_s][H]`` family names."""
    gains = torch.stack([(p["heads"] - 1 / len(ATTRIBUTES[f])) / (1 - 1 / len(ATTRIBUTES[f]))
                         for f, p in probes.items()])
    names = list(probes)
    return [[names[i] for i in row] for row in gains.argmax(0).tolist()]


def textspan_families(report: Any, families: Sequence[str], m: int = 3) -> dict[Any, str]:
    """Each head's family by TextSpan: the family most of its first ``m`` texts name (the first
    text's family on a tie).

    Args:
        report: a :class:`~captum_clipspan.TextSpanReport` fitted on the toy bank.
        families: the bank's family of each text (:func:`~captum_clipspan.toy.toy_bank`).
        m: texts read per head.

    Returns:
        ``{(layer, head): family}``.
    """
    labels = {}
    for key, result in report.results.items():
        named = [families[i] for i in result.indices.tolist()[:m]]
        labels[key] = max(dict.fromkeys(named), key=lambda f: (named.count(f), -named.index(f)))
    return labels


def head_roles(cache: Any, labels: dict[str, np.ndarray], probes: dict[str, Any],
               report: Any, families: Sequence[str], m: int = 3,
               min_share: float = 0.1) -> list[dict[str, Any]]:
    """Every head named three ways (planted, probe, TextSpan) and whether they agree.

    Args:
        cache, labels: as for :func:`family_variance`.
        probes: :func:`probe_heads` of the same cache.
        report, families, m: as for :func:`textspan_families`.
        min_share: a head "carries" a family when its planted share is at least this; heads
            that carry none are reported but their labels are noise.

    Returns:
        One row per head: ``{"head": "L3.H1", "planted", "planted_share", "probe", "textspan",
        "carries", "shares": {family: R^2}, "texts": [first m texts], "variance_explained"}``
        (TextSpan's variance explained by all of the head's texts).
    """
    shares = family_variance(cache, labels)
    by_probe = probe_families(probes)
    by_textspan = textspan_families(report, families, m)
    rows = []
    for row, layer in enumerate(cache.layers):
        for head in range(cache.n_heads):
            share = {f: float(v[row, head]) for f, v in shares.items()}
            planted = max(share, key=share.get)
            result = report.results[(layer, head)]
            rows.append({"head": f"L{layer}.H{head}", "planted": planted,
                         "planted_share": share[planted], "probe": by_probe[row][head],
                         "textspan": by_textspan[(layer, head)],
                         "carries": share[planted] >= min_share, "shares": share,
                         "texts": list(result.texts[:m]),
                         "variance_explained": float(result.variance_explained[-1])})
    return rows
