"""Patch heat maps besides the plain patch contributions: the paper's class-contrastive map and
the baselines it is compared with (Sec. 5.1, Table 3).

The math is written once, as functions on tensors: :func:`pooled_row`, :func:`rollout`
(Abnar & Zuidema, 2020) and :func:`relevancy` (Chefer et al., 2021); the patch grid is
:func:`~captum_clipspan.attr.base.patch_grid`. The
classes only read hook points and format the output. They take ``texts=`` and ``target`` as every
attribution here does (:class:`~captum_clipspan.attr.base.ResolvedTexts`) and return patch maps
``[B, T, g, g]`` (``[B, 1, g, g]`` with a target or, for the text-independent attention maps,
without texts); ``interpolate=True`` upsamples them to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
from captum.attr import Attribution, GradientAttribution, LayerGradCam
from captum.log import log_usage
from torch import Tensor, nn

from ..hooked.clip import HookedCLIP
from ..validation import resolve_layer, resolve_texts
from .base import ResolvedTexts, TargetType, TextsType, patch_grid, upsample
from .patches import PatchContribution

if TYPE_CHECKING:
    from ..hooked.vit import HookedViT

__all__ = ["AttentionRollout", "CheferRelevance", "ContrastivePatchContribution", "GradCAM",
           "RawAttention", "pooled_row", "relevancy", "rollout"]


# --------------------------------------------------------------------------- the math


def pooled_row(matrix: Tensor, rows: slice) -> Tensor:
    """The row(s) the tower pools of a token-by-token matrix: ``[B, N, N]`` -> ``[B, N]``.

    Args:
        matrix: ``[B, N, N]``, e.g. an attention pattern averaged over heads.
        rows: the pooled rows (``HookedViT.pool_rows``): the class token's row, or the patch
            rows for average pooling, which are averaged.
    """
    return matrix[:, rows].mean(dim=1)


def rollout(attentions: Sequence[Tensor]) -> Tensor:
    """Attention rollout with the residual identity (Abnar & Zuidema, 2020).

    Each layer's head-averaged pattern ``A`` becomes ``(A + I) / rowsum``; the rollout is the
    product over layers, the last layer leftmost.

    Args:
        attentions: per layer, ``[B, H, N, N]`` patterns (first layer first).

    Returns:
        ``[B, N, N]``: how much each token's output draws on each input token.
    """
    joint = None
    for pattern in attentions:
        mixed = pattern.mean(dim=1)
        mixed = mixed + torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        joint = mixed if joint is None else mixed @ joint
    return joint


def relevancy(attentions: Sequence[Tensor], gradients: Sequence[Tensor]) -> Tensor:
    """Chefer et al.'s (2021) relevancy: ``R = I``, then per layer ``R += mean_h (grad * A)^+ R``.

    Args:
        attentions: per layer, ``[B, H, N, N]`` patterns (first layer first).
        gradients: the score's gradients with respect to them, same shapes.

    Returns:
        ``[B, N, N]`` relevancy of each input token for each output token.
    """
    n_tokens = attentions[0].shape[-1]
    eye = torch.eye(n_tokens, dtype=attentions[0].dtype, device=attentions[0].device)
    relevance = eye.expand(attentions[0].shape[0], n_tokens, n_tokens)
    for pattern, grad in zip(attentions, gradients, strict=True):
        cam = (grad * pattern).clamp(min=0).mean(dim=1)
        relevance = relevance + cam @ relevance
    return relevance


# --------------------------------------------------------------------------- shared plumbing


def _pattern_names(vit: HookedViT, start_layer: int) -> list[str]:
    return [f"blocks.{layer}.attn.hook_pattern" for layer in range(start_layer, vit.n_layers)]


def _attention_patterns(vit: HookedViT, images: Tensor, names: list[str]) -> list[Tensor]:
    """``[B, H, N, N]`` attention patterns at the hook points ``names``, without gradients."""
    with torch.no_grad():
        _, cache = vit.run_with_cache(images, names_filter=names)
    return [cache[name] for name in names]


def _score_columns(resolved: ResolvedTexts, n_examples: int) -> list[Tensor]:
    """One ``[B]`` column index per map to draw: each example's target, or every text in turn."""
    if resolved.columns is not None:
        return [resolved.columns.to(resolved.text_embeddings.device)]
    return [torch.full((n_examples,), column, device=resolved.text_embeddings.device)
            for column in range(resolved.text_embeddings.shape[0])]


