"""The shared base of the decomposition-backed Captum attributions: texts, target and output.

``texts=`` says what the scores are read against:

- a string or a list/tuple of strings, encoded with the model's tokenizer;
- a tensor of text embeddings ``[E]`` or ``[T, E]``;
- a :class:`~captum_clipspan.ZeroShotClassifier` (its ``C`` class embeddings);
- ``None``: the attributions are joint-space vectors (last dimension ``E``).

``target`` keeps Captum's meaning: ``None`` (every text: a last dimension ``T``) or one index per
example into the texts (an int, a list of ints or a ``LongTensor [B]``: that dimension is
dropped). Captum's wrappers (``NoiseTunnel``, ...) expand ``target`` per sample and leave
``texts=`` alone, so they work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from captum.attr import Attribution, LayerAttribution
from torch import Tensor

from ..decomposition import CONVENTIONS, Decomposition, decompose
from ..hooked.clip import HookedCLIP
from ..hooked.vit import HookedViT
from ..validation import TargetType, TextsType, check_choice, resolve_target, resolve_texts

__all__ = ["ClipSpanAttribution", "ResolvedTexts", "TargetType", "TextsType", "patch_grid",
           "upsample"]


def patch_grid(per_token: Tensor, vit: HookedViT) -> Tensor:
    """Values over every token ``[B, K, N]`` -> maps over the patch grid ``[B, K, g, g]``.

    The prefix tokens (class and register tokens) are dropped; the layout is the hooked tower's.
    """
    patches = per_token[..., vit.n_prefix_tokens:]
    return patches.reshape(*patches.shape[:-1], *vit.grid_size)


def upsample(maps: Tensor, inputs: Tensor, mode: str = "bilinear") -> Tensor:
    """Patch maps ``[B, K, g, g]`` -> ``[B, K, H, W]`` at the input's size, with Captum's
    :meth:`~captum.attr.LayerAttribution.interpolate` (the patch maps are input attributions,
    not a layer's, so the classes only borrow this static method)."""
    return LayerAttribution.interpolate(maps, tuple(inputs.shape[-2:]), mode)


@dataclass
class ResolvedTexts:
    """Text embeddings to project on ``[U, E]`` (or ``None``) and, when a target is given, each
    example's column ``[B]`` among them (only the ``U`` texts some example targets are kept)."""

    text_embeddings: Tensor | None
    columns: Tensor | None = None

    @classmethod
    def resolve(cls, clip: HookedCLIP, texts: TextsType, target: TargetType,
                n_examples: int) -> ResolvedTexts:
        """Validate ``texts`` and ``target`` together (see the module docstring)."""
        embeddings = resolve_texts(clip, texts)
        indices = resolve_target(target, n_examples,
                                 None if embeddings is None else embeddings.shape[0])
        if indices is None:
            return cls(embeddings)
        unique, columns = torch.unique(indices, return_inverse=True)
        return cls(embeddings[unique.to(embeddings.device)], columns)

    def select(self, scores: Tensor) -> Tensor:
        """Keep each example's own text: ``[B, ..., U]`` -> ``[B, ...]`` (unchanged without a
        target)."""
        if self.columns is None:
            return scores
        index = self.columns.to(scores.device).reshape(-1, *[1] * (scores.dim() - 1))
        return scores.take_along_dim(index.expand(*scores.shape[:-1], 1), dim=-1)[..., 0]


class ClipSpanAttribution(Attribution):
    """Base of the attributions that read the exact decomposition (subclass it to add your own).

    A subclass calls :meth:`decompose` (texts and target resolution, validation and the
    decomposition in one step) and :meth:`output` (target selection and the convergence delta).
    It is the one place where ``texts=`` and ``target`` are resolved.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        convention: ``"reference"`` (the paper's code) or ``"centered"``; see
            :func:`~captum_clipspan.decompose`.
    """

    def __init__(self, clip: HookedCLIP, convention: str = "reference") -> None:
        if not isinstance(clip, HookedCLIP):
            raise TypeError(f"expected a HookedCLIP (HookedCLIP.from_open_clip(model) or "
                            f".from_pretrained(name)), got {type(clip).__name__}.")
        check_choice(convention, "convention", CONVENTIONS)
        Attribution.__init__(self, clip)
        self.clip = clip
        self.convention = convention

    def has_convergence_delta(self) -> bool:
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def compute_convergence_delta(self, inputs: Tensor, texts: TextsType = None,
                                  target: TargetType = None) -> Tensor:
        """Completeness error: the sum of every decomposition term minus the true score.

        The true score is the cosine similarity of the model's own (normalized) image embedding
        with each text, from a plain forward pass; the decomposition's terms (embedding, every
        MSA and MLP layer and, ``"centered"``, the biases) should sum to it exactly.

        Args:
            inputs: ``[B, 3, H, W]`` preprocessed images.
            texts: as for :meth:`attribute`.
            target: as for :meth:`attribute`.

        Returns:
            ``[B, T]`` (``[B, E]`` without texts), or ``[B]`` with a target.

        Examples::

            >>> cs.HeadContribution(clip).compute_convergence_delta(images, texts=["a dog"])
        """
        parts, resolved = self.decompose(inputs, texts, target, granularity="layer")
        return resolved.select(parts.convergence_delta())

    def decompose(self, inputs: Tensor, texts: TextsType, target: TargetType,
                  granularity: str = "head", layers: Sequence[int] | None = None
                  ) -> tuple[Decomposition, ResolvedTexts]:
        """Resolve ``texts`` and ``target`` and decompose ``inputs`` ``[B, 3, H, W]`` on them."""
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be a tensor [B, 3, H, W] of preprocessed images, got "
                            f"{type(inputs).__name__}.")
        resolved = ResolvedTexts.resolve(self.clip, texts, target, inputs.shape[0])
        parts = decompose(self.clip, inputs, granularity=granularity, convention=self.convention,
                          layers=layers, normalize=True,
                          text_embeddings=resolved.text_embeddings)
        return parts, resolved

    @staticmethod
    def output(attributions: Tensor, parts: Decomposition, resolved: ResolvedTexts,
               return_convergence_delta: bool) -> Tensor | tuple[Tensor, Tensor]:
        """Select each example's text and append the completeness error when asked."""
        attributions = resolved.select(attributions)
        if not return_convergence_delta:
            return attributions
        return attributions, resolved.select(parts.convergence_delta())
