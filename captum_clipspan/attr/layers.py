"""Per-layer direct effects: the embeddings, every attention and MLP layer (and the pool's
terms), one row each, named by :func:`~captum_clipspan.components.layer_names`."""

from __future__ import annotations

from typing import Literal, overload

import torch
from captum.log import log_usage
from torch import Tensor

from ..components import layer_names
from .base import ClipSpanAttribution, TargetType, TextsType


class LayerContribution(ClipSpanAttribution):
    """Direct effect of the embedding term and of every MSA and MLP layer.

    Rows follow the residual stream: ``embed, attn_0, mlp_0, attn_1, mlp_1, ...`` (``2L + 1``
    rows); with ``convention="centered"`` a row holds the readout's constant (``ln_post``'s
    bias), and towers whose attention pool has its own MLP (SigLIP) add a ``pool_mlp`` row, so the
    rows always sum to the image-text similarity. :meth:`row_names` labels them.

    Examples::

        >>> layers = cs.LayerContribution(clip)
        >>> scores = layers.attribute(images, texts=texts)   # [B, 2L + 1, T]
        >>> dict(zip(layers.row_names(), scores[0, :, 0].tolist()))
    """

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None, *,
                  return_convergence_delta: Literal[True]) -> tuple[Tensor, Tensor]: ...

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  return_convergence_delta: Literal[False] = False) -> Tensor: ...

    @log_usage()
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  return_convergence_delta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Per-layer direct effects.

        Args:
            inputs: ``[B, 3, H, W]`` preprocessed images.
            texts: as for :class:`HeadContribution`.
            target: ``None`` or one index per example into the texts.
            return_convergence_delta: also return the completeness error.

        Returns:
            ``[B, R, T]``, ``[B, R]`` with a target, or ``[B, R, E]`` without texts;
            ``R = len(self.row_names())``.
        """
        parts, resolved = self.decompose(inputs, texts, target, "layer")
        interleaved = torch.stack([parts.attns, parts.mlps], dim=2).flatten(1, 2)
        rows = [parts.embed[:, None], interleaved]
        rows += [extra[:, None] for extra in (parts.ln_bias, parts.pool_mlp) if extra is not None]
        return self.output(torch.cat(rows, dim=1), parts, resolved, return_convergence_delta)

    def row_names(self) -> list[str]:
        """Names of the output rows (:mod:`captum_clipspan.components`): ``["embed", "attn.0",
        "mlp.0", ...]``, then ``"ln_post.bias"`` (``"centered"``) and ``"pool_mlp"`` (towers
        whose attention pool has its own MLP, such as SigLIP). ``MeanAblation`` accepts each."""
        pool = self.clip.visual.pool
        return layer_names(self.clip.visual.n_layers, centered=self.convention == "centered",
                           pool_mlp=pool is not None and pool.has_mlp)
