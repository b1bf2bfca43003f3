"""Patch-map overlays drawn with Captum's ``visualize_image_attr``: maps for several texts
(Figure 7 of the paper), a head's best and worst texts (Figure 6) and the contrast of two texts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .common import (
    ArrayLike,
    _as_float,
    _check_count,
    _image_hwc,
    _image_panel,
    _panel_grid,
    _texts,
    _wrap,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure


_METHODS = ("heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling")
_SIGNS = ("all", "positive", "negative", "absolute_value")
_SCALES = ("shared", "map")
_BEST_COLOR = "tab:green"
_WORST_COLOR = "tab:red"


@dataclass(frozen=True)
class _MapStyle:
    """How patch maps are drawn; the arguments of ``visualize_image_attr``."""

    method: str = "blended_heat_map"
    sign: str = "all"
    alpha_overlay: float = 0.5
    cmap: Any = None
    outlier_perc: float = 2
    fade: bool = True

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if self.sign not in _SIGNS:
            raise ValueError(f"sign must be one of {_SIGNS}, got {self.sign!r}")
        if not 0.0 <= self.alpha_overlay <= 1.0:
            raise ValueError(f"alpha_overlay must be in [0, 1], got {self.alpha_overlay!r}")
        if self.sign == "all" and self.method in ("masked_image", "alpha_scaling"):
            raise ValueError(f"method={self.method!r} cannot show both signs; pass sign="
                             f"'positive', 'negative' or 'absolute_value' with it")


def _maps_hw(maps: Any, size: tuple[int, int], name: str) -> np.ndarray:
    """``[T, h, w]`` / ``[T, 1, h, w]`` / ``[h, w]`` maps -> ``[T, H, W]``, bilinear upsampling."""
    array = _as_float(maps, name, (2, 3, 4), "[T, h, w] or [T, 1, h, w] patch maps")
    if array.ndim == 4:
        if array.shape[1] != 1:
            raise ValueError(f"{name} must be [T, h, w] or [T, 1, h, w] patch maps, got shape "
                             f"{tuple(array.shape)} (for a batch [B, T, h, w], pass maps[b])")
        array = array[:, 0]
    elif array.ndim == 2:
        array = array[None]
    if array.shape[0] == 0 or 0 in array.shape[1:]:
        raise ValueError(f"{name} is empty: shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf values")
    if array.shape[1:] != size:
        resized = F.interpolate(torch.from_numpy(array)[:, None], size=size, mode="bilinear",
                                align_corners=False)
        array = resized[:, 0].numpy()
    return array


def _signed(attr: np.ndarray, sign: str) -> np.ndarray:
    """The values of ``attr`` that ``sign`` shows, as Captum reads them."""
    return {"all": attr, "positive": np.maximum(attr, 0.0), "negative": np.minimum(attr, 0.0),
            "absolute_value": attr}[sign]


def _shared_limit(attrs: np.ndarray, sign: str, outlier_perc: float) -> float:
    """Captum's scale (the value below which ``100 - outlier_perc`` percent of the summed
    ``|values|`` lie), over every map at once."""
    values = np.sort(np.abs(_signed(attrs, sign)).ravel())
    sums = np.cumsum(values)
    if sums[-1] == 0:
        return 0.0
    return float(values[np.nonzero(sums >= sums[-1] * 0.01 * (100.0 - outlier_perc))[0][0]])


def _on_shared_scale(attr: np.ndarray, sign: str, limit: float) -> np.ndarray:
    """``attr`` in Captum's colour range, scaled by ``limit`` (common to all maps)."""
    shown = {"all": attr, "positive": np.maximum(attr, 0.0), "negative": -np.minimum(attr, 0.0),
             "absolute_value": np.abs(attr)}[sign]
    return np.clip(shown / limit, -1.0, 1.0)


