"""The toy models and their synthetic world.

* :mod:`~captum_clipspan.toy.scenes`: synthetic scenes with known attributes and masks;
* :mod:`~captum_clipspan.toy.model`: the shipped toy CLIPs (``"toy"``, ``"toy-spurious"``);
* :mod:`~captum_clipspan.toy.probes`: per-attribute classifiers and head probes on the scenes;
* :mod:`~captum_clipspan.toy.spurious`: the spurious-cue benchmark.

Names are loaded on first use, so ``import captum_clipspan.toy.scenes`` does not import
open_clip.

Examples::

    >>> from captum_clipspan.toy import load_toy_clip
    >>> model, tokenizer, preprocess = load_toy_clip()
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TOY_MODELS": "model",
    "TOY_MODEL_CONFIG": "model",
    "TOY_PREPROCESS_CONFIG": "model",
    "build_toy_clip": "model",
    "load_toy_clip": "model",
    "toy_clip_info": "model",
    "toy_preprocess": "model",
    "zero_shot_accuracy": "model",
    "WordTokenizer": "tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'captum_clipspan.toy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
