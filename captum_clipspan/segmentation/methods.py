"""Heat-map methods for segmentation: one registry from a method's name to its attribution class,
and the maps read from the decomposition (topics within a head, one text against another).

Every method is a Captum attribution of :mod:`captum_clipspan.attr`; :func:`heatmaps` builds
``HEATMAP_METHODS[method](clip, **options)`` (or ``FITTED_HEATMAP_METHODS[method]``) and keeps each
image's map for its own text.
"""

from __future__ import annotations

from collections.abc import Sequence
from inspect import Parameter, signature
from typing import Any

import torch
from captum.attr import Attribution
from torch import Tensor

from ..attr.baselines import (
    AttentionRollout,
    CheferRelevance,
    ContrastivePatchContribution,
    GradCAM,
    RawAttention,
)
from ..attr.neurons import NeuronActivationMap
from ..attr.patches import PatchContribution
from ..hooked.clip import HookedCLIP
from ..validation import resolve_target, resolve_texts
from .controls import CenterPrior, ColorRarity

__all__ = ["FITTED_HEATMAP_METHODS", "HEATMAP_METHODS", "MODEL_FREE_METHODS", "contrastive_map",
           "heatmap_method",
           "heatmaps", "text_matrix", "topic_segmentation", "zero_shot_columns"]

HEATMAP_METHODS: dict[str, type[Attribution]] = {
    "decomposition": ContrastivePatchContribution,
    "raw_attention": RawAttention,
    "rollout": AttentionRollout,
    "gradcam": GradCAM,
    "chefer": CheferRelevance,
    "color_rarity": ColorRarity,
    "center_prior": CenterPrior,
}
"""Heat-map method name -> attribution class, built as ``cls(clip, **options)`` and called as
``.attribute(images, texts=[C, E], target=[B])`` (``[B, 1, g, g]`` maps). Each runs without
options: the benchmark's and the command line's default is every one of them. The last two
(:data:`MODEL_FREE_METHODS`) never read the model: controls that a method must beat."""

MODEL_FREE_METHODS: tuple[str, ...] = ("color_rarity", "center_prior")
"""The heat-map methods that read only the pixels (:mod:`.controls`)."""

FITTED_HEATMAP_METHODS: dict[str, type[Attribution]] = {
    "neurons": NeuronActivationMap,
}
"""The methods that need something fitted first, an option without a default (``"neurons"``:
``reports=``, one :class:`~captum_clipspan.NeuronReport` per MLP layer); called as
:data:`HEATMAP_METHODS`' are, and asked for by name with their options, e.g.
``benchmark(..., methods=["decomposition", "neurons"], options={"neurons": {"reports": reports}})``.
"""


def heatmap_method(method: str, **options: Any) -> type[Attribution]:
    """The attribution class of a heat-map method, once its required options are all given.

    Raises:
        ValueError: an unknown method, or a required option (a parameter of the class without a
            default) missing from ``options``.
    """
    cls = HEATMAP_METHODS.get(method) or FITTED_HEATMAP_METHODS.get(method)
    if cls is None:
        raise ValueError(f"unknown heat-map method {method!r}; choose from "
                         f"{[*HEATMAP_METHODS, *FITTED_HEATMAP_METHODS]}.")
    parameters = list(signature(cls).parameters.values())[1:]  # after clip
    missing = [p.name for p in parameters if p.default is Parameter.empty
               and p.kind in (Parameter.POSITIONAL_OR_KEYWORD, Parameter.KEYWORD_ONLY)
               and p.name not in options]
    if missing:
        raise ValueError(f"heat-map method {method!r} needs the option(s) {missing} "
                         f"(options={{{missing[0]!r}: ...}}); see {cls.__name__}.")
    return cls


def text_matrix(clip: HookedCLIP, texts: Any) -> Tensor:
    """Strings, embeddings ``[C, E]`` or a ZeroShotClassifier -> ``[C, E]`` on the model's
    device (``None`` is refused: every map here is read against texts)."""
    if texts is None:
        raise TypeError("texts must be strings, text embeddings [C, E] or a ZeroShotClassifier, "
                        "got None.")
    return resolve_texts(clip, texts).to(device=clip.device)


def zero_shot_columns(clip: HookedCLIP, images: Tensor, texts: Tensor, target: Any) -> Tensor:
    """Each image's text index ``[B]``: ``target`` as given, or the zero-shot prediction among
    ``texts`` ``[C, E]`` when it is ``None`` (as the paper)."""
    if target is None:
        with torch.no_grad():
            return clip(images, texts).argmax(dim=1)
    return resolve_target(target, images.shape[0], texts.shape[0]).to(images.device)


