"""Per-patch direct effects: heat maps on the patch grid (the paper's Sec. 5 and Figure 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import LayerAttribution
from captum.log import log_usage
from torch import Tensor

from ..decomposition import resolve_layers
from ..hooked.clip import HookedCLIP
from .base import ClipSpanAttribution, TargetType


class PatchContribution(ClipSpanAttribution, LayerAttribution):
    """Direct effect of every image patch, through the chosen layers and heads.

    Sums the per-(token, head) terms ``c_{l,h,i}`` over the chosen layers and heads, drops the
    class token and reshapes to the patch grid. ``interpolate=True`` upsamples the maps to the
    input size with :meth:`captum.attr.LayerAttribution.interpolate`, ready for
    ``captum.attr.visualization.visualize_image_attr``.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        layers: layers to sum over (``None``: all).
        heads: head indices to sum over in each chosen layer (``None``: all), or a list of
            ``(layer, head)`` pairs, which then also decides the layers.
        convention: ``"reference"`` or ``"centered"``.

    Examples::

        >>> maps = cs.PatchContribution(clip, layers=[-4, -3, -2, -1]).attribute(
        ...     images, target="a photo of a dog", interpolate=True)   # [B, 1, 224, 224]
        >>> viz.visualize_image_attr(maps[0].permute(1, 2, 0).numpy(), image_np,
        ...                          "blended_heat_map", use_pyplot=False)
    """

    def __init__(self, clip: HookedCLIP, layers: Sequence[int] | None = None,
                 heads: Sequence[int] | Sequence[tuple[int, int]] | None = None,
                 convention: str = "reference") -> None:
        ClipSpanAttribution.__init__(self, clip, convention)
        LayerAttribution.__init__(self, clip, clip.visual)
        n_layers, n_heads = clip.visual.n_layers, clip.visual.n_heads
        pairs = heads is not None and all(isinstance(h, (tuple, list)) for h in heads)
        if pairs:
            self.layers = resolve_layers([layer for layer, _ in heads], n_layers)
        else:
            self.layers = resolve_layers(layers, n_layers)
        self.head_mask = torch.zeros(len(self.layers), n_heads, device=clip.device)
        if heads is None:
            self.head_mask.fill_(1.0)
        else:
            for entry in heads:
                layer, head = (entry if pairs else (None, entry))
                if not isinstance(head, int) or not -n_heads <= head < n_heads:
                    raise ValueError(f"head {head!r} is out of range: heads are ints in "
                                     f"0..{n_heads - 1}, or (layer, head) pairs.")
                rows = [self.layers.index(layer % n_layers)] if pairs else slice(None)
                self.head_mask[rows, head % n_heads] = 1.0

    @log_usage(part_of_slo=True)
    def attribute(self, inputs: Tensor, target: TargetType = None, classifier: Any = None,
                  interpolate: bool = False, interpolate_mode: str = "bilinear",
                  return_convergence_delta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Patch maps.

        Args:
            inputs: ``[B, 3, H, W]`` preprocessed images.
            target: text embeddings ``[T, E]``/``[E]``, string(s), class indices with
                ``classifier``, or ``None`` for joint-space vectors (``T`` becomes ``E``).
            classifier: a :class:`~captum_clipspan.ZeroShotClassifier` for class-index targets.
            interpolate: upsample the ``g x g`` grid to the input's ``H x W``.
            interpolate_mode: ``torch.nn.functional.interpolate`` mode.
            return_convergence_delta: also return the completeness error ``[B, T]`` of the
                whole decomposition.

        Returns:
            ``[B, T, g, g]`` (or ``[B, T, H, W]`` when interpolated); and the delta when asked.
        """
        parts, resolved = self.decompose(inputs, target, classifier, "token", self.layers)
        mask = self.head_mask.to(parts.tokens.dtype)
        patches = parts.tokens[:, :, self.clip.visual.n_prefix_tokens:]  # drop class/registers
        per_token = (patches * mask[None, :, None, :, None]).sum(dim=(1, 3))
        grid = self.clip.visual.grid_size
        maps = resolved.select(per_token).permute(0, 2, 1).reshape(
            per_token.shape[0], -1, *grid
        )
        if interpolate:
            maps = LayerAttribution.interpolate(maps, tuple(inputs.shape[-2:]), interpolate_mode)
        if not return_convergence_delta:
            return maps
        return maps, resolved.select(parts.convergence_delta())
