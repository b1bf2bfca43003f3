"""Classifiers and head probes over the synthetic scenes' attribute families.

Examples::

    >>> classifier = family_classifier(clip, "color")         # 8 colors, the scenes' prompts
    >>> probes = probe_heads(clip, cache, read_labels(folder))
    >>> probes["color"]["heads"].shape                          # [L_s, H] accuracies
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation import head_accuracy
from ..hooked.clip import HookedCLIP
from ..text import ZeroShotClassifier
from .scenes import ATTRIBUTES, family_prompts

__all__ = ["family_classifier", "probe_heads", "read_labels"]


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