def _draw_patch_map(ax: Axes, image: np.ndarray, attr: np.ndarray, style: _MapStyle,
                    title: str | None, limit: float | None = None) -> Any:
    """One overlay through Captum's ``visualize_image_attr``; a map with nothing of the chosen
    sign (which Captum cannot normalize) shows the gray image and says so. With ``limit``, the
    heat map's colours are redrawn on that scale, shared by the figure's maps (Captum scales
    each map on its own). Returns the heat map's ``AxesImage`` (``None`` when none was drawn)."""
    from captum.attr import visualization as viz

    heat = None
    shown = _signed(attr, style.sign)
    if not np.any(shown):
        _image_panel(ax, image if style.method == "original_image" else image.mean(axis=2),
                     cmap="gray", vmin=0.0, vmax=1.0)
        note = "(map is zero)" if not np.any(attr) else f"(no {style.sign} values)"
        title = f"{title}\n{note}" if title else note
    else:
        # Captum's scale is relative (a percentile of |attr|); rescaling keeps the picture and
        # avoids its "values close to 0" warning for the small per-patch direct effects.
        viz.visualize_image_attr(attr[..., None] / np.abs(attr).max(), image, style.method,
                                 style.sign, plt_fig_axis=(ax.get_figure(), ax),
                                 outlier_perc=style.outlier_perc, cmap=style.cmap,
                                 alpha_overlay=style.alpha_overlay, use_pyplot=False)
        if style.method in ("heat_map", "blended_heat_map"):
            heat = ax.images[-1]
            if limit:
                heat.set_data(_on_shared_scale(attr, style.sign, limit))
        if style.fade and style.method == "blended_heat_map":
            # Opacity grows with |value|: the image shows through where the map is near zero
            # instead of under a uniform wash of the colormap's middle (white).
            values = np.abs(np.asarray(heat.get_array(), dtype=np.float64))
            scale = max(abs(v) for v in heat.get_clim()) or 1.0
            heat.set_alpha(style.alpha_overlay * np.clip(values / scale, 0.0, 1.0))
    if title:
        ax.set_title(title, fontsize=9)
    return heat


_SIGN_TICKS = {  # the colorbar's sign legend: Captum's scaled range and what its ends mean
    "all": ([-1.0, 0.0, 1.0], ["− lowers", "0", "+ raises"]),
    "positive": ([0.0, 1.0], ["0", "+ raises"]),
    "negative": ([0.0, 1.0], ["0", "− lowers"]),
    "absolute_value": ([0.0, 1.0], ["0", "|largest|"]),
}
PATCH_MAP_LABEL = "patch effect on the image-text similarity (scaled per map)"
SHARED_SCALE_NOTE = "one scale for all maps, ends at ±{limit:.3g}"


def _patch_map_colorbar(fig: Figure | SubFigure, axes: np.ndarray, heats: list[Any],
                        sign: str, label: str) -> Any:
    """One colorbar for every panel (the maps drawn in Captum's range), with a sign legend;
    ``None`` when no panel drew a heat map."""
    heats = [heat for heat in heats if heat is not None]
    if not heats:
        return None
    colorbar = fig.colorbar(heats[0], ax=list(axes), shrink=0.85, label=_wrap(label, 45))
    colorbar.solids.set_alpha(1.0)
    ticks, labels = _SIGN_TICKS[sign]
    colorbar.set_ticks(ticks, labels=labels)
    colorbar.ax.tick_params(labelsize=8)
    colorbar.ax.yaxis.label.set_fontsize(8)
    return colorbar


