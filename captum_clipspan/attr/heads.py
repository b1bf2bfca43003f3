"""Direct effects of attention heads on the image-text similarity (layers: :mod:`.layers`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

from captum.log import log_usage
from torch import Tensor

from ..hooked.clip import HookedCLIP
from ..validation import resolve_layers
from .base import ClipSpanAttribution, TargetType, TextsType


class HeadContribution(ClipSpanAttribution):
    """Direct effect of every attention head on the image embedding (the paper's ``c_head``).

    Each head's term is a vector in the joint image-text space; against a unit text embedding it
    is that head's share of the image-text cosine similarity. Together with the MLP, embedding and
    (``"centered"``) bias terms they sum exactly to the similarity; ``return_convergence_delta``
    reports that sum minus the similarity.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        layers: layer indices to report (``None``: all; negative indices count from the end).
        convention: ``"reference"`` (the paper's code) or ``"centered"``.

    Examples::

        >>> heads = cs.HeadContribution(clip, layers=[-4, -3, -2, -1])
        >>> scores, delta = heads.attribute(images, texts=["a dog", "a cat"],
        ...                                 return_convergence_delta=True)
        >>> scores.shape   # [B, 4, H, 2]
        >>> own = heads.attribute(images, texts=["a dog", "a cat"], target=[0, 1])  # [B, 4, H]
        >>> smooth = NoiseTunnel(heads).attribute(images, nt_samples=8, texts=["a dog"])
    """

    def __init__(self, clip: HookedCLIP, layers: Sequence[int] | None = None,
                 convention: str = "reference") -> None:
        super().__init__(clip, convention)
        self.layers = resolve_layers(layers, clip.visual.n_layers)

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None, *,
                  return_convergence_delta: Literal[True]) -> tuple[Tensor, Tensor]: ...

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  return_convergence_delta: Literal[False] = False) -> Tensor: ...

    @log_usage()
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  return_convergence_delta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Per-head direct effects.

        Args:
            inputs: ``[B, 3, H, W]`` preprocessed images.
            texts: string(s), text embeddings ``[T, E]``/``[E]``, a
                :class:`~captum_clipspan.ZeroShotClassifier`, or ``None`` (default) for
                joint-space vectors.
            target: ``None`` (default: every text) or one index per example into the texts
                (an int, a list of ints or a ``LongTensor [B]``).
            return_convergence_delta: also return the completeness error (see
                :meth:`compute_convergence_delta`).

        Returns:
            ``[B, L_s, H, T]`` scores, ``[B, L_s, H]`` with a target, or ``[B, L_s, H, E]``
            vectors without texts; and the delta (``[B, T]``, ``[B]`` or ``[B, E]``) when asked.
        """
        parts, resolved = self.decompose(inputs, texts, target, "head", self.layers)
        return self.output(parts.heads, parts, resolved, return_convergence_delta)
