"""Zero-shot segmentation: heat-map methods, the ImageNet-segmentation protocol and its scores.

Heat maps (:func:`heatmaps`) give one ``[g, g]`` map per image for one text per image. The
decomposition's map is the paper's (Sec. 5.1): the chosen class's patch map minus the mean of all
classes' patch maps, over every layer and head. The baselines read the hooked tower's hook points
only: raw attention of the last layer, attention rollout (Abnar & Zuidema, 2020), Grad-CAM on the
last block (Captum's :class:`~captum.attr.LayerGradCam`) and Chefer et al.'s gradient-weighted
attention relevancy (2021).

:func:`scores` is the protocol of Chefer et al. (2021) that the paper follows, at batch size 1:
per image the map is upsampled bilinearly to the mask, clipped at 0, min-max normalized and
thresholded at its mean; pixel accuracy and IoU are summed over images before dividing, AP is
averaged over images.

Data: :class:`ImagenetSegmentation` reads ``gtsegs_ijcv.mat`` (needs ``h5py``: the
``segmentation`` extra), :class:`MaskFolder` an image folder with mask PNGs and
:class:`SceneSegmentation` held-out synthetic scenes; :func:`benchmark` scores methods on any of
them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .attr.base import TextsType
from .attr.patches import PatchContribution
from .hooked.clip import HookedCLIP
from .sources import IMAGE_SUFFIXES
from .validation import resolve_target, resolve_texts

__all__ = [
    "HEATMAP_METHODS",
    "ImagenetSegmentation",
    "MaskFolder",
    "SceneSegmentation",
    "average_precision",
    "benchmark",
    "contrastive_map",
    "for_model",
    "heatmaps",
    "map_iou",
    "markdown_table",
    "normalize_maps",
    "scores",
    "segment",
    "topic_segmentation",
]


def segment(clip: HookedCLIP, images: Tensor, texts: TextsType,
            layers: list[int] | None = None) -> Tensor:
    """Label every pixel with the text whose upsampled patch map is largest there.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: ``[B, 3, H, W]`` preprocessed images.
        texts: ``T >= 2`` texts (strings, embeddings ``[T, E]`` or a ZeroShotClassifier), e.g.
            ``["a dog", "background"]``.
        layers: layers whose heads contribute (``None``: all).

    Returns:
        ``[B, H, W]`` long tensor of text indices.
    """
    maps = PatchContribution(clip, layers=layers).attribute(images, texts=texts,
                                                            interpolate=True)
    if maps.shape[1] < 2:
        raise ValueError("segmentation needs at least two texts to choose between.")
    return maps.argmax(dim=1)


def map_iou(maps: Tensor, masks: Tensor, fraction: float | None = None) -> Tensor:
    """IoU of each map's top pixels with a boolean mask, per image: ``[B, H, W]`` -> ``[B]``.

    The top ``fraction`` of pixels (default: the mask's own area) is taken as the map's region,
    so the score does not depend on the map's scale.
    """
    if maps.shape != masks.shape or maps.dim() != 3:
        raise ValueError(f"maps and masks must both be [B, H, W], got {list(maps.shape)} and "
                         f"{list(masks.shape)}.")
    flat, truth = maps.flatten(1).float(), masks.flatten(1).bool()
    counts = truth.sum(1) if fraction is None else torch.full(
        (flat.shape[0],), round(fraction * flat.shape[1]))
    order = flat.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order))
    region = ranks < counts.clamp(min=1)[:, None]
    intersection = (region & truth).sum(1).float()
    union = (region | truth).sum(1).float()
    return intersection / union.clamp(min=1)


# --------------------------------------------------------------------------- the protocol


def normalize_maps(heatmaps: Tensor, size: tuple[int, int]) -> Tensor:
    """Each map upsampled bilinearly to ``size``, clipped at 0 and min-max normalized per map.

    Args:
        heatmaps: ``[N, h, w]`` maps (any grid).
        size: ``(H, W)`` of the masks.

    Returns:
        ``[N, H, W]`` float64 in ``[0, 1]``; a constant map becomes all zeros (all background).
    """
    maps = F.interpolate(heatmaps.detach().double()[:, None], size=tuple(size), mode="bilinear",
                         align_corners=False)[:, 0].clamp(min=0)
    low = maps.amin(dim=(1, 2), keepdim=True)
    spread = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(spread > 0, (maps - low) / spread.clamp(min=1e-300), 0.0)


def average_precision(predictions: Tensor, labels: Tensor) -> Tensor:
    """Average precision of scores against binary labels (scikit-learn's definition).

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds, highest first, with
    tied scores entering together.

    Args:
        predictions: ``[M]`` scores.
        labels: ``[M]`` bool (or 0/1) labels.

    Returns:
        A scalar tensor; 0 when there is no positive label.
    """
    order = predictions.argsort(descending=True)
    sorted_scores, hits = predictions[order], labels[order].double()
    true_pos = hits.cumsum(0)
    # The last position of each run of tied scores: where a threshold is evaluated.
    last = torch.ones_like(sorted_scores, dtype=torch.bool)
    last[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    true_pos = true_pos[last]
    ranks = torch.arange(1, len(order) + 1, dtype=torch.float64, device=order.device)[last]
    if true_pos[-1] == 0:
        return true_pos.new_zeros(())
    recall = true_pos / true_pos[-1]
    precision = true_pos / ranks
    step = torch.diff(recall, prepend=recall.new_zeros(1))
    return (step * precision).sum()


def _score_terms(heatmaps: Tensor, masks: Tensor) -> dict[str, Tensor]:
    """Per-image sums of the protocol: correct and labeled pixels ``[N]``, intersection and union
    per class (background, foreground) ``[N, 2]`` and AP ``[N]``."""
    if not isinstance(heatmaps, Tensor) or not isinstance(masks, Tensor):
        raise TypeError("heatmaps and masks must be torch tensors ([N, g, g] or [N, H, W], and "
                        "[N, H, W] bool).")
    if masks.dim() != 3 or heatmaps.dim() != 3 or heatmaps.shape[0] != masks.shape[0]:
        raise ValueError(f"heatmaps must be [N, g, g] or [N, H, W] and masks [N, H, W] with the "
                         f"same N, got {list(heatmaps.shape)} and {list(masks.shape)}.")
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be a bool tensor (True = foreground), got {masks.dtype}.")
    if not torch.isfinite(heatmaps).all():
        raise ValueError("heatmaps contain NaN or infinite values.")
    maps = normalize_maps(heatmaps, tuple(masks.shape[1:]))
    truth = masks.to(maps.device)
    predicted = maps > maps.mean(dim=(1, 2), keepdim=True)
    correct = (predicted == truth).sum(dim=(1, 2))
    labeled = torch.full_like(correct, truth[0].numel())
    classes = (~truth, truth)
    guesses = (~predicted, predicted)
    inter = torch.stack([(g & t).sum(dim=(1, 2)) for g, t in zip(guesses, classes, strict=True)],
                        dim=1)
    union = torch.stack([(g | t).sum(dim=(1, 2)) for g, t in zip(guesses, classes, strict=True)],
                        dim=1)
    # AP over both channels at once, as Chefer et al.: background scored 1 - map, foreground map.
    ap = torch.stack([average_precision(torch.cat([1 - m.flatten(), m.flatten()]),
                                        torch.cat([~t.flatten(), t.flatten()]))
                      for m, t in zip(maps, truth, strict=True)])
    return {"correct": correct, "labeled": labeled, "inter": inter, "union": union, "ap": ap}


def _finalize(terms: dict[str, Tensor]) -> dict[str, float]:
    iou = terms["inter"].sum(0).double() / terms["union"].sum(0).double().clamp(min=1)
    return {
        "pixel_accuracy": float(terms["correct"].sum().double()
                                / terms["labeled"].sum().double().clamp(min=1)),
        "miou": float(iou.mean()),
        "mean_ap": float(terms["ap"].mean()),
        "n": int(terms["ap"].numel()),
    }


def scores(heatmaps: Tensor, masks: Tensor) -> dict[str, float]:
    """Pixel accuracy, mIoU and mAP of heat maps against foreground masks (Chefer et al.'s
    ImageNet-segmentation protocol, batch size 1).

    Per image: upsample the map bilinearly to the mask size, clip at 0, min-max normalize, call a
    pixel foreground where the map exceeds its mean. Pixel accuracy (correct / labeled pixels)
    and the IoU of each class (intersection / union) are summed over images before dividing;
    ``miou`` averages the background and foreground IoU. AP scores both classes at once
    (background by ``1 - map``, foreground by the map) and is averaged over images.

    Args:
        heatmaps: ``[N, g, g]`` (patch grid) or ``[N, H, W]`` maps, larger = more foreground.
        masks: ``[N, H, W]`` bool, ``True`` on the object.

    Returns:
        ``{"pixel_accuracy", "miou", "mean_ap"}`` in ``[0, 1]`` and ``"n"`` (images).

    Examples::

        >>> maps = heatmaps(clip, images, classifier, method="decomposition")   # [N, g, g]
        >>> scores(maps, masks)
        {'pixel_accuracy': 0.75, 'miou': 0.54, 'mean_ap': 0.81, 'n': 4276}
    """
    return _finalize(_score_terms(heatmaps, masks))


# --------------------------------------------------------------------------- heat-map methods


def _n_prefix(clip: HookedCLIP) -> int:
    return getattr(clip.visual, "n_prefix_tokens", 1)


def _patch_grid(clip: HookedCLIP, per_token: Tensor) -> Tensor:
    """``[B, N]`` values over all tokens -> ``[B, g, g]`` over the patches (prefix dropped)."""
    return per_token[:, _n_prefix(clip):].reshape(per_token.shape[0], *clip.visual.grid_size)


def _pooled_row(clip: HookedCLIP, matrix: Tensor) -> Tensor:
    """The row(s) the tower pools of a token-by-token matrix ``[B, N, N]`` (averaged) ->
    ``[B, N]``: the class token's row, or the mean of the patch rows for average pooling."""
    return matrix[:, clip.visual.pool_rows].mean(dim=1)


def _pattern_names(clip: HookedCLIP, start_layer: int = 0) -> list[str]:
    return [f"blocks.{layer}.attn.hook_pattern"
            for layer in range(start_layer % clip.visual.n_layers, clip.visual.n_layers)]


def _attention_patterns(clip: HookedCLIP, images: Tensor, start_layer: int = 0) -> list[Tensor]:
    """``[B, H, N, N]`` attention patterns of layers ``start_layer..L-1``, without gradients."""
    names = _pattern_names(clip, start_layer)
    clip.visual.check_images(images)
    with torch.no_grad():
        _, cache = clip.visual.run_with_cache(images, names_filter=names)
    return [cache[name] for name in names]


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


def _decomposition_map(clip: HookedCLIP, images: Tensor, texts: Tensor, columns: Tensor,
                       **options: Any) -> Tensor:
    # The patch map is linear in the text: map(t_c) - mean_k map(t_k) = map(t_c - mean_k t_k).
    centered = texts - texts.mean(dim=0, keepdim=True)
    maps = PatchContribution(clip, **options).attribute(images, texts=centered, target=columns)
    return maps[:, 0]


def _raw_attention_map(clip: HookedCLIP, images: Tensor, texts: Tensor, columns: Tensor
                       ) -> Tensor:
    (last,) = _attention_patterns(clip, images, start_layer=-1)
    return _patch_grid(clip, _pooled_row(clip, last.mean(dim=1)))


def _rollout_map(clip: HookedCLIP, images: Tensor, texts: Tensor, columns: Tensor,
                 start_layer: int = 0) -> Tensor:
    return _patch_grid(clip, _pooled_row(clip, rollout(
        _attention_patterns(clip, images, start_layer))))


def _chefer_map(clip: HookedCLIP, images: Tensor, texts: Tensor, columns: Tensor,
                start_layer: int = 0) -> Tensor:
    names = _pattern_names(clip, start_layer)
    saved: dict[str, Tensor] = {}
    images = images.detach().requires_grad_()  # a graph even if the weights are frozen

    def keep(pattern: Tensor, hook: Any) -> None:
        saved[hook.name] = pattern

    with torch.enable_grad(), clip.visual.hooks(fwd_hooks=[(name, keep) for name in names]):
        score = _own_scores(clip, images, texts, columns).sum()
        patterns = [saved[name] for name in names]
        grads = torch.autograd.grad(score, patterns)
    return _patch_grid(clip, _pooled_row(clip, relevancy([p.detach() for p in patterns], grads)))


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


def _gradcam_map(clip: HookedCLIP, images: Tensor, texts: Tensor, columns: Tensor,
                 hook_name: str | None = None) -> Tensor:
    from captum.attr import LayerGradCam

    name = hook_name or f"blocks.{clip.visual.n_layers - 1}.hook_resid_pre"
    if name not in clip.visual.hook_dict:
        raise ValueError(f"unknown hook point {name!r}; e.g. 'blocks.{{l}}.hook_resid_pre' or "
                         f"'blocks.{{l}}.ln1.hook_normalized'.")
    adapter = _TokenGrid(_n_prefix(clip), clip.visual.grid_size)
    with torch.enable_grad(), clip.visual.hooks(fwd_hooks=[(name, adapter)]):
        cam = LayerGradCam(clip, adapter.grid).attribute(
            images, target=columns.tolist(), additional_forward_args=(texts,),
            relu_attributions=True)
    return cam[:, 0].detach()


def _own_scores(clip: HookedCLIP, images: Tensor, texts: Tensor, columns: Tensor) -> Tensor:
    """``[B]`` each image's cosine with its own text (the gradient methods' output)."""
    cosines = clip(images, texts)
    return cosines.gather(1, columns.to(cosines.device)[:, None])[:, 0]


HEATMAP_METHODS: dict[str, Callable[..., Tensor]] = {
    "decomposition": _decomposition_map,
    "raw_attention": _raw_attention_map,
    "rollout": _rollout_map,
    "gradcam": _gradcam_map,
    "chefer": _chefer_map,
}
"""Heat-map method name -> ``fn(clip, images, texts [C, E], columns [B], **options)``."""


def _text_matrix(clip: HookedCLIP, texts: Any) -> Tensor:
    """Strings, embeddings ``[C, E]`` or a ZeroShotClassifier -> ``[C, E]``."""
    if texts is None:
        raise TypeError("texts must be strings, text embeddings [C, E] or a ZeroShotClassifier, "
                        "got None.")
    return resolve_texts(clip, texts).to(device=clip.device)


def _columns(clip: HookedCLIP, images: Tensor, texts: Tensor, target: Any) -> Tensor:
    """Each image's text index ``[B]``: given, or the zero-shot prediction (``None``)."""
    n_images, n_texts = images.shape[0], texts.shape[0]
    if target is None:
        with torch.no_grad():
            return clip(images, texts).argmax(dim=1)
    return resolve_target(target, n_images, n_texts).to(images.device)


def heatmaps(clip: HookedCLIP, images: Tensor, texts: Any, target: Any = None,
             method: str = "decomposition", **options: Any) -> Tensor:
    """One heat map per image for one text per image, by the decomposition or a baseline.

    Methods (all through the hooked tower's hook points):

    * ``"decomposition"``: the paper's map: the chosen text's patch map (direct effects of every
      layer and head, :class:`~captum_clipspan.PatchContribution`) minus the mean over all
      texts' maps. ``options``: ``layers``, ``heads``, ``convention``.
    * ``"raw_attention"``: the last layer's attention from the pooled row (the class token),
      averaged over heads.
    * ``"rollout"``: attention rollout with the residual identity; ``start_layer`` (default 0).
    * ``"gradcam"``: Grad-CAM of the cosine with the text through
      :class:`captum.attr.LayerGradCam` on the last block's input ``blocks.{L-1}.hook_resid_pre``
      (patch tokens as a ``[B, D, g, g]`` feature map); ``hook_name`` picks another hook point.
    * ``"chefer"``: Chefer et al.'s relevancy, ``R += mean_h (grad * A)^+ R`` over the layers
      from ``start_layer`` (default 0), read at the pooled row.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: ``[B, 3, H, W]`` preprocessed images.
        texts: the class texts: strings, text embeddings ``[C, E]`` or a
            :class:`~captum_clipspan.ZeroShotClassifier`.
        target: which text each image is mapped for: ``None`` (the zero-shot prediction among
            ``texts``, as the paper), an int, or ``B`` ints.
        method: a key of :data:`HEATMAP_METHODS`.
        **options: method options (above).

    Returns:
        ``[B, g, g]`` maps on the patch grid (larger = more relevant).

    Examples::

        >>> zs = cs.ZeroShotClassifier(clip, imagenet_classnames)
        >>> maps = heatmaps(clip, images, zs, method="decomposition")   # [B, 14, 14]
        >>> scores(maps, masks)
    """
    if method not in HEATMAP_METHODS:
        raise ValueError(f"unknown heat-map method {method!r}; choose from "
                         f"{list(HEATMAP_METHODS)}.")
    clip.visual.check_images(images)
    matrix = _text_matrix(clip, texts)
    columns = _columns(clip, images, matrix, target)
    maps = HEATMAP_METHODS[method](clip, images, matrix.to(clip.dtype), columns, **options)
    return maps.detach().float()


def topic_segmentation(clip: HookedCLIP, images: Tensor, texts: Any, layer: int,
                       head: int) -> Tensor:
    """Label each patch by the text that wins there within one head (the paper's Figure 8).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: ``[B, 3, H, W]`` preprocessed images.
        texts: ``T >= 2`` strings or text embeddings ``[T, E]`` (e.g. topics of the head).
        layer, head: the head.

    Returns:
        ``[B, g, g]`` long tensor of text indices.
    """
    maps = PatchContribution(clip, heads=[(layer, head)]).attribute(images, texts=texts)
    if maps.shape[1] < 2:
        raise ValueError("topic segmentation needs at least two texts to choose between.")
    return maps.argmax(dim=1)


def contrastive_map(clip: HookedCLIP, images: Tensor, text_a: str | Tensor,
                    text_b: str | Tensor, layers: Sequence[int] | None = None,
                    heads: Sequence[int] | Sequence[tuple[int, int]] | None = None) -> Tensor:
    """Patch map of text A minus that of text B: where the image is A rather than B.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: ``[B, 3, H, W]`` preprocessed images.
        text_a, text_b: strings or text embeddings ``[E]``.
        layers, heads: as in :class:`~captum_clipspan.PatchContribution`.

    Returns:
        ``[B, g, g]``: per patch, its direct effect on ``<image, a> - <image, b>``.
    """
    pair = torch.cat([_text_matrix(clip, text) for text in (text_a, text_b)])
    maps = PatchContribution(clip, layers=layers, heads=heads).attribute(images, texts=pair)
    return maps[:, 0] - maps[:, 1]


# --------------------------------------------------------------------------- data


class _SegmentationData(Dataset):
    """Pairs ``(image [3, S, S], mask [S, S] bool)``, both resized to the model's input size.

    As Chefer et al.: the image is resized (squashed) bilinearly to ``size``, then ``transform``
    (e.g. ``clip.preprocess``, whose resize and crop are then no-ops) is applied; the mask is
    resized with nearest-neighbour interpolation. Subclasses implement ``__len__`` and
    ``raw(index) -> (PIL RGB image, bool array [H, W])``.
    """

    def __init__(self, transform: Callable | None = None,
                 size: int | tuple[int, int] | None = None) -> None:
        self.transform = transform
        self.size = (size, size) if isinstance(size, int) else size

    def raw(self, index: int) -> tuple[Any, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image, mask = self.raw(index % len(self))
        mask = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
        if self.size is not None:
            width_height = (self.size[1], self.size[0])
            image = image.resize(width_height, Image.BILINEAR)
            mask = mask.resize(width_height, Image.NEAREST)
        pixels = (self.transform(image) if self.transform is not None else
                  torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255)
        return pixels, torch.from_numpy(np.array(mask) > 127)


def for_model(clip: HookedCLIP) -> dict[str, Any]:
    """``transform`` and ``size`` arguments of the segmentation datasets for ``clip``."""
    if clip.preprocess is None:
        raise ValueError("this HookedCLIP has no preprocess transform; pass transform= yourself.")
    return {"transform": clip.preprocess, "size": tuple(clip.visual.image_size)}


class ImagenetSegmentation(_SegmentationData):
    """The ImageNet-segmentation set (Guillaumin et al., 2014) as ``gtsegs_ijcv.mat``.

    The file is MATLAB v7.3 (HDF5): ``value/img`` and ``value/gt`` are ``[N, 1]`` object
    references; image ``i`` is the ``[3, W, H]`` uint8 array that ``value/img[i, 0]`` points to,
    its mask the ``[W, H]`` array referenced by element ``[0, 0]`` of the cell ``value/gt[i, 0]``
    points to (the reading of Chefer et al.'s ``Imagenet_Segmentation``). Needs ``h5py``
    (``pip install "captum_clipspan[segmentation]"``).

    Args:
        path: the ``.mat`` file.
        transform: applied to the resized PIL image (e.g. ``clip.preprocess``).
        size: ``(H, W)`` that images and masks are resized to (``None``: as stored).

    Examples::

        >>> data = ImagenetSegmentation("gtsegs_ijcv.mat", **for_model(clip))
        >>> image, mask = data[0]       # [3, 224, 224], [224, 224] bool
    """

    def __init__(self, path: str | Path, transform: Callable | None = None,
                 size: int | tuple[int, int] | None = None) -> None:
        super().__init__(transform, size)
        try:
            import h5py
        except ImportError as error:
            raise ImportError("reading gtsegs_ijcv.mat needs h5py: pip install "
                              "'captum_clipspan[segmentation]' (or pip install h5py).") from error
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ImageNet-segmentation file at {str(path)!r}.")
        self._h5py, self._file = h5py, None
        with h5py.File(self.path, "r") as handle:
            if "value/img" not in handle or "value/gt" not in handle:
                raise ValueError(f"{self.path} is not gtsegs_ijcv.mat: it has no value/img and "
                                 f"value/gt datasets.")
            self._length = len(handle["value/img"])

    def __len__(self) -> int:
        return self._length

    def raw(self, index: int) -> tuple[Any, np.ndarray]:
        from PIL import Image

        if self._file is None:  # opened lazily, once per worker process
            self._file = self._h5py.File(self.path, "r")
        handle = self._file
        image = np.array(handle[handle["value/img"][index, 0]]).transpose(2, 1, 0)
        cell = handle[handle["value/gt"][index, 0]]
        mask = np.array(handle[cell[0, 0]]).transpose(1, 0)
        return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB"), mask > 0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__, _file=None, _h5py=None)
        return state

    def __setstate__(self, state: dict) -> None:
        import h5py

        self.__dict__.update(state, _h5py=h5py)


class MaskFolder(_SegmentationData):
    """Images with foreground masks: ``root/images/<name>.<ext>`` and ``root/masks/<name>.png``.

    A mask pixel is foreground where it is non-zero (any channel).

    Args:
        root: the folder holding ``images/`` and ``masks/``.
        transform, size: as in :class:`ImagenetSegmentation`.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None,
                 size: int | tuple[int, int] | None = None) -> None:
        super().__init__(transform, size)
        self.root = Path(root)
        images, masks = self.root / "images", self.root / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise ValueError(f"{self.root} must hold an images/ and a masks/ folder (masks/<name>"
                             f".png for every images/<name>.<ext>).")
        self.files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {images}.")
        missing = [p.name for p in self.files if not (masks / f"{p.stem}.png").is_file()]
        if missing:
            raise ValueError(f"{len(missing)} images have no mask in {masks} (expected "
                             f"<name>.png), e.g. {missing[:3]}.")

    def __len__(self) -> int:
        return len(self.files)

    def raw(self, index: int) -> tuple[Any, np.ndarray]:
        from PIL import Image

        path = self.files[index]
        with Image.open(path) as image, Image.open(self.root / "masks" / f"{path.stem}.png") as m:
            mask = np.asarray(m)
            return image.convert("RGB"), (mask.reshape(*mask.shape[:2], -1) > 0).any(axis=-1)


class SceneSegmentation(_SegmentationData):
    """Synthetic scenes (:mod:`captum_clipspan.toy.scenes`) with their object masks.

    Args:
        n: number of scenes.
        seed: random seed (the toy model was trained on other seeds; 2024 is held out).
        transform, size: as in :class:`ImagenetSegmentation`.
    """

    def __init__(self, n: int, seed: int = 2024, transform: Callable | None = None,
                 size: int | tuple[int, int] | None = None) -> None:
        from .toy.scenes import make_scenes

        super().__init__(transform, size)
        self.scenes = make_scenes(n, seed=seed)

    def __len__(self) -> int:
        return len(self.scenes)

    def raw(self, index: int) -> tuple[Any, np.ndarray]:
        from PIL import Image

        return Image.fromarray(self.scenes.images[index]), self.scenes.masks[index]

    @staticmethod
    def class_prompts() -> dict[str, list[str]]:
        """``{"red circle": ["a red circle", "a photo of a red circle", ...]}``: the scenes'
        object classes (color and shape), for a :class:`~captum_clipspan.ZeroShotClassifier`
        built with ``ZeroShotClassifier.from_prompts``."""
        from .toy.scenes import ATTRIBUTES, PREFIXES, caption

        return {f"{color} {shape}": [caption({"color": color, "shape": shape},
                                             families=["color", "shape"], prefix=prefix)
                                     for prefix in PREFIXES[:3]]
                for shape in ATTRIBUTES["shape"] for color in ATTRIBUTES["color"]}


def benchmark(clip: HookedCLIP, data: Dataset | DataLoader, texts: Any,
              methods: Sequence[str] = tuple(HEATMAP_METHODS), batch_size: int = 16,
              options: dict[str, dict[str, Any]] | None = None,
              show_progress: bool = False) -> list[dict[str, Any]]:
    """Score heat-map methods on a segmentation dataset with :func:`scores`' protocol.

    Each image's map is for the zero-shot prediction among ``texts`` (as the paper).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        data: pairs ``(image [3, H, W], mask [H', W'] bool)``, e.g. :class:`ImagenetSegmentation`,
            or a DataLoader of such batches.
        texts: the class texts (strings, ``[C, E]`` or a ZeroShotClassifier).
        methods: keys of :data:`HEATMAP_METHODS`.
        batch_size: images per pass (the scores are per image whatever it is).
        options: per-method options, e.g. ``{"rollout": {"start_layer": 1}}``.
        show_progress: show a progress bar.

    Returns:
        One row per method: ``{"method", "pixel_accuracy", "miou", "mean_ap", "n"}``.
    """
    unknown = [m for m in methods if m not in HEATMAP_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown heat-map methods {unknown}; choose from "
                         f"{list(HEATMAP_METHODS)}.")
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    matrix = _text_matrix(clip, texts)
    terms: dict[str, list[dict[str, Tensor]]] = {method: [] for method in methods}
    if show_progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="segmentation", unit="batch")
    for images, masks in loader:
        images = images.to(device=clip.device, dtype=clip.dtype)
        columns = _columns(clip, images, matrix, None)
        for method in methods:
            extra = (options or {}).get(method, {})
            maps = heatmaps(clip, images, matrix, columns, method, **extra)
            terms[method].append(_score_terms(maps.cpu(), masks.bool()))
    return [{"method": method, **_finalize({key: torch.cat([t[key] for t in parts])
                                            for key in parts[0]})}
            for method, parts in terms.items()]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`benchmark` as a markdown table, in percent as the paper reports them."""
    lines = ["| method | pixel acc. | mIoU | mAP |", "|---|---|---|---|"]
    lines += [f"| {row['method']} | {100 * row['pixel_accuracy']:.2f} | {100 * row['miou']:.2f} "
              f"| {100 * row['mean_ap']:.2f} |" for row in rows]
    return "\n".join(lines)