def plot_patch_maps(image: Any, maps: ArrayLike, titles: Sequence[str] | None = None,
                    method: str = "blended_heat_map", sign: str = "all", ncols: int = 4,
                    alpha_overlay: float = 0.5, cmap: Any = None, outlier_perc: float = 2,
                    fig: Figure | SubFigure | None = None, title: str | None = None,
                    colorbar: bool = True, fade: bool = True, scale: str = "shared",
                    colorbar_label: str | None = None) -> tuple[Figure | SubFigure, np.ndarray]:
    """Patch maps over one image, one panel per map (Figure 7 of the paper).

    Each map is upsampled bilinearly to the image size when its grid differs and drawn with
    :func:`captum.attr.visualization.visualize_image_attr`. By default the heat maps share one
    colour scale (Captum's ``100 - outlier_perc`` percentile, taken over all maps), so a weaker
    map looks weaker; ``scale="map"`` scales each map on its own, as Captum does. A map with no
    values of the chosen ``sign`` shows the gray image with a note instead of failing.

    Maps of several texts on one image look alike when drawn raw (most of each is common to
    every text): pass the contrast, ``PatchContribution(...).attribute(..., contrast="mean")``,
    and say so with ``colorbar_label``.

    Args:
        image: ``[3, H, W]`` tensor or ``[H, W, 3]`` array (or a PIL image); any range, see
            :func:`plot_top_images`.
        maps: ``[T, h, w]`` or ``[T, 1, h, w]`` (or one ``[h, w]``) maps of any grid size, e.g.
            ``PatchContribution(clip).attribute(images, texts=texts)[b]``.
        titles: ``T`` panel titles (e.g. the texts). Default: none.
        method: ``visualize_image_attr`` method: ``"blended_heat_map"``, ``"heat_map"``,
            ``"original_image"``, ``"masked_image"`` or ``"alpha_scaling"`` (the last two need a
            single ``sign``). Default: ``"blended_heat_map"``.
        sign: ``"all"``, ``"positive"``, ``"negative"`` or ``"absolute_value"``.
            Default: ``"all"``.
        ncols: Panels per row. Default: 4.
        alpha_overlay: Opacity of the heat map over the image (its largest, with ``fade``).
            Default: 0.5.
        cmap: Colormap; default: Captum's for the sign (red-white-green for ``"all"``).
        outlier_perc: Percent of the largest values clipped when scaling. Default: 2.
        fig: An empty figure or subfigure to draw into. Default: a new figure.
        title: Figure title, e.g. what the image holds (``"scene: a red circle, top left"``).
            Default: none.
        colorbar: Add one colorbar for all panels, with the sign legend (``+`` raises the
            image-text similarity, ``−`` lowers it). Default: ``True``.
        fade: With ``"blended_heat_map"``, make the map's opacity grow with its magnitude, so
            the image stays visible where the map is near zero. Default: ``True``.
        scale: ``"shared"`` (one colour scale for all heat maps, stated on the colorbar) or
            ``"map"`` (each map on its own). ``"masked_image"`` and ``"alpha_scaling"`` have no
            colour scale and always scale per map. Default: ``"shared"``.
        colorbar_label: What the maps show, on the colorbar (the scale is appended).
            Default: the patch effect on the image-text similarity.

    Returns:
        ``(fig, axes)``: ``axes`` is a ``[T]`` numpy array of Axes, one per map (the colorbar,
        when drawn, is one more axes of ``fig``).

    Examples::

        >>> from captum_clipspan.visualization import plot_patch_maps
        >>> texts = ["a dog", "grass", "the sky"]
        >>> maps = cs.PatchContribution(clip).attribute(images, texts=texts)   # [B, T, g, g]
        >>> fig, axes = plot_patch_maps(images[0], maps[0], titles=texts)
        >>> fig.savefig("patch_maps.png")
    """
    style = _MapStyle(method, sign, alpha_overlay, cmap, outlier_perc, fade)
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}")
    picture = _image_hwc(image, "image")
    attrs = _maps_hw(maps, picture.shape[:2], "maps")
    if titles is not None:
        titles = _texts(titles, "titles")
        _check_count(titles, attrs.shape[0], "titles", "map")
    limit = _shared_limit(attrs, sign, outlier_perc) if scale == "shared" else None
    fig, axes = _panel_grid(attrs.shape[0], ncols, (3.0, 3.2), fig)
    heats = [_draw_patch_map(ax, picture, attr, style,
                             None if titles is None else _wrap(titles[index], 30, max_lines=2),
                             limit)
             for index, (ax, attr) in enumerate(zip(axes, attrs, strict=True))]
    if colorbar:
        what = colorbar_label or PATCH_MAP_LABEL.split(" (")[0]
        note = SHARED_SCALE_NOTE.format(limit=limit) if limit else "scaled per map"
        _patch_map_colorbar(fig, axes, heats, sign, f"{what} ({note})")
    if title:
        fig.suptitle(_wrap(title, 90, max_lines=2))
    return fig, axes


