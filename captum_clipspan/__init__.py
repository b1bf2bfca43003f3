"""captum_clipspan: CLIP's image representation decomposed into text-readable parts, for Captum.

Implements "Interpreting CLIP's Image Representation via Text-Based Decomposition" (Gandelsman,
Efros, Steinhardt, ICLR 2024). Names are imported lazily: importing transformer_lens and captum
takes seconds, so ``import captum_clipspan`` stays fast until a class is used.
"""

from __future__ import annotations

from ._lazy import lazy_attributes

# Bound eagerly: the function shares its name with its module (torch is needed anyway).
from .decomposition import Decomposition, decompose, decompose_batches  # noqa: F401

__version__ = "0.1.0"

_EXPORTS = {
    "HookedCLIP": "hooked.clip",
    "HookedViT": "hooked.vit",
    "HeadContribution": "attr.heads",
    "LayerContribution": "attr.layers",
    "PatchContribution": "attr.patches",
    "NeuronContribution": "attr.neurons",
    "NeuronActivationMap": "attr.neurons",
    "second_order": "decomposition.neuron_maps",
    "first_order": "decomposition.neuron_maps",
    "ClipSpanAttribution": "attr.base",
    "MeanAblation": "attr.ablation",
    "ComponentMeans": "evaluation",
    "AblationStudy": "attr.ablation",
    "ablated_embeddings": "evaluation",
    "component_means": "attr.ablation",
    "head_accuracy": "evaluation",
    "TextSpan": "attr.textspan",
    "TextSpanReport": "attr.textspan",
    "NeuronLens": "neurons.lens",
    "NeuronReport": "neurons.report",
    "neuron_ablation": "neurons.ablation",
    "discover_concepts": "neurons.concepts",
    "TextSpanResult": "attr.textspan_core",
    "textspan": "attr.textspan_core",
    "cache_decomposition": "cache",
    "DecompositionCache": "cache",
    "ImageFolder": "sources",
    "retrieve": "retrieval",
    "explore": "explorer",
    "RetrievalResult": "retrieval",
    "ZeroShotClassifier": "text",
    "text_bank": "text",
    "prompt_templates": "text",
    "worst_group_accuracy": "evaluation",
    "WaterbirdsDataset": "spurious",
    "head_concept_scores": "spurious",
    "heads_matching": "spurious",
    "ablate_heads": "spurious",
    "random_heads_baseline": "spurious",
    "spurious_cue_study": "spurious",
    "spurious_table": "spurious",
}

__all__ = sorted([*_EXPORTS, "Decomposition", "decompose", "decompose_batches"])


# Submodules reachable as attributes (``cs.visualization.plot_head_grid``), imported on first use.
_SUBMODULES = ("visualization", "segmentation", "retrieval", "text", "cache", "sources",
               "validation", "components", "evaluation")


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS, _SUBMODULES)
