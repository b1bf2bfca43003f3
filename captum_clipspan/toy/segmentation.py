"""The toy's segmentation data: held-out synthetic scenes (test split) with their object masks, for
:func:`captum_clipspan.segmentation.benchmark` (registered as the dataset ``"scenes"``), and the
neuron reports that the ``"neurons"`` heat-map method reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..hooked.clip import HookedCLIP
from ..neurons import NeuronLens, NeuronReport
from ..segmentation.datasets import _SegmentationData
from .scenes import ATTRIBUTES, PREFIXES, caption, held_out, make_scenes

__all__ = ["SceneSegmentation", "neuron_reports"]


class SceneSegmentation(_SegmentationData):
    """Synthetic scenes (:mod:`captum_clipspan.toy.scenes`) with their object masks.

    Args:
        n: number of scenes.
        seed: random seed within ``split``.
        transform, size: as in :class:`~captum_clipspan.segmentation.ImagenetSegmentation`.
        split: ``"test"`` (default) or ``"validation"``; ``"train"`` is refused
            (:func:`~captum_clipspan.toy.scenes.held_out`).
        world: ``"simple"`` (default) or ``"clutter"``, whose distractors and confetti in the
            objects' colors keep a model-free colour map from finding the objects
            (:data:`~captum_clipspan.toy.scenes.WORLDS`).

    Examples::

        >>> from captum_clipspan import segmentation as seg
        >>> data = SceneSegmentation(500, **seg.for_model(clip))
        >>> classes = cs.ZeroShotClassifier.from_prompts(clip, SceneSegmentation.class_prompts())
        >>> seg.benchmark(clip, data, classes)
    """

    def __init__(self, n: int, seed: int = 2024, transform: Callable | None = None,
                 size: int | tuple[int, int] | None = None, split: str = "test",
                 world: str = "simple") -> None:
        super().__init__(transform, size)
        self.scenes = make_scenes(n, seed=seed, split=held_out(split), world=world)

    def __len__(self) -> int:
        return len(self.scenes)

    def raw(self, index: int) -> tuple[Any, np.ndarray]:
        from PIL import Image

        return Image.fromarray(self.scenes.images[index]), self.scenes.masks[index]

    @staticmethod
    def class_prompts() -> dict[str, list[str]]:
        """``{"red circle": ["a red circle", "a photo of a red circle", ...]}``: the scenes'
        object classes (color and shape), for a :class:`~captum_clipspan.ZeroShotClassifier`
        built with ``ZeroShotClassifier.from_prompts``."""
        return {f"{color} {shape}": [caption({"color": color, "shape": shape},
                                             families=["color", "shape"], prefix=prefix)
                                     for prefix in PREFIXES[:3]]
                for shape in ATTRIBUTES["shape"] for color in ATTRIBUTES["color"]}


def neuron_reports(clip: HookedCLIP, n: int = 400, seed: int = 7,
                   layers: Sequence[int] | None = None, top_k: int = 100, n_components: int = 4,
                   batch_size: int = 100, split: str = "validation",
                   world: str = "simple") -> list[NeuronReport]:
    """The neuron lens fitted on reference scenes, one report per MLP layer, for the
    ``"neurons"`` heat-map method (``options={"neurons": {"reports": neuron_reports(clip)}}``).

    Args:
        clip: the toy (``HookedCLIP.from_pretrained("toy")``).
        n: reference scenes.
        seed: their seed within ``split``.
        layers: MLP layers to read (default: every layer that a later attention layer reads).
        top_k: top images per neuron for the principal component (the authors' 100).
        n_components: texts per neuron in the sparse decomposition over the toy bank (the
            segmentation map reads only the components).
        batch_size: images per forward pass.
        split: the reference scenes' split, ``"validation"`` (default: kept apart from the
            ``"test"`` scenes that are scored) or ``"test"``; ``"train"`` is refused.
        world: the reference scenes' world (:data:`~captum_clipspan.toy.scenes.WORLDS`).

    Returns:
        One :class:`~captum_clipspan.NeuronReport` per layer.

    Examples::

        >>> reports = neuron_reports(clip, n=400)
        >>> seg.benchmark(clip, SceneSegmentation(500, **seg.for_model(clip)), classes,
        ...               methods=["decomposition", "neurons"],
        ...               options={"neurons": {"reports": reports}})
    """
    layers = range(clip.visual.n_layers - 1) if layers is None else layers
    images = clip.preprocess_images(list(make_scenes(n, seed=seed, split=held_out(split),
                                                     world=world).images))
    return [NeuronLens(clip, layer, bank="toy", top_k=top_k, n_components=n_components)
            .fit(images, batch_size=batch_size, show_progress=False) for layer in layers]