class _PatchMapAttribution(Attribution):
    """A heat map read from the hooked tower: ``texts=``/``target`` in, patch maps out.

    Subclasses implement ``_maps(inputs, resolved) -> [B, K, g, g]``: ``K = 1`` for a map that
    does not depend on the text (it is repeated for every text), otherwise one map per column of
    :func:`_score_columns`. ``needs_texts`` marks the maps that differentiate a text's score.
    """

    needs_texts = False

    def __init__(self, clip: HookedCLIP) -> None:
        if not isinstance(clip, HookedCLIP):
            raise TypeError(f"expected a HookedCLIP (HookedCLIP.from_open_clip(model) or "
                            f".from_pretrained(name)), got {type(clip).__name__}.")
        Attribution.__init__(self, clip)
        self.clip = clip

    def has_convergence_delta(self) -> bool:
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def _maps(self, inputs: Tensor, resolved: ResolvedTexts) -> Tensor:
        raise NotImplementedError

    @log_usage()
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  interpolate: bool = False, interpolate_mode: str = "bilinear") -> Tensor:
        """Patch heat maps (larger = more relevant).

        Args:
            inputs: ``[B, 3, H, W]`` preprocessed images.
            texts: string(s), text embeddings ``[T, E]``/``[E]`` or a
                :class:`~captum_clipspan.ZeroShotClassifier`; ``None`` (default) only for the
                maps that do not read a text (raw attention, rollout).
            target: ``None`` (default: every text) or one index per example into the texts
                (an int, a list of ints or a ``LongTensor [B]``).
            interpolate: upsample the ``g x g`` grid to the input's ``H x W``.
            interpolate_mode: ``torch.nn.functional.interpolate`` mode.

        Returns:
            ``[B, T, g, g]``, or ``[B, 1, g, g]`` with a target or without texts (``H x W``
            instead of ``g x g`` when interpolated), detached, in the model's dtype.
        """
        self.clip.visual.check_images(inputs)
        resolved = ResolvedTexts.resolve(self.clip, texts, target, inputs.shape[0])
        if self.needs_texts and resolved.text_embeddings is None:
            raise ValueError(f"{type(self).__name__} differentiates an image-text similarity: "
                             f"pass texts= (strings, text embeddings [T, E] or a "
                             f"ZeroShotClassifier).")
        maps = self._maps(inputs, resolved).detach()
        if interpolate:
            maps = upsample(maps, inputs, interpolate_mode)
        if resolved.columns is None and resolved.text_embeddings is not None:
            maps = maps.expand(-1, resolved.text_embeddings.shape[0], -1, -1).contiguous()
        return maps


# --------------------------------------------------------------------------- the methods


class RawAttention(_PatchMapAttribution):
    """One layer's attention from the pooled row (the class token), averaged over heads.

    The map does not depend on the text: it is repeated for every text given.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        layer: the layer whose pattern is read (default: the last; negative counts from the
            end).

    Examples::

        >>> from captum_clipspan.attr.baselines import RawAttention
        >>> maps = RawAttention(clip).attribute(images)   # [B, 1, g, g]
        >>> viz.visualize_image_attr(maps[0].permute(1, 2, 0).numpy(), image_np,
        ...                          "blended_heat_map", use_pyplot=False)
    """

    def __init__(self, clip: HookedCLIP, layer: int = -1) -> None:
        super().__init__(clip)
        self.layer = resolve_layer(layer, clip.visual.n_layers)

    def _maps(self, inputs: Tensor, resolved: ResolvedTexts) -> Tensor:
        vit = self.clip.visual
        (pattern,) = _attention_patterns(vit, inputs, [f"blocks.{self.layer}.attn.hook_pattern"])
        return patch_grid(pooled_row(pattern.mean(dim=1), vit.pool_rows)[:, None], vit)


