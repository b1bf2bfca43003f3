"""Zero-shot segmentation from patch maps, and how well a map covers a ground-truth mask."""

from __future__ import annotations

import torch
from torch import Tensor

from .attr.base import TargetType
from .attr.patches import PatchContribution
from .hooked.clip import HookedCLIP


def segment(clip: HookedCLIP, images: Tensor, target: TargetType,
            layers: list[int] | None = None) -> Tensor:
    """Label every pixel with the text whose upsampled patch map is largest there.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: ``[B, 3, H, W]`` preprocessed images.
        target: ``T >= 2`` texts (strings or embeddings ``[T, E]``), e.g. ``["a dog",
            "background"]``.
        layers: layers whose heads contribute (``None``: all).

    Returns:
        ``[B, H, W]`` long tensor of text indices.
    """
    maps = PatchContribution(clip, layers=layers).attribute(images, target=target,
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
