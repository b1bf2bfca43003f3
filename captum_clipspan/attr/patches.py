"""Per-patch direct effects: heat maps on the patch grid (the paper's Sec. 5 and Figure 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

from captum.log import log_usage
from torch import Tensor

from ..hooked.clip import HookedCLIP
from ..validation import resolve_heads
from .base import ClipSpanAttribution, TargetType, TextsType, patch_grid, upsample

ContrastType = str | int | None


def contrast_maps(maps: Tensor, contrast: str | int = "mean") -> Tensor:
    """What sets each text's map apart from the others' (the paper's contrast, Sec. 5).

    Raw maps of different texts on one image are dominated by what every text shares (the
    image's own direct effect), so they look alike; subtracting the common part shows where the
    texts differ.

    Args:
        maps: ``[B, T, ...]`` maps of ``T >= 2`` texts (``[B, T, g, g]`` or upsampled).
        contrast: ``"mean"``: each map minus the mean of the ``T`` maps; an int ``k``: each map
            minus that of text ``k`` (a reference text, whose own map becomes zero).

    Returns:
        ``[B, T, ...]`` the contrasted maps.

    Examples::

        >>> maps = cs.PatchContribution(clip).attribute(images, texts=["a square", "a circle"])
        >>> contrast_maps(maps)[0, 0]   # where "a square" beats "a circle"
    """
    if maps.dim() < 2 or maps.shape[1] < 2:
        raise ValueError(f"a contrast needs the maps of at least two texts [B, T >= 2, ...], got "
                         f"shape {list(maps.shape)}; pass several texts.")
    if contrast == "mean":
        return maps - maps.mean(dim=1, keepdim=True)
    if isinstance(contrast, int) and not isinstance(contrast, bool):
        if not -maps.shape[1] <= contrast < maps.shape[1]:
            raise ValueError(f"contrast={contrast} is no text index (there are {maps.shape[1]} "
                             "texts).")
        return maps - maps[:, [contrast]]
    raise ValueError(f"contrast must be None, 'mean' or the index of a reference text, got "
                     f"{contrast!r}.")


class PatchContribution(ClipSpanAttribution):
    """Direct effect of every image patch, through the chosen layers and heads.

    Sums the per-(token, head) terms ``c_{l,h,i}`` over the chosen layers and heads, drops the
    class token and reshapes to the patch grid. ``interpolate=True`` upsamples the maps to the
    input size with :meth:`captum.attr.LayerAttribution.interpolate`, ready for
    ``captum.attr.visualization.visualize_image_attr``.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        layers: layers to sum over (``None``: all; negative indices count from the end).
        heads: ``None`` (all heads), a list of head ints (those heads of every chosen layer), or
            a list of ``(layer, head)`` pairs, which then choose the layers (leave ``layers``
            ``None``). A bare pair ``heads=(3, 1)`` is refused as ambiguous: write
            ``heads=[3, 1]`` or ``heads=[(3, 1)]``.
        convention: ``"reference"`` or ``"centered"``.

    Maps of several texts on one image look alike: most of each is the image's own direct
    effect, common to every text. Pass ``contrast="mean"`` (each map minus the texts' mean, the
    paper's contrast) or a reference text's index to see where the texts differ.

    Examples::

        >>> maps = cs.PatchContribution(clip, layers=[-4, -3, -2, -1]).attribute(
        ...     images, texts="a photo of a dog", interpolate=True)   # [B, 1, 224, 224]
        >>> head = cs.PatchContribution(clip, heads=[(11, 3)])       # one head
        >>> own = head.attribute(images, texts=["a dog", "a cat"], target=[0, 1])  # [B, 1, g, g]
        >>> apart = head.attribute(images, texts=["a dog", "a cat"], contrast="mean")
        >>> viz.visualize_image_attr(maps[0].permute(1, 2, 0).numpy(), image_np,
        ...                          "blended_heat_map", use_pyplot=False)
    """

    def __init__(self, clip: HookedCLIP, layers: Sequence[int] | None = None,
                 heads: Sequence[int] | Sequence[tuple[int, int]] | None = None,
                 convention: str = "reference") -> None:
        ClipSpanAttribution.__init__(self, clip, convention)
        vit = clip.visual
        self.layers, mask = resolve_heads(heads, layers, vit.n_layers, vit.n_heads)
        self.head_mask = mask.to(clip.device)

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  interpolate: bool = False, interpolate_mode: str = "bilinear", *,
                  return_convergence_delta: Literal[True],
                  contrast: ContrastType = None) -> tuple[Tensor, Tensor]: ...

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  interpolate: bool = False, interpolate_mode: str = "bilinear",
                  return_convergence_delta: Literal[False] = False,
                  contrast: ContrastType = None) -> Tensor: ...

    @log_usage()
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  interpolate: bool = False, interpolate_mode: str = "bilinear",
                  return_convergence_delta: bool = False,
                  contrast: ContrastType = None) -> Tensor | tuple[Tensor, Tensor]:
        """Patch maps.

        Args:
            inputs: ``[B, 3, H, W]`` preprocessed images.
            texts: string(s), text embeddings ``[T, E]``/``[E]``, a
                :class:`~captum_clipspan.ZeroShotClassifier`, or ``None`` for joint-space
                vectors (``T`` becomes ``E``).
            target: ``None`` (every text) or one index per example into the texts.
            interpolate: upsample the ``g x g`` grid to the input's ``H x W``.
            interpolate_mode: ``torch.nn.functional.interpolate`` mode.
            return_convergence_delta: also return the completeness error of the whole
                decomposition (``[B, T]``, or ``[B]`` with a target).
            contrast: ``None`` (default: each text's own direct effects, which sum to its
                score), ``"mean"`` (each map minus the mean over the texts) or the index of a
                reference text whose map is subtracted; see :func:`contrast_maps`. Needs
                ``T >= 2`` texts and no target.

        Returns:
            ``[B, T, g, g]``, ``[B, 1, g, g]`` with a target (``H x W`` instead of ``g x g``
            when interpolated); and the delta when asked.
        """
        if contrast is not None and (texts is None or target is not None):
            raise ValueError("contrast compares the maps of several texts: pass texts= (two or "
                             "more) and no target, then index the result.")
        parts, resolved = self.decompose(inputs, texts, target, "token", self.layers)
        mask = self.head_mask.to(parts.tokens.dtype)
        per_token = (parts.tokens * mask[None, :, None, :, None]).sum(dim=(1, 3))  # [B, N, T]
        per_text = resolved.select(per_token)  # [B, N, T], or [B, N] with a target
        per_text = per_text.reshape(*per_text.shape[:2], -1).transpose(1, 2)  # [B, T or 1, N]
        maps = patch_grid(per_text, self.clip.visual)
        if contrast is not None:
            maps = contrast_maps(maps, contrast)
        if interpolate:
            maps = upsample(maps, inputs, interpolate_mode)
        if not return_convergence_delta:
            return maps
        return maps, resolved.select(parts.convergence_delta())
