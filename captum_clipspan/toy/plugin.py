"""Registers the toy world with the library (the ``captum_clipspan.plugins`` entry point):
the shipped models (``"toy"``, ``"toy-spurious"``, ``"toy-clutter"``, ``"toy-clutter-spurious"``),
the text bank ``"toy"`` and the segmentation
dataset ``"scenes"``."""

from __future__ import annotations

from functools import partial

from .. import registry


def register() -> None:
    """Register the toys' names; :mod:`captum_clipspan.registry` calls this on first lookup."""
    from .model import TOY_MODELS, load_toy_clip
    from .segmentation import SceneSegmentation

    for name in TOY_MODELS:
        registry.register_model(name, partial(load_toy_clip, name=name))
    registry.register_text_bank("toy", lambda: _bank_texts())
    registry.register_dataset("scenes", SceneSegmentation)


def _bank_texts() -> list[str]:
    from .bank import toy_bank

    return toy_bank()[0]
