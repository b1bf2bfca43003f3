"""Zero-shot segmentation: heat-map methods, the ImageNet-segmentation protocol and its scores.

Heat maps (:func:`heatmaps`) give one ``[g, g]`` map per image for one text per image, by any
method of :data:`HEATMAP_METHODS` (method name -> Captum attribution class). The decomposition's
map is the paper's (Sec. 5.1): the chosen class's patch map minus the mean of all classes' patch
maps, over every layer and head. The baselines read the hooked tower's hook points only: raw
attention of the last layer, attention rollout (Abnar & Zuidema, 2020), Grad-CAM on the last
block (Captum's :class:`~captum.attr.LayerGradCam`) and Chefer et al.'s gradient-weighted
attention relevancy (2021); their classes live in :mod:`captum_clipspan.attr.baselines`.

Modules: :mod:`.metrics` (:func:`scores`, the protocol of Chefer et al. (2021) that the paper
follows, at batch size 1), :mod:`.methods` (the registry, :func:`heatmaps`,
:func:`topic_segmentation`, :func:`contrastive_map`), :mod:`.datasets`
(:class:`ImagenetSegmentation`, which needs ``h5py``: the ``segmentation`` extra, and
:class:`MaskFolder`) and :mod:`.benchmarking` (:func:`benchmark`, :func:`markdown_table`).
The toy's synthetic scenes with masks are ``captum_clipspan.toy.segmentation.SceneSegmentation``
(registered as the dataset ``"scenes"``).

Names are loaded on first use, so importing a dataset does not import Captum.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

# Submodule names relative to this package (".attr.baselines" is captum_clipspan.attr.baselines).
_EXPORTS = {
    "map_iou": "metrics",
    "normalize_maps": "metrics",
    "average_precision": "metrics",
    "scores": "metrics",
    "HEATMAP_METHODS": "methods",
    "heatmaps": "methods",
    "topic_segmentation": "methods",
    "contrastive_map": "methods",
    "rollout": ".attr.baselines",
    "relevancy": ".attr.baselines",
    "ImagenetSegmentation": "datasets",
    "MaskFolder": "datasets",
    "for_model": "datasets",
    "benchmark": "benchmarking",
    "markdown_table": "benchmarking",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS,
                                       ("metrics", "methods", "datasets", "benchmarking"))
