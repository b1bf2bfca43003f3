"""Toy open_clip CLIP trained offline on synthetic scenes (see :mod:`captum_clipspan.datasets`).

Examples::

    >>> from captum_clipspan.toy import load_toy_clip
    >>> model, tokenizer, preprocess = load_toy_clip()
"""

from .model import (
    TOY_MODEL_CONFIG,
    TOY_MODELS,
    TOY_PREPROCESS_CONFIG,
    build_toy_clip,
    load_toy_clip,
    toy_clip_info,
    toy_preprocess,
    zero_shot_accuracy,
)
from .tokenizer import WordTokenizer

__all__ = [
    "TOY_MODELS",
    "TOY_MODEL_CONFIG",
    "TOY_PREPROCESS_CONFIG",
    "WordTokenizer",
    "build_toy_clip",
    "load_toy_clip",
    "toy_clip_info",
    "toy_preprocess",
    "zero_shot_accuracy",
]
