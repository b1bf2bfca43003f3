"""Scores of heat maps against foreground masks: Chefer et al.'s (2021) ImageNet-segmentation
protocol, which the paper follows, and the IoU of a map's top pixels.

:func:`scores` is the protocol at batch size 1: per image the map is upsampled bilinearly to the
mask, clipped at 0, min-max normalized and thresholded at its mean; pixel accuracy and IoU are
summed over images before dividing, AP is averaged over images. :func:`score_terms` and
:func:`pool_scores` split it so that a benchmark can score batch by batch.

The protocol's threshold at the mean rewards a map's shape as much as its ranking of pixels, and
its AP scores the background too (it saturates when objects are small). :func:`threshold_free_terms`
gives per-image measures that depend only on the ranking: the foreground AUROC and the IoU of the
top pixels (as many as the mask has, :func:`map_iou`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["auroc", "average_precision", "map_iou", "normalize_maps", "pool_scores",
           "score_terms", "scores", "threshold_free_terms"]


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


def score_terms(heatmaps: Tensor, masks: Tensor) -> dict[str, Tensor]:
    """Per-image sums of the protocol, to be pooled by :func:`pool_scores`.

    Args:
        heatmaps: ``[N, g, g]`` or ``[N, H, W]`` maps.
        masks: ``[N, H, W]`` bool.

    Returns:
        ``{"correct", "labeled"}`` pixels ``[N]``, ``{"inter", "union"}`` per class
        (background, foreground) ``[N, 2]`` and ``"ap"`` ``[N]``.
    """
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


def pool_scores(terms: dict[str, Tensor]) -> dict[str, float]:
    """The protocol's scores from the per-image terms of :func:`score_terms` (see
    :func:`scores`)."""
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
    return pool_scores(score_terms(heatmaps, masks))


def auroc(predictions: Tensor, labels: Tensor) -> Tensor:
    """Area under the ROC curve of scores against binary labels (ties count one half).

    The Mann-Whitney statistic: the probability that a random positive outscores a random
    negative.

    Args:
        predictions: ``[M]`` scores.
        labels: ``[M]`` bool (or 0/1) labels.

    Returns:
        A float64 scalar tensor; 0.5 when either class is empty.
    """
    truth = labels.bool().flatten()
    positives, total = int(truth.sum()), truth.numel()
    if positives in (0, total):
        return torch.tensor(0.5, dtype=torch.float64)
    values = predictions.flatten().double()
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    # midranks: each distinct value gets the mean of the ranks it spans
    ends = counts.cumsum(0).double()
    midranks = (ends - (counts.double() - 1) / 2)[inverse]
    rank_sum = midranks[truth].sum()
    negatives = total - positives
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def threshold_free_terms(heatmaps: Tensor, masks: Tensor) -> dict[str, Tensor]:
    """Per-image measures that depend only on how a map ranks pixels, after the protocol's
    upsampling (:func:`normalize_maps`).

    Args:
        heatmaps: ``[N, g, g]`` or ``[N, H, W]`` maps.
        masks: ``[N, H, W]`` bool.

    Returns:
        ``{"auroc": [N], "top_iou": [N]}``: the foreground AUROC (:func:`auroc`) and the IoU
        of the map's top pixels, as many as the mask has, with the mask (:func:`map_iou`).
    """
    if masks.dim() != 3 or heatmaps.dim() != 3 or heatmaps.shape[0] != masks.shape[0]:
        raise ValueError(f"heatmaps must be [N, g, g] or [N, H, W] and masks [N, H, W] with the "
                         f"same N, got {list(heatmaps.shape)} and {list(masks.shape)}.")
    # no clipping at 0 here: a ranking measure should see the whole map
    maps = F.interpolate(heatmaps.detach().double()[:, None], size=tuple(masks.shape[1:]),
                         mode="bilinear", align_corners=False)[:, 0]
    truth = masks.bool().to(maps.device)
    return {"auroc": torch.stack([auroc(m, t) for m, t in zip(maps, truth, strict=True)]),
            "top_iou": map_iou(maps, truth).double()}