class AttentionRollout(_PatchMapAttribution):
    """Attention rollout with the residual identity (Abnar & Zuidema, 2020), read at the pooled
    row; see :func:`rollout`.

    The map does not depend on the text: it is repeated for every text given.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        start_layer: the first layer of the product (default 0; negative counts from the end).

    Examples::

        >>> from captum_clipspan.attr.baselines import AttentionRollout
        >>> maps = AttentionRollout(clip).attribute(images, interpolate=True)
        >>> maps.shape   # [B, 1, 224, 224]
    """

    def __init__(self, clip: HookedCLIP, start_layer: int = 0) -> None:
        super().__init__(clip)
        self.start_layer = resolve_layer(start_layer, clip.visual.n_layers, "start_layer")

    def _maps(self, inputs: Tensor, resolved: ResolvedTexts) -> Tensor:
        vit = self.clip.visual
        patterns = _attention_patterns(vit, inputs, _pattern_names(vit, self.start_layer))
        return patch_grid(pooled_row(rollout(patterns), vit.pool_rows)[:, None], vit)


class _TokenGrid(nn.Module):
    """Identity on tokens ``[B, N, D]`` whose ``grid`` submodule sees the patch tokens as a
    feature map ``[B, D, g, g]``: the layout Captum's layer methods expect of a conv layer."""

    def __init__(self, n_prefix: int, grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.n_prefix, self.grid_size = n_prefix, tuple(grid_size)
        self.grid = nn.Identity()

    def forward(self, tokens: Tensor, hook: Any = None) -> Tensor:
        prefix, patches = tokens[:, :self.n_prefix], tokens[:, self.n_prefix:]
        fmap = self.grid(patches.transpose(1, 2).reshape(*patches.shape[::2], *self.grid_size))
        return torch.cat([prefix, fmap.flatten(2).transpose(1, 2)], dim=1)


class GradCAM(_PatchMapAttribution, GradientAttribution):
    """Grad-CAM of the image-text cosine (Captum's :class:`~captum.attr.LayerGradCam`) over the
    patch tokens of a hook point, seen as a ``[B, D, g, g]`` feature map.

    Per text: the cosine's gradient with respect to the tokens, averaged over the patches, weighs
    each channel; the map is the weighted sum over channels, clipped at 0.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        hook_name: the hook point whose output is read (default: the last block's input,
            ``blocks.{L-1}.hook_resid_pre``).

    Examples::

        >>> from captum_clipspan.attr.baselines import GradCAM
        >>> cam = GradCAM(clip)
        >>> maps = cam.attribute(images, texts=["a dog", "a cat"])          # [B, 2, g, g]
        >>> own = cam.attribute(images, texts=["a dog", "a cat"], target=[0, 1])  # [B, 1, g, g]
    """

    needs_texts = True

    def __init__(self, clip: HookedCLIP, hook_name: str | None = None) -> None:
        super().__init__(clip)
        GradientAttribution.__init__(self, clip)
        vit = clip.visual
        self.hook_name = hook_name or f"blocks.{vit.n_layers - 1}.hook_resid_pre"
        if self.hook_name not in vit.hook_dict:
            raise ValueError(f"unknown hook point {self.hook_name!r}; e.g. 'blocks.{{l}}."
                             f"hook_resid_pre' or 'blocks.{{l}}.ln1.hook_normalized'.")
        self._adapter = _TokenGrid(vit.n_prefix_tokens, vit.grid_size)
        self._grad_cam = LayerGradCam(clip, self._adapter.grid)

    def _maps(self, inputs: Tensor, resolved: ResolvedTexts) -> Tensor:
        hooks = [(self.hook_name, self._adapter)]
        with torch.enable_grad(), self.clip.visual.hooks(fwd_hooks=hooks):
            return torch.cat([self._grad_cam.attribute(
                inputs, target=columns.tolist(),
                additional_forward_args=(resolved.text_embeddings,), relu_attributions=True)
                for columns in _score_columns(resolved, inputs.shape[0])], dim=1)


class CheferRelevance(_PatchMapAttribution, GradientAttribution):
    """Chefer et al.'s (2021) gradient-weighted attention relevancy of the image-text cosine,
    read at the pooled row; see :func:`relevancy`.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        start_layer: the first layer whose attention enters (default 0; negative counts from the
            end).

    Examples::

        >>> from captum_clipspan.attr.baselines import CheferRelevance
        >>> chefer = CheferRelevance(clip)
        >>> maps = chefer.attribute(images, texts=zero_shot_classifier, target=labels)
        >>> smooth = NoiseTunnel(chefer).attribute(images, nt_samples=8, texts=["a dog"])
    """

    needs_texts = True

    def __init__(self, clip: HookedCLIP, start_layer: int = 0) -> None:
        super().__init__(clip)
        GradientAttribution.__init__(self, clip)
        self.start_layer = resolve_layer(start_layer, clip.visual.n_layers, "start_layer")

    def _maps(self, inputs: Tensor, resolved: ResolvedTexts) -> Tensor:
        vit = self.clip.visual
        names = _pattern_names(vit, self.start_layer)
        saved: dict[str, Tensor] = {}

        def keep(pattern: Tensor, hook: Any) -> None:
            saved[hook.name] = pattern

        images = inputs.detach().requires_grad_()  # a graph even if the weights are frozen
        maps = []
        with torch.enable_grad(), vit.hooks(fwd_hooks=[(name, keep) for name in names]):
            cosines = self.clip(images, resolved.text_embeddings)
            patterns = [saved[name] for name in names]
            detached = [pattern.detach() for pattern in patterns]
            columns = _score_columns(resolved, inputs.shape[0])
            for index, column in enumerate(columns):
                score = cosines.gather(1, column[:, None]).sum()
                grads = torch.autograd.grad(score, patterns, retain_graph=index + 1 < len(columns))
                maps.append(pooled_row(relevancy(detached, grads), vit.pool_rows))
        return patch_grid(torch.stack(maps, dim=1), vit)


# --------------------------------------------------------------------------- the paper's map


class ContrastivePatchContribution(PatchContribution):
    """Each text's patch map minus the mean over all the texts' maps: the paper's segmentation
    map (Sec. 5.1), where the image is the chosen class rather than any class.

    The patch map is linear in the text, so ``map(t_c) - mean_k map(t_k) = map(t_c - mean_k
    t_k)``: the texts are centered, then read as :class:`PatchContribution` reads them. Takes the
    same arguments as :class:`PatchContribution`; ``texts=`` is required.

    Examples::

        >>> from captum_clipspan.attr.baselines import ContrastivePatchContribution
        >>> zs = cs.ZeroShotClassifier(clip, imagenet_classnames)
        >>> maps = ContrastivePatchContribution(clip).attribute(images, texts=zs, target=labels)
    """

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  interpolate: bool = False, interpolate_mode: str = "bilinear", *,
                  return_convergence_delta: Literal[True]) -> tuple[Tensor, Tensor]: ...

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  interpolate: bool = False, interpolate_mode: str = "bilinear",
                  return_convergence_delta: Literal[False] = False) -> Tensor: ...

    @log_usage()
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  interpolate: bool = False, interpolate_mode: str = "bilinear",
                  return_convergence_delta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Class-contrastive patch maps.

        Args:
            inputs: ``[B, 3, H, W]`` preprocessed images.
            texts: string(s), text embeddings ``[T, E]`` or a
                :class:`~captum_clipspan.ZeroShotClassifier`: the classes to contrast.
            target: ``None`` (every text) or one index per example into the texts.
            interpolate: upsample the ``g x g`` grid to the input's ``H x W``.
            interpolate_mode: ``torch.nn.functional.interpolate`` mode.
            return_convergence_delta: also return the completeness error of the decomposition
                against the centered texts (``[B, T]``, or ``[B]`` with a target).

        Returns:
            ``[B, T, g, g]``, ``[B, 1, g, g]`` with a target (``H x W`` when interpolated); and
            the delta when asked.
        """
        embeddings = resolve_texts(self.clip, texts)
        if embeddings is None:
            raise ValueError("ContrastivePatchContribution contrasts texts with their mean: pass "
                             "texts= (strings, text embeddings [T, E] or a ZeroShotClassifier).")
        centered = embeddings - embeddings.mean(dim=0, keepdim=True)
        return PatchContribution.attribute.__wrapped__(
            self, inputs, centered, target, interpolate, interpolate_mode,
            return_convergence_delta)
