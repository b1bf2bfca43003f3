"""The shared base of the decomposition-backed Captum attributions: target resolution and output.

``target`` takes the forms users of CLIP reach for:

- a tensor of text embeddings ``[E]`` or ``[T, E]``;
- a string or a list/tuple of strings, encoded with the model's tokenizer;
- an int, a list of ints or a ``LongTensor`` ``[B]`` of class indices into a
  :class:`~captum_clipspan.ZeroShotClassifier` passed as ``classifier=`` (one column per example);
- ``None``: the attributions are joint-space vectors (last dimension ``E``).

Captum's ``NoiseTunnel`` repeats list and tensor targets once per noisy sample, as it does for class
indices; pass texts to a noise tunnel as a *tuple* of strings, which it leaves alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import Attribution
from torch import Tensor

from ..decomposition import CONVENTIONS, Decomposition, check_text_embeddings, decompose
from ..hooked.clip import HookedCLIP

TargetType = None | int | str | Sequence[int] | Sequence[str] | Tensor


@dataclass
class ResolvedTarget:
    """Text embeddings to project on ``[U, E]`` (or ``None``) and, for class targets, the column
    ``[B]`` of each example among them."""

    text_embeddings: Tensor | None
    columns: Tensor | None = None

    def select(self, scores: Tensor) -> Tensor:
        """Keep each example's own column: ``[B, ..., U]`` -> ``[B, ..., 1]``."""
        if self.columns is None:
            return scores
        index = self.columns.to(scores.device).reshape(-1, *[1] * (scores.dim() - 1))
        return scores.take_along_dim(index.expand(*scores.shape[:-1], 1), dim=-1)


def resolve_target(clip: HookedCLIP, target: TargetType, n_examples: int,
                   classifier: Any = None) -> ResolvedTarget:
    """Turn any accepted ``target`` form into text embeddings (see the module docstring)."""
    if target is None:
        return ResolvedTarget(None)
    if isinstance(target, str) or (
        isinstance(target, (list, tuple)) and target and all(isinstance(t, str) for t in target)
    ):
        return ResolvedTarget(clip.encode_text(target))
    if isinstance(target, Tensor) and target.is_floating_point():
        return ResolvedTarget(check_text_embeddings(target, clip.embed_dim))
    if isinstance(target, (int, list, tuple, Tensor)) and not isinstance(target, bool):
        return _class_target(target, n_examples, classifier)
    raise TypeError(
        f"target of type {type(target).__name__} is not accepted: give text embeddings [T, E], "
        "a string or list of strings, class indices (int, list or LongTensor [B]) with "
        "classifier=, or None for joint-space vectors."
    )


def _class_target(target: int | Sequence[int] | Tensor, n_examples: int,
                  classifier: Any) -> ResolvedTarget:
    if classifier is None:
        raise ValueError("class-index targets need classifier= (a ZeroShotClassifier) to say "
                         "which text embedding each class index means.")
    indices = torch.as_tensor(target).long().reshape(-1)
    if indices.numel() == 1:
        indices = indices.expand(n_examples)
    if indices.numel() != n_examples:
        raise ValueError(f"got {indices.numel()} class indices for {n_examples} examples; give "
                         "one int for all or one per example.")
    n_classes = classifier.class_embeddings.shape[0]
    if indices.min() < 0 or indices.max() >= n_classes:
        raise ValueError(f"class indices must be in 0..{n_classes - 1} for this classifier, got "
                         f"{indices.min().item()}..{indices.max().item()}.")
    unique, columns = torch.unique(indices, return_inverse=True)
    class_embeddings = classifier.class_embeddings
    return ResolvedTarget(class_embeddings[unique.to(class_embeddings.device)], columns)


class ClipSpanAttribution(Attribution):
    """Base of the attributions that read the exact decomposition (subclass it to add your own).

    A subclass calls :meth:`decompose` (target resolution, validation and the decomposition in
    one step) and :meth:`output` (class-target column selection and the convergence delta).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        convention: ``"reference"`` (the paper's code) or ``"centered"``; see
            :func:`~captum_clipspan.decompose`.
    """

    def __init__(self, clip: HookedCLIP, convention: str = "reference") -> None:
        if not isinstance(clip, HookedCLIP):
            raise TypeError(f"expected a HookedCLIP (HookedCLIP.from_open_clip(model) or "
                            f".from_pretrained(name)), got {type(clip).__name__}.")
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
        Attribution.__init__(self, clip)
        self.clip = clip
        self.convention = convention

    def has_convergence_delta(self) -> bool:
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def decompose(self, inputs: Tensor, target: TargetType, classifier: Any = None,
                  granularity: str = "head", layers: Sequence[int] | None = None
                  ) -> tuple[Decomposition, ResolvedTarget]:
        """Resolve ``target`` and decompose ``inputs`` ``[B, 3, H, W]`` projected on it."""
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be a tensor [B, 3, H, W] of preprocessed images, got "
                            f"{type(inputs).__name__}.")
        resolved = resolve_target(self.clip, target, inputs.shape[0], classifier)
        parts = decompose(self.clip, inputs, granularity=granularity, convention=self.convention,
                          layers=layers, normalize=True,
                          text_embeddings=resolved.text_embeddings)
        return parts, resolved

    @staticmethod
    def output(attributions: Tensor, parts: Decomposition, resolved: ResolvedTarget,
               return_convergence_delta: bool) -> Tensor | tuple[Tensor, Tensor]:
        """Select class columns and append the completeness error ``[B, T]`` when asked."""
        attributions = resolved.select(attributions)
        if not return_convergence_delta:
            return attributions
        return attributions, resolved.select(parts.convergence_delta())
