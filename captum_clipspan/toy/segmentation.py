"""The toy's segmentation data: held-out synthetic scenes with their object masks, for
:func:`captum_clipspan.segmentation.benchmark` (registered as the dataset ``"scenes"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..segmentation.datasets import _SegmentationData
from .scenes import ATTRIBUTES, PREFIXES, caption, make_scenes

__all__ = ["SceneSegmentation"]


class SceneSegmentation(_SegmentationData):
    """Synthetic scenes (:mod:`captum_clipspan.toy.scenes`) with their object masks.

    Args:
        n: number of scenes.
        seed: random seed (the toy model was trained on other seeds; 2024 is held out).
        transform, size: as in :class:`~captum_clipspan.segmentation.ImagenetSegmentation`.

    Examples::

        >>> from captum_clipspan import segmentation as seg
        >>> data = SceneSegmentation(500, **seg.for_model(clip))
        >>> classes = cs.ZeroShotClassifier.from_prompts(clip, SceneSegmentation.class_prompts())
        >>> seg.benchmark(clip, data, classes)
    """

    def __init__(self, n: int, seed: int = 2024, transform: Callable | None = None,
                 size: int | tuple[int, int] | None = None) -> None:
        super().__init__(transform, size)
        self.scenes = make_scenes(n, seed=seed)

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
