"""Neurons read in words: the second-order lens (Gandelsman, Efros & Steinhardt, ICLR 2025).

An analysis above the decomposition (:mod:`captum_clipspan.decomposition.neuron_maps` computes
the effects); one concept per module:

- :mod:`.sparse`: the authors' text preprocessing and orthogonal matching pursuit;
- :mod:`.principal`: each neuron's first principal component with the authors' sign rule;
- :mod:`.topk`: a running top-k of images per neuron, bounded in memory;
- :mod:`.passes`: streamed, resumable, multi-process passes (the cache's machinery);
- :mod:`.report`: :class:`NeuronReport`;
- :mod:`.lens`: :class:`NeuronLens`;
- :mod:`.ablation`: mean-ablation of a layer's first-order, second-order and indirect effects;
- :mod:`.concepts`: neurons that share a concept, and the images that activate them together.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_EXPORTS = {
    "NeuronLens": "lens",
    "NeuronReport": "report",
    "RunningTopK": "topk",
    "first_components": "principal",
    "orthogonal_matching_pursuit": "sparse",
    "preprocess_bank": "sparse",
    "NeuronAblation": "ablation",
    "neuron_ablation": "ablation",
    "Concept": "concepts",
    "discover_concepts": "concepts",
    "concept_neurons": "concepts",
    "image_concepts": "concepts",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)