def heatmaps(clip: HookedCLIP, images: Tensor, texts: Any, target: Any = None,
             method: str = "decomposition", **options: Any) -> Tensor:
    """One heat map per image for one text per image, by the decomposition or a baseline.

    Methods (all through the hooked tower's hook points; classes in
    :mod:`captum_clipspan.attr.baselines`):

    * ``"decomposition"``: the paper's map: the chosen text's patch map (direct effects of every
      layer and head, :class:`~captum_clipspan.PatchContribution`) minus the mean over all
      texts' maps (``ContrastivePatchContribution``). ``options``: ``layers``, ``heads``,
      ``convention``.
    * ``"raw_attention"``: the last layer's attention from the pooled row (the class token),
      averaged over heads (``RawAttention``; ``layer``).
    * ``"rollout"``: attention rollout with the residual identity (``AttentionRollout``;
      ``start_layer``, default 0).
    * ``"gradcam"``: Grad-CAM of the cosine with the text through
      :class:`captum.attr.LayerGradCam` on the last block's input ``blocks.{L-1}.hook_resid_pre``
      (patch tokens as a ``[B, D, g, g]`` feature map; ``GradCAM``); ``hook_name`` picks another
      hook point.
    * ``"chefer"``: Chefer et al.'s relevancy, ``R += mean_h (grad * A)^+ R`` over the layers
      from ``start_layer`` (default 0), read at the pooled row (``CheferRelevance``).
    * ``"color_rarity"`` and ``"center_prior"``: model-free controls
      (:mod:`captum_clipspan.segmentation.controls`): how rare each pixel's color is in its image
      (``bins``), and a Gaussian at the center (``sigma``).
    * ``"neurons"`` (:data:`FITTED_HEATMAP_METHODS`): the mean activation at each patch of the
      ``top_neurons`` (200) MLP neurons whose second-order effect's first principal component is
      most aligned with the text (Gandelsman et al., ICLR 2025;
      :class:`~captum_clipspan.attr.neurons.NeuronActivationMap`). ``reports`` (required):
      one :class:`~captum_clipspan.NeuronReport` per MLP layer, fitted on reference images.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: ``[B, 3, H, W]`` preprocessed images.
        texts: the class texts: strings, text embeddings ``[C, E]`` or a
            :class:`~captum_clipspan.ZeroShotClassifier`.
        target: which text each image is mapped for: ``None`` (the zero-shot prediction among
            ``texts``, as the paper), an int, or ``B`` ints.
        method: a key of :data:`HEATMAP_METHODS` or :data:`FITTED_HEATMAP_METHODS`.
        **options: arguments of the method's class (above).

    Returns:
        ``[B, g, g]`` float maps on the patch grid (larger = more relevant).

    Examples::

        >>> zs = cs.ZeroShotClassifier(clip, imagenet_classnames)
        >>> maps = heatmaps(clip, images, zs, method="decomposition")   # [B, 14, 14]
        >>> scores(maps, masks)
    """
    cls = heatmap_method(method, **options)
    clip.visual.check_images(images)
    matrix = text_matrix(clip, texts)
    columns = zero_shot_columns(clip, images, matrix, target)
    attribution = cls(clip, **options)
    maps = attribution.attribute(images, texts=matrix.to(clip.dtype), target=columns)
    return maps[:, 0].detach().float()


def topic_segmentation(clip: HookedCLIP, images: Tensor, texts: Any, layer: int,
                       head: int) -> Tensor:
    """Label each patch by the text that wins there within one head (the paper's Figure 8).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: ``[B, 3, H, W]`` preprocessed images.
        texts: ``T >= 2`` strings or text embeddings ``[T, E]`` (e.g. topics of the head).
        layer, head: the head.

    Returns:
        ``[B, g, g]`` long tensor of text indices.
    """
    maps = PatchContribution(clip, heads=[(layer, head)]).attribute(images, texts=texts)
    if maps.shape[1] < 2:
        raise ValueError("topic segmentation needs at least two texts to choose between.")
    return maps.argmax(dim=1)


def contrastive_map(clip: HookedCLIP, images: Tensor, text_a: str | Tensor,
                    text_b: str | Tensor, layers: Sequence[int] | None = None,
                    heads: Sequence[int] | Sequence[tuple[int, int]] | None = None) -> Tensor:
    """Patch map of text A minus that of text B: where the image is A rather than B.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: ``[B, 3, H, W]`` preprocessed images.
        text_a, text_b: strings or text embeddings ``[E]``.
        layers, heads: as in :class:`~captum_clipspan.PatchContribution`.

    Returns:
        ``[B, g, g]``: per patch, its direct effect on ``<image, a> - <image, b>``.
    """
    pair = torch.cat([text_matrix(clip, text) for text in (text_a, text_b)])
    maps = PatchContribution(clip, layers=layers, heads=heads).attribute(images, texts=pair)
    return maps[:, 0] - maps[:, 1]