def plot_best_worst(image: Any, best_maps: ArrayLike, worst_maps: ArrayLike,
                    best_texts: str | Sequence[str], worst_texts: str | Sequence[str],
                    title: str | None = None, show_image: bool = True,
                    method: str = "blended_heat_map", sign: str = "all",
                    alpha_overlay: float = 0.5, cmap: Any = None, outlier_perc: float = 2,
                    fig: Figure | SubFigure | None = None) -> tuple[Figure | SubFigure, np.ndarray]:
    """One head's patch maps for its most and least similar texts (Figure 6 of the paper).

    One row: the image, then the maps of the texts with the highest similarity (green titles and
    borders), then those with the lowest (red).

    Args:
        image: ``[3, H, W]`` tensor or ``[H, W, 3]`` array (or a PIL image).
        best_maps: ``[Tb, h, w]`` or ``[Tb, 1, h, w]`` (or one ``[h, w]``) maps of the head for
            the most similar texts; any grid size (upsampled bilinearly to the image).
        worst_maps: ``[Tw, h, w]`` or ``[Tw, 1, h, w]`` (or one ``[h, w]``), the least similar.
        best_texts: ``Tb`` texts (or one string), titles of the best maps.
        worst_texts: ``Tw`` texts (or one string), titles of the worst maps.
        title: Figure title, e.g. ``"L11.H8"``. Default: none.
        show_image: Start the row with the plain image. Default: ``True``.
        method, sign, alpha_overlay, cmap, outlier_perc: As in :func:`plot_patch_maps`.
        fig: An empty figure or subfigure to draw into. Default: a new figure.

    Returns:
        ``(fig, axes)``: a ``[show_image + Tb + Tw]`` numpy array of Axes: the image (when
        shown), the best maps, then the worst maps.

    Examples::

        >>> from captum_clipspan.visualization import plot_best_worst
        >>> head = cs.PatchContribution(clip, heads=[(11, 8)])
        >>> maps = head.attribute(images[:1], texts=bank_embeddings)[0]   # [T, g, g]
        >>> order = maps.sum(dim=(-2, -1)).argsort()   # the head's similarity to each text
        >>> best, worst = order[-2:].flip(0), order[:2]
        >>> fig, axes = plot_best_worst(images[0], maps[best], maps[worst],
        ...                             [bank[i] for i in best], [bank[i] for i in worst],
        ...                             title="L11.H8")
        >>> fig.savefig("best_worst.png")
    """
    style = _MapStyle(method, sign, alpha_overlay, cmap, outlier_perc)
    picture = _image_hwc(image, "image")
    groups = []
    for kind, maps, texts, color in (("best", best_maps, best_texts, _BEST_COLOR),
                                     ("worst", worst_maps, worst_texts, _WORST_COLOR)):
        attrs = _maps_hw(maps, picture.shape[:2], f"{kind}_maps")
        labels = _texts(texts, f"{kind}_texts")
        _check_count(labels, attrs.shape[0], f"{kind}_texts", f"{kind} map")
        groups.extend((attr, label, color) for attr, label in zip(attrs, labels, strict=True))
    fig, axes = _panel_grid(len(groups) + bool(show_image), len(groups) + 1, (3.0, 3.3), fig)
    panels = iter(axes)
    if show_image:
        _image_panel(next(panels), picture, "image")
    for ax, (attr, label, color) in zip(panels, groups, strict=True):
        _draw_patch_map(ax, picture, attr, style, _wrap(label, 30, max_lines=2))
        ax.title.set_color(color)
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor(color)
            spine.set_linewidth(3)
    if title:
        fig.suptitle(title)
    return fig, axes


def plot_contrastive_map(image: Any, contrast: ArrayLike, text_a: str, text_b: str,
                         title: str | None = None, method: str = "blended_heat_map",
                         alpha_overlay: float = 0.5, cmap: Any = None, outlier_perc: float = 2,
                         fig: Figure | SubFigure | None = None
                         ) -> tuple[Figure | SubFigure, np.ndarray]:
    """Where an image is text A rather than text B: the map of A minus the map of B.

    Positive patches (green with Captum's default colormap) push the image towards ``text_a``,
    negative ones (red) towards ``text_b``.

    Args:
        image: ``[3, H, W]`` tensor or ``[H, W, 3]`` array (or a PIL image).
        contrast: ``[g, g]`` (or ``[1, g, g]``) map, e.g.
            ``segmentation.contrastive_map(clip, images, text_a, text_b)[b]``.
        text_a, text_b: the two texts (the panel title).
        title: Figure title. Default: none.
        method, alpha_overlay, cmap, outlier_perc: As in :func:`plot_patch_maps`.
        fig: An empty figure or subfigure to draw into. Default: a new figure.

    Returns:
        ``(fig, axes)``: a ``[2]`` array of Axes: the image and the contrastive map.

    Examples::

        >>> from captum_clipspan.segmentation import contrastive_map
        >>> contrast = contrastive_map(clip, images, "a dog", "a cat")   # [B, g, g]
        >>> fig, axes = plot_contrastive_map(images[0], contrast[0], "a dog", "a cat")
    """
    style = _MapStyle(method, "all", alpha_overlay, cmap, outlier_perc)
    picture = _image_hwc(image, "image")
    attr = _maps_hw(contrast, picture.shape[:2], "contrast")
    if attr.shape[0] != 1:
        raise ValueError(f"contrast must be one [g, g] map, got {attr.shape[0]} maps")
    fig, axes = _panel_grid(2, 2, (3.0, 3.3), fig)
    _image_panel(axes[0], picture, "image")
    label = f"{_wrap(text_a, 30, 1)}\nminus {_wrap(text_b, 30, 1)}"
    _draw_patch_map(axes[1], picture, attr[0], style, label)
    if title:
        fig.suptitle(title)
    return fig, axes
