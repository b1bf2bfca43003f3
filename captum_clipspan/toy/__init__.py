"""The toy models and their synthetic world.

* :mod:`~captum_clipspan.toy.scenes`: synthetic scenes with known attributes and masks;
* :mod:`~captum_clipspan.toy.model`: the shipped toy CLIPs (``"toy"``, ``"toy-spurious"``);
* :mod:`~captum_clipspan.toy.probes`: per-attribute classifiers and head probes on the scenes;
* :mod:`~captum_clipspan.toy.spurious`: the spurious-cue benchmark;
* :mod:`~captum_clipspan.toy.segmentation`: the scenes with masks as segmentation data.

Names are loaded on first use, so ``import captum_clipspan.toy.scenes`` does not import
open_clip.

Examples::

    >>> from captum_clipspan.toy import load_toy_clip
    >>> model, tokenizer, preprocess = load_toy_clip()
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_EXPORTS = {
    "TOY_MODELS": "model",
    "TOY_MODEL_CONFIG": "model",
    "TOY_PREPROCESS_CONFIG": "model",
    "build_toy_clip": "model",
    "load_toy_clip": "model",
    "toy_clip_info": "model",
    "toy_preprocess": "model",
    "toy_world": "model",
    "zero_shot_accuracy": "model",
    "WordTokenizer": "tokenizer",
    "toy_bank": "bank",
    "SceneSegmentation": "segmentation",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)
