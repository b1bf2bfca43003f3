"""The segmentation benchmark: every heat-map method scored on a dataset with Chefer et al.'s
protocol (:func:`~captum_clipspan.segmentation.scores`), and its table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..hooked.clip import HookedCLIP
from .methods import (
    FITTED_HEATMAP_METHODS,
    HEATMAP_METHODS,
    heatmaps,
    text_matrix,
    zero_shot_columns,
)
from .metrics import pool_scores, score_terms, threshold_free_terms

__all__ = ["benchmark", "benchmark_terms", "markdown_table", "summarize_terms"]


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

    Examples::

        >>> data = ImagenetSegmentation("gtsegs_ijcv.mat", **for_model(clip))
        >>> print(markdown_table(benchmark(clip, data, cs.ZeroShotClassifier(clip, names))))
    """
    terms = benchmark_terms(clip, data, texts, methods, batch_size, options, show_progress,
                            threshold_free=False)
    return [{"method": method, **pool_scores(per_image)} for method, per_image in terms.items()]


def benchmark_terms(clip: HookedCLIP, data: Dataset | DataLoader, texts: Any,
                    methods: Sequence[str] = tuple(HEATMAP_METHODS), batch_size: int = 16,
                    options: dict[str, dict[str, Any]] | None = None,
                    show_progress: bool = False,
                    threshold_free: bool = True) -> dict[str, dict[str, Tensor]]:
    """Per-image scores of every method, for pooling (:func:`pool_scores`,
    :func:`summarize_terms`) or paired comparisons (the same images for every method).

    Args:
        clip, data, texts, methods, batch_size, options, show_progress: as for
            :func:`benchmark`.
        threshold_free: add :func:`threshold_free_terms` (``"auroc"``, ``"top_iou"``).

    Returns:
        ``{method: {term: [N] or [N, 2]}}``: :func:`score_terms`' per-image terms (and the
        threshold-free ones), images in data order.
    """
    unknown = [m for m in methods if m not in {**HEATMAP_METHODS, **FITTED_HEATMAP_METHODS}]
    if unknown or not methods:
        raise ValueError(f"unknown heat-map methods {unknown}; choose from "
                         f"{[*HEATMAP_METHODS, *FITTED_HEATMAP_METHODS]}.")
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    matrix = text_matrix(clip, texts)
    terms: dict[str, list[dict[str, Tensor]]] = {method: [] for method in methods}
    if show_progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="segmentation", unit="batch")
    for images, masks in loader:
        images = images.to(device=clip.device, dtype=clip.dtype)
        columns = zero_shot_columns(clip, images, matrix, None)
        for method in methods:
            extra = (options or {}).get(method, {})
            maps = heatmaps(clip, images, matrix, columns, method, **extra).cpu()
            scored = score_terms(maps, masks.bool())
            if threshold_free:
                scored.update(threshold_free_terms(maps, masks.bool()))
            terms[method].append(scored)
    return {method: {key: torch.cat([t[key] for t in parts]) for key in parts[0]}
            for method, parts in terms.items()}


def summarize_terms(terms: dict[str, Tensor]) -> dict[str, float]:
    """One method's per-image terms pooled: the protocol's scores (:func:`pool_scores`) plus the
    mean of each threshold-free term present (``"auroc"``, ``"top_iou"``)."""
    extra = {key: float(terms[key].double().mean()) for key in ("auroc", "top_iou")
             if key in terms}
    return {**pool_scores(terms), **extra}


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`benchmark` as a markdown table, in percent as the paper reports them."""
    lines = ["| method | pixel acc. | mIoU | mAP |", "|---|---|---|---|"]
    lines += [f"| {row['method']} | {100 * row['pixel_accuracy']:.2f} | {100 * row['miou']:.2f} "
              f"| {100 * row['mean_ap']:.2f} |" for row in rows]
    return "\n".join(lines)
