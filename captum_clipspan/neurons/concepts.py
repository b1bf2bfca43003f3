"""Concept discovery from a :class:`~.report.NeuronReport`: neurons whose sparse texts share a
concept, the images that activate them together, and the concepts of one image (the authors'
``concept_discovery.ipynb``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..decomposition.neuron_maps import neuron_effects
from .report import NeuronReport

__all__ = ["Concept", "concept_neurons", "discover_concepts", "image_concepts"]


@dataclass
class Concept:
    """Neurons that share a text among their first sparse texts.

    Attributes:
        text: the shared text.
        neurons: the neurons, largest coefficient (relative to each neuron's largest) first.
        weights: those relative coefficients, in ``(0, 1]``.
        images: dataset rows among the top images of at least two of the neurons, most shared
            first.
        shared: for each of ``images``, how many of the neurons have it among their top images.
    """

    text: str
    neurons: list[int]
    weights: list[float]
    images: list[int]
    shared: list[int]


def concept_neurons(report: NeuronReport, concept: str | Sequence[str],
                    max_texts: int = 5) -> list[tuple[int, str, float]]:
    """Neurons whose first ``max_texts`` sparse texts name a concept with a positive
    coefficient (their top images have it).

    Args:
        report: a :class:`NeuronReport`.
        concept: a word or phrase (matched case-insensitively inside the texts), or several.
        max_texts: how many of each neuron's texts are searched.

    Returns:
        ``[(neuron, text, weight)]``: the matching text and its coefficient relative to the
        neuron's largest, largest weight first.
    """
    words = [concept] if isinstance(concept, str) else list(concept)
    if not words or not all(isinstance(word, str) and word.strip() for word in words):
        raise ValueError(f"concept must be a non-empty string or list of strings, got "
                         f"{concept!r}.")
    words = [word.lower() for word in words]
    found = []
    for neuron in report.neurons.tolist():
        pairs = report.texts_of(neuron, max_texts)
        if not pairs:
            continue
        largest = max(abs(value) for _, value in pairs)
        matches = [(text, value / largest) for text, value in pairs
                   if value > 0 and any(word in text.lower() for word in words)]
        if matches:
            text, weight = max(matches, key=lambda match: match[1])
            found.append((neuron, text, weight))
    return sorted(found, key=lambda item: (-item[2], item[0]))


def discover_concepts(report: NeuronReport, max_texts: int = 3,
                      min_neurons: int = 2) -> list[Concept]:
    """Group neurons by the texts they share among their first ``max_texts`` positive texts.

    Args:
        report: a :class:`NeuronReport`.
        max_texts: how many of each neuron's texts are read.
        min_neurons: the fewest neurons a concept needs.

    Returns:
        :class:`Concept` s, most neurons first (then by text).
    """
    members: dict[str, list[tuple[int, float]]] = {}
    for neuron in report.neurons.tolist():
        pairs = report.texts_of(neuron, max_texts)
        if not pairs:
            continue
        largest = max(abs(value) for _, value in pairs)
        for text, value in pairs:
            if value > 0:
                members.setdefault(text, []).append((neuron, value / largest))
    concepts = []
    for text, pairs in members.items():
        if len(pairs) < min_neurons:
            continue
        pairs.sort(key=lambda pair: (-pair[1], pair[0]))
        neurons = [neuron for neuron, _ in pairs]
        counts = Counter(row for neuron in neurons for row in report.images_of(neuron).tolist())
        together = sorted((row for row, count in counts.items() if count >= 2),
                          key=lambda row: (-counts[row], row))
        concepts.append(Concept(text, neurons, [weight for _, weight in pairs], together,
                                [counts[row] for row in together]))
    return sorted(concepts, key=lambda concept: (-len(concept.neurons), concept.text))


def image_concepts(report: NeuronReport, clip: Any, image: Tensor,
                   count: int = 10) -> list[tuple[str, float]]:
    """The concepts of one image, read from the neurons it activates (the authors' notebook).

    A neuron is active when its centered effect on the image is larger than the smallest of its
    top-``k`` norms over the dataset; each of its texts gets ``coefficient * norm``, summed over
    the active neurons.

    Args:
        report: a :class:`NeuronReport` of this model.
        clip: the :class:`~captum_clipspan.HookedCLIP` the report was computed with.
        image: ``[3, H, W]`` or ``[1, 3, H, W]`` a preprocessed image.
        count: texts returned.

    Returns:
        ``[(text, score)]``, highest score first.
    """
    report.check_model(clip)
    images = image[None] if image.dim() == 3 else image
    if images.dim() != 4 or images.shape[0] != 1:
        raise ValueError(f"image must be one preprocessed image [3, H, W] or [1, 3, H, W], got "
                         f"{list(image.shape)}.")
    effects = neuron_effects(clip, images, report.layer, "second", neurons=report.neurons,
                             convention=report.convention).neurons[0].cpu()
    norms = (effects - report.mean.to(effects)).norm(dim=-1)
    thresholds = torch.where(report.top_images >= 0, report.top_norms,
                             torch.inf).min(dim=1).values
    scores: Counter[str] = Counter()
    for row in torch.nonzero(norms > thresholds)[:, 0].tolist():
        for text, value in report.texts_of(int(report.neurons[row])):
            scores[text] += value * float(norms[row])
    return scores.most_common(count)
