"""Figures for CLIP's decomposed image representation (matplotlib).

Head × layer grids of direct effects, TextSpan tables, the accumulated mean-ablation curve
(Figure 2 of Gandelsman, Efros & Steinhardt, ICLR 2024) and its table as bars (Table 1), grids of
top images (Figures 1 and 5) and patch-map overlays (Figures 6 and 7), the latter drawn with
Captum's :func:`captum.attr.visualization.visualize_image_attr`.

Every function builds its figure as a :class:`matplotlib.figure.Figure` (never through pyplot's
global state, never ``plt.show()``) and returns ``(fig, axes)``: save it with
``fig.savefig(path)``, or leave ``fig`` as a notebook cell's last expression to display it (the
figures render themselves as PNG, with or without ``%matplotlib inline``). Inputs may be torch
tensors (any device or dtype) or numpy arrays.
"""

from __future__ import annotations

import io
import math
import numbers
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import SubFigure

__all__ = [
    "model_view",
    "plot_ablation_bars",
    "plot_ablation_curve",
    "plot_best_worst",
    "plot_head_grid",
    "plot_patch_maps",
    "plot_textspan",
    "plot_top_images",
]

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]

_METHODS = ("heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling")
_SIGNS = ("all", "positive", "negative", "absolute_value")
_BEST_COLOR = "tab:green"
_WORST_COLOR = "tab:red"


# --------------------------------------------------------------------------- shared helpers


class _DisplayFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that IPython displays as a PNG image.

    A figure built without pyplot never loads the inline backend, so IPython has no formatter for
    it and shows only ``<Figure size ...>``; ``_repr_png_`` is the hook IPython falls back on.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """Tensor (detached, on CPU, floats as float32), pandas object or array-like -> numpy;
    integer dtypes are kept."""
    if hasattr(value, "to_numpy") and hasattr(value, "index"):  # a pandas Series or DataFrame
        value = value.to_numpy()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    if isinstance(value, (str, bytes)) or not isinstance(
        value, (np.ndarray, Sequence, numbers.Number)
    ):
        raise TypeError(f"{name} must be a torch.Tensor, a numpy array or a sequence of numbers, "
                        f"got {type(value).__name__}")
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got an array of dtype {array.dtype}")
    return array


def _as_float(value: Any, name: str, ndims: tuple[int, ...], expected: str) -> np.ndarray:
    """:func:`_to_numpy` as float64 with a check on the number of dimensions."""
    array = _to_numpy(value, name).astype(np.float64)
    if array.ndim not in ndims:
        raise ValueError(f"{name} must be {expected}, got shape {tuple(array.shape)}")
    return array


def _image_hwc(image: Any, name: str) -> np.ndarray:
    """One image as a float ``[H, W, 3]`` array in [0, 1].

    Accepts ``[3, H, W]`` / ``[1, H, W]`` (channels first), ``[H, W, 3]`` / ``[H, W, 4]`` /
    ``[H, W, 1]`` / ``[H, W]`` and PIL images. Integer images are divided by 255; float images
    outside [0, 1] (e.g. CLIP-normalized) are min-max scaled for display. When both layouts fit,
    tensors are read channels first and arrays channels last.
    """
    if hasattr(image, "getbands"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    array = _to_numpy(image, name)
    if array.ndim == 2:
        array = array[..., None]
    first = array.ndim == 3 and array.shape[0] in (1, 3)
    last = array.ndim == 3 and array.shape[-1] in (1, 3, 4)
    if not (first or last):
        raise ValueError(f"{name} must be an image [3, H, W] or [H, W, 3] (or [H, W], or a PIL "
                         f"image), got shape {tuple(array.shape)}")
    if first and (not last or isinstance(image, torch.Tensor)):
        array = np.moveaxis(array, 0, -1)
    array = array[..., :3]
    if array.dtype.kind in "biu":
        array = array.astype(np.float64) / (1.0 if array.dtype.kind == "b" else 255.0)
    else:
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or inf values")
        low, high = array.min(), array.max()
        if low < 0.0 or high > 1.0:
            array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else np.clip(array, 0.0, 1.0)


def _wrap(text: Any, width: int, max_lines: int | None = None) -> str:
    """Wrap a label to ``width`` characters, cut to ``max_lines`` lines with an ellipsis."""
    return textwrap.fill(str(text), width=width, max_lines=max_lines, placeholder=" …")


def _single_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The given axes and its figure, or a new constrained-layout figure with one axes."""
    if ax is None:
        fig = _DisplayFigure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    if not hasattr(ax, "get_figure") or not hasattr(ax, "plot"):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    return ax.get_figure(), ax


def _panel_grid(n: int, ncols: int, panel_size: tuple[float, float],
                fig: Figure | SubFigure | None = None) -> tuple[Figure | SubFigure, np.ndarray]:
    """A grid of ``n`` panels, ``ncols`` wide; returns the figure and a flat ``[n]`` axes array.

    Cells past ``n`` in the last row are removed, so ``fig.axes`` holds exactly the panels.
    """
    if not isinstance(ncols, numbers.Integral) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = min(int(ncols), n)
    nrows = math.ceil(n / ncols)
    if fig is None:
        fig = _DisplayFigure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             layout="constrained")
    elif not hasattr(fig, "subplots"):
        raise TypeError(f"fig must be a matplotlib Figure or SubFigure, got {type(fig).__name__}")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for extra in axes[n:]:
        extra.remove()
    return fig, axes[:n]


def _check_count(items: Sequence[Any] | None, n: int, name: str, what: str) -> None:
    if items is not None and len(items) != n:
        raise ValueError(f"{name} must have one entry per {what} ({n}), got {len(items)}")


def _texts(texts: str | Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a string or a sequence of strings, "
                        f"got {type(texts).__name__}")
    return [str(text) for text in texts]


def model_view(preprocess: Any, image: Any) -> torch.Tensor:
    """The pixels a model sees of a PIL image, in [0, 1]: its preprocess (resize, center crop,
    ...) with the normalization undone, so that heat maps are drawn over exactly the view they
    were computed on.

    Works for any ``preprocess`` whose last step is a per-channel affine normalization (open_clip's
    transforms, Hugging Face image processors, the toy's): the normalization is read off the
    preprocessed all-black and all-white images of the same size.

    Args:
        preprocess: the model's transform, PIL image -> ``[3, H, W]`` (``clip.preprocess``).
        image: a PIL image.

    Returns:
        ``[3, H, W]`` float tensor in [0, 1] (CPU).

    Examples::

        >>> from captum_clipspan.visualization import model_view, plot_patch_maps
        >>> maps = cs.PatchContribution(clip).attribute(clip.preprocess_images([photo]),
        ...                                             texts=["a dog"])
        >>> fig, axes = plot_patch_maps(model_view(clip.preprocess, photo), maps[0])
    """
    from PIL import Image

    if not hasattr(image, "getbands"):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    image = image.convert("RGB")
    seen, black, white = (preprocess(picture).detach().cpu().double() for picture in (
        image, Image.new("RGB", image.size, (0, 0, 0)), Image.new("RGB", image.size,
                                                                  (255, 255, 255))))
    offset = black.mean(dim=(-2, -1), keepdim=True)  # (0 - mean) / std, per channel
    scale = white.mean(dim=(-2, -1), keepdim=True) - offset  # 1 / std
    return ((seen - offset) / scale).clamp(0.0, 1.0).float()


# --------------------------------------------------------------------------- head grid


def plot_head_grid(scores: ArrayLike, layers: Sequence[int] | None = None,
                   title: str | None = None, cmap: str = "RdBu_r", center: float | None = 0.0,
                   annotate: bool = False, ax: Axes | None = None, fmt: str = ".2f",
                   colorbar_label: str | None = None, vmin: float | None = None,
                   vmax: float | None = None, chance: float | None = None) -> tuple[Figure, Axes]:
    """A layer × head heatmap of one score per attention head.

    Args:
        scores: ``[L, H]`` scores, e.g. each head's mean direct effect on a text
            (``HeadContribution(clip).attribute(images, texts=text)`` is ``[B, L, H, 1]``: pass
            ``.mean(0)[..., 0]``) or each head's zero-shot accuracy. NaN cells are left blank.
        layers: ``[L]`` layer indices labelling the rows (e.g. ``[8, 9, 10, 11]`` when
            ``scores`` covers the last four layers). Default: ``0 .. L-1``.
        title: Axes title. Default: none.
        cmap: Matplotlib colormap name. Default: ``"RdBu_r"``.
        center: When the finite scores lie on both sides of it, the color range is made
            symmetric around this value (so it maps to the colormap's middle); ``None`` uses the
            data range. Default: ``0.0``.
        annotate: Print each cell's value in it. Default: ``False``.
        ax: Axes to draw into. Default: a new figure.
        fmt: Format spec of the printed values. Default: ``".2f"``.
        colorbar_label: Label of the colorbar. Default: none.
        vmin, vmax: Fixed ends of the color range (e.g. ``0`` and ``1`` for accuracies, so that
            several grids share one scale); each overrides the range chosen from the data.
            Default: none.
        chance: A score marked on the colorbar with a black line and a "chance" tick (e.g.
            ``1 / n_classes`` for zero-shot accuracies). Default: none.

    Returns:
        ``(fig, ax)``: the figure and the heatmap's axes (the colorbar is a second axes of the
        figure); ``ax.images[0].get_array()`` holds ``scores``.

    Examples::

        >>> import torch
        >>> from captum_clipspan.visualization import plot_head_grid
        >>> effects = torch.randn(12, 12)            # [L, H]
        >>> fig, ax = plot_head_grid(effects, title="direct effect on 'a dog'", annotate=True)
        >>> fig.savefig("heads.png")
    """
    grid = _as_float(scores, "scores", (2,), "a [L, H] matrix (layers × heads)")
    n_layers, n_heads = grid.shape
    if grid.size == 0:
        raise ValueError(f"scores must be a non-empty [L, H] matrix, got shape {grid.shape}")
    finite = grid[np.isfinite(grid)]
    if finite.size == 0:
        raise ValueError("scores has no finite value to draw")
    if layers is None:
        layer_labels = list(range(n_layers))
    elif isinstance(layers, (torch.Tensor, np.ndarray)):
        layer_labels = _to_numpy(layers, "layers").ravel().tolist()
    else:
        layer_labels = list(layers)
    _check_count(layer_labels, n_layers, "layers", "row of scores")

    low, high = float(finite.min()), float(finite.max())
    if center is not None and low < center < high:
        half = max(high - center, center - low)
        low, high = center - half, center + half
    low = low if vmin is None else float(vmin)
    high = high if vmax is None else float(vmax)
    fig, ax = _single_axes(ax, (max(4.0, 0.45 * n_heads + 2.0), max(3.0, 0.35 * n_layers + 1.2)))
    image = ax.imshow(grid, cmap=cmap, vmin=low, vmax=high, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(np.arange(n_heads), labels=[str(h) for h in range(n_heads)])
    ax.set_yticks(np.arange(n_layers), labels=[str(layer) for layer in layer_labels])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    if title:
        ax.set_title(title)
    colorbar = fig.colorbar(image, ax=ax, label=colorbar_label)
    if chance is not None:
        _mark_chance_on_colorbar(colorbar, float(chance), fmt)
    if annotate:
        fontsize = 8 if n_heads <= 12 else 6
        for (row, col), value in np.ndenumerate(grid):
            if not np.isfinite(value):
                continue
            red, green, blue, _ = image.cmap(image.norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(col, row, format(value, fmt), ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black")
    return fig, ax


def _mark_chance_on_colorbar(colorbar: Any, chance: float, fmt: str) -> None:
    """A black line across the colorbar at ``chance`` and a tick saying so."""
    low, high = colorbar.mappable.get_clim()
    if not low <= chance <= high:
        raise ValueError(f"chance ({chance}) lies outside the color range [{low}, {high}]")
    colorbar.ax.axhline(chance, color="black", linewidth=2)
    spacing = 0.08 * (high - low)
    ticks = [t for t in colorbar.get_ticks() if low <= t <= high and abs(t - chance) > spacing]
    colorbar.set_ticks([*ticks, chance],
                       labels=[format(t, fmt) for t in ticks] + [f"chance {chance:{fmt}}"])


# --------------------------------------------------------------------------- TextSpan


def _textspan_rows(result: Any, name: str, max_texts: int) -> tuple[list[str], np.ndarray]:
    """The first ``max_texts`` texts of a TextSpan result and their cumulative variance."""
    if not (hasattr(result, "texts") and hasattr(result, "variance_explained")):
        raise TypeError(f"{name} must have .texts and .variance_explained (a TextSpanResult), "
                        f"got {type(result).__name__}")
    texts = _texts(result.texts, f"{name}.texts")
    cumulative = _as_float(result.variance_explained, f"{name}.variance_explained", (1,),
                           "a 1-D [m] tensor")
    _check_count(texts, cumulative.shape[0], f"{name}.texts", "variance_explained step")
    if not texts:
        raise ValueError(f"{name} has no texts to show")
    return texts[:max_texts], cumulative[:max_texts]


def _draw_textspan(ax: Axes, texts: list[str], cumulative: np.ndarray, title: str | None) -> None:
    """One TextSpan table: texts top-down, bars of cumulative variance, the step's gain darker."""
    rows = np.arange(len(texts))
    gain = np.diff(cumulative, prepend=0.0)
    ax.barh(rows, cumulative - gain, height=0.7, color="#c6dbef")
    ax.barh(rows, gain, left=cumulative - gain, height=0.7, color="#2171b5")
    for row, value in zip(rows, cumulative, strict=True):
        ax.text(max(value, 0.0) + 0.01, row, f"{value:.0%}", va="center", fontsize=8)
    ax.set_yticks(rows, labels=[_wrap(text, 38, max_lines=2) for text in texts], fontsize=9)
    ax.set_ylim(len(texts) - 0.5, -0.5)  # first chosen text on top
    ax.set_xlim(0.0, max(1.0, float(np.nanmax(cumulative))) * 1.15)
    ax.set_xlabel("variance explained (dark: this text's gain)")
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title)


def plot_textspan(results: Any, max_texts: int = 10, title: str | None = None, ncols: int = 2,
                  fig: Figure | SubFigure | None = None) -> tuple[Figure | SubFigure, Any]:
    """TextSpan tables: each head's chosen texts with the variance they explain.

    Each panel lists the texts top-down in the order TextSpan chose them; each row's bar is the
    cumulative fraction of the head's variance explained after that text, its darker end the
    text's own gain.

    Args:
        results: One TextSpan result, or a mapping ``{(layer, head): result}`` (one panel per
            head, in key order, titled ``"L{layer}.H{head}"``). A result is anything with
            ``texts`` (``list[str]``, in the order chosen) and ``variance_explained`` (``[m]``,
            cumulative, in [0, 1]), like
            :class:`~captum_clipspan.attr.textspan_core.TextSpanResult`.
        max_texts: Show at most this many texts per head. Default: 10.
        title: Axes title (one result) or figure title (a mapping). Default: none.
        ncols: Panels per row for a mapping. Default: 2.
        fig: An empty figure or subfigure to draw into. Default: a new figure.

    Returns:
        ``(fig, axes)``: ``axes`` is one Axes for one result, or a ``[n]`` numpy array of Axes, in
        the mapping's key order.

    Examples::

        >>> from captum_clipspan.attr.textspan_core import textspan
        >>> from captum_clipspan.visualization import plot_textspan
        >>> heads = cs.decompose(clip, images, granularity="head").heads   # [K, L, H, E]
        >>> spans = {(11, h): textspan(heads[:, 11, h], bank_embeddings, bank, m=5)
        ...          for h in range(4)}
        >>> fig, axes = plot_textspan(spans, max_texts=5)
        >>> fig.savefig("textspan.png")
    """
    if not isinstance(max_texts, numbers.Integral) or max_texts < 1:
        raise ValueError(f"max_texts must be a positive integer, got {max_texts!r}")
    single = hasattr(results, "texts")
    if single:
        panels = {None: results}
    elif isinstance(results, Mapping) or hasattr(results, "items"):
        panels = dict(results.items())
        if not panels:
            raise ValueError("results is an empty mapping; expected {(layer, head): result}")
    else:
        raise TypeError(f"results must be a TextSpan result (with .texts and "
                        f".variance_explained) or a mapping {{(layer, head): result}}, "
                        f"got {type(results).__name__}")
    rows = {key: _textspan_rows(result, "results" if single else f"results[{key!r}]", max_texts)
            for key, result in panels.items()}
    tallest = max(len(texts) for texts, _ in rows.values())
    fig, axes = _panel_grid(len(rows), ncols, (6.5, 0.42 * tallest + 1.1), fig)
    for ax, (key, (texts, cumulative)) in zip(axes, rows.items(), strict=True):
        if single:
            label = title
        elif isinstance(key, tuple) and len(key) == 2:
            label = f"L{key[0]}.H{key[1]}"
        else:
            label = str(key)
        _draw_textspan(ax, texts, cumulative, label)
    if single:
        return fig, axes[0]
    if title:
        fig.suptitle(title)
    return fig, axes


# --------------------------------------------------------------------------- mean ablation


def _named_series(values: Any, name: str) -> dict[str, np.ndarray]:
    """A 1-D sequence, a mapping name -> 1-D sequence or a DataFrame (one series per column) as
    ``{name: [n] array}``."""
    if isinstance(values, Mapping) or hasattr(values, "columns"):
        items = list(values.items())
        if not items:
            raise ValueError(f"{name} is an empty mapping; expected name -> 1-D sequence")
    else:
        items = [("", values)]
    series = {}
    for key, value in items:
        label = f"{name}[{key!r}]" if key != "" else name
        array = _as_float(value, label, (1,), "a 1-D sequence (one value per layer)")
        if array.size == 0:
            raise ValueError(f"{label} is empty")
        series[str(key)] = array
    return series


ABLATED_LAYERS_LABEL = "l (MSA layers 0..l ablated)"


def _chance_line(ax: Axes, chance: float | None) -> None:
    """A dotted gray horizontal line at the chance score, labelled for the legend."""
    if chance is None:
        return
    if not isinstance(chance, numbers.Real):
        raise TypeError(f"chance must be a float, got {type(chance).__name__}")
    ax.axhline(float(chance), linestyle=":", linewidth=1.2, color="0.35", label="chance")


def plot_ablation_curve(accumulated: ArrayLike | Mapping[str, ArrayLike],
                        baseline: float | Mapping[str, float] | None = None,
                        labels: str | Sequence[str] | None = None,
                        xlabel: str = ABLATED_LAYERS_LABEL,
                        ylabel: str = "zero-shot accuracy", ax: Axes | None = None,
                        layers: Sequence[int] | None = None, title: str | None = None,
                        chance: float | None = None) -> tuple[Figure, Axes]:
    """Accuracy after mean-ablating attention layers cumulatively (Figure 2 of the paper).

    Point ``l`` of a curve is the score with the direct effects of all MSA layers up to ``l``
    replaced by their mean; the curve stays flat until the layers that matter are reached.

    Args:
        accumulated: ``[L]`` scores, or a mapping ``{name: [L_name]}`` (or a DataFrame, one
            column per name): one line per model or setting (the names label the legend).
        baseline: The unablated score, drawn as a dashed horizontal line: a float, or a mapping
            ``{name: float}`` (lines take the color of the curve with the same name).
            Default: none.
        labels: Legend label(s) overriding the names: a string for one curve, or one string per
            curve. Default: the mapping's keys; no legend for a single unnamed curve.
        xlabel: x-axis label. Default: ``"l (MSA layers 0..l ablated)"``.
        ylabel: y-axis label. Default: ``"zero-shot accuracy"``.
        ax: Axes to draw into. Default: a new figure.
        layers: ``[L]`` x positions (layer indices) of the points. Default: ``0 .. L-1``.
        title: Axes title, e.g. the task (``"shape classification, 1,000 scenes"``).
            Default: none.
        chance: The chance score (e.g. ``1 / n_classes``), drawn as a dotted gray line labelled
            "chance". Default: none.

    Returns:
        ``(fig, ax)``; ``ax.lines`` holds one line per curve, then one per baseline, then the
        chance line.

    Examples::

        >>> from captum_clipspan.visualization import plot_ablation_curve
        >>> curves = {"ViT-B-16": [0.68, 0.68, 0.67, 0.66, 0.6, 0.4, 0.1],
        ...           "ViT-L-14": [0.75, 0.75, 0.75, 0.74, 0.7, 0.5, 0.2]}
        >>> fig, ax = plot_ablation_curve(curves, baseline={"ViT-B-16": 0.68, "ViT-L-14": 0.75})
        >>> fig.savefig("ablation.png")
    """
    series = _named_series(accumulated, "accumulated")
    names = list(series)
    if labels is not None:
        names = _texts(labels, "labels")
        _check_count(names, len(series), "labels", "curve")
    fig, ax = _single_axes(ax, (6.0, 4.0))
    colors = {}
    for name, (key, values) in zip(names, series.items(), strict=True):
        x = np.arange(values.size) if layers is None else _to_numpy(layers, "layers")
        if x.shape != values.shape:
            raise ValueError(f"layers must have one entry per point ({values.size}), "
                             f"got {x.size}")
        (line,) = ax.plot(x, values, marker="o", markersize=4, label=name or None)
        colors[key] = line.get_color()
    if baseline is not None:
        if isinstance(baseline, Mapping):
            references = {str(key): value for key, value in baseline.items()}
        else:
            references = {"": baseline}
        for key, value in references.items():
            if not isinstance(value, numbers.Real):
                raise TypeError(f"baseline must be a float or a mapping name -> float, "
                                f"got {type(value).__name__} for {key!r}")
            label = f"{key} baseline" if key else "baseline"
            ax.axhline(float(value), linestyle="--", linewidth=1.2,
                       color=colors.get(key, "0.4"), label=label)
    _chance_line(ax, chance)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
        ax.legend(fontsize=8)
    return fig, ax


def plot_ablation_bars(table: Any, ax: Axes | None = None, ylabel: str = "zero-shot accuracy",
                       fmt: str = ".2f", title: str | None = None,
                       chance: float | None = None) -> tuple[Figure, Axes]:
    """Mean-ablation results as bars (Table 1 of the paper), values printed on the bars.

    Args:
        table: A mapping ``{setting: score}`` (or a pandas Series), e.g.
            ``{"baseline": 0.70, "MLPs ablated": 0.68, "MSAs ablated": 0.05}``; or a pandas
            DataFrame with one row per setting and one column per model (grouped bars).
        ax: Axes to draw into. Default: a new figure.
        ylabel: y-axis label. Default: ``"zero-shot accuracy"``.
        fmt: Format spec of the printed values. Default: ``".2f"``.
        title: Axes title, e.g. the task. Default: none.
        chance: The chance score, drawn as a dotted gray line labelled "chance". Default: none.

    Returns:
        ``(fig, ax)``; ``ax.containers`` holds one bar container per column (one for a mapping);
        ``ax.lines`` holds the chance line when drawn.

    Examples::

        >>> import pandas as pd
        >>> from captum_clipspan.visualization import plot_ablation_bars
        >>> table = pd.DataFrame({"ViT-B-16": [0.68, 0.67, 0.04], "ViT-L-14": [0.75, 0.74, 0.06]},
        ...                      index=["baseline", "MLPs ablated", "MSAs ablated"])
        >>> fig, ax = plot_ablation_bars(table)
        >>> fig.savefig("table1.png")
    """
    if hasattr(table, "columns") and hasattr(table, "index"):  # a pandas DataFrame
        settings = [str(index) for index in table.index]
        columns = {str(column): list(table[column]) for column in table.columns}
    elif isinstance(table, Mapping) or hasattr(table, "items"):
        rows = list(table.items())  # a pandas Series' .values is not a method
        settings = [str(key) for key, _ in rows]
        columns = {"": [value for _, value in rows]}
    else:
        raise TypeError(f"table must be a mapping setting -> score or a pandas DataFrame "
                        f"(settings × models), got {type(table).__name__}")
    if not settings or not columns:
        raise ValueError("table is empty; expected at least one setting and one score")
    values = {}
    for name, column in columns.items():
        try:
            values[name] = np.array([float(value) for value in column])
        except (TypeError, ValueError) as error:
            where = f"column {name!r} of table" if name else "table"
            raise TypeError(f"{where} must hold numbers (scores), got {column!r}") from error

    fig, ax = _single_axes(ax, (max(4.0, 1.1 * len(settings) * max(1, len(values)) ** 0.5 + 1.5),
                                4.0))
    positions = np.arange(len(settings))
    width = 0.8 / len(values)
    for index, (name, heights) in enumerate(values.items()):
        offset = (index - (len(values) - 1) / 2) * width
        bars = ax.bar(positions + offset, heights, width * 0.95, label=name or None)
        ax.bar_label(bars, labels=[format(h, fmt) for h in heights], padding=2, fontsize=8)
    top = max(float(np.nanmax(v)) for v in values.values())
    bottom = min(float(np.nanmin(v)) for v in values.values())
    ax.set_ylim(min(0.0, bottom * 1.15), max(0.0, top) * 1.12 or 1.0)
    ax.set_xticks(positions, labels=[_wrap(setting, 14) for setting in settings])
    ax.set_ylabel(ylabel)
    _chance_line(ax, chance)
    if title:
        ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    if any(name for name in values) or chance is not None:
        ax.legend(fontsize=8)
    return fig, ax


# --------------------------------------------------------------------------- images


def _image_list(images: Any) -> list[np.ndarray]:
    """``[K, 3, H, W]`` / ``[K, H, W, 3]`` batches or lists of images -> ``[H, W, 3]`` in [0, 1]."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim != 4:
            raise ValueError(f"images must be a batch [K, 3, H, W] or [K, H, W, 3] (or a list "
                             f"of images), got shape {tuple(images.shape)}")
        images = list(images)
    elif not isinstance(images, Sequence) or isinstance(images, str):
        raise TypeError(f"images must be a tensor [K, 3, H, W], an array [K, H, W, 3] or a list "
                        f"of images (PIL images, tensors or arrays), got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("images is empty; expected at least one image")
    return [_image_hwc(image, f"images[{index}]") for index, image in enumerate(images)]


def plot_top_images(images: Any, scores: ArrayLike | None = None,
                    titles: Sequence[str] | None = None, ncols: int = 5,
                    title: str | None = None, fmt: str = ".3f",
                    fig: Figure | SubFigure | None = None,
                    score_label: str | None = None) -> tuple[Figure | SubFigure, np.ndarray]:
    """A grid of images, e.g. the top images of a head for a text (Figures 1 and 5 of the paper).

    Args:
        images: ``[K, 3, H, W]`` (tensor) or ``[K, H, W, 3]`` (array), or a list of ``K`` PIL
            images, tensors or arrays. Integer images are read as 0..255; float images outside
            [0, 1] (e.g. CLIP-normalized) are min-max scaled per image for display.
        scores: ``[K]`` values printed under the images (e.g. each image's similarity to the
            query through the head). Default: none.
        titles: ``K`` captions above the images. Default: none.
        ncols: Images per row. Default: 5.
        title: Figure title. Default: none.
        fmt: Format spec of the printed scores. Default: ``".3f"``.
        fig: An empty figure or subfigure to draw into. Default: a new figure.
        score_label: What the scores are (e.g. ``"L11.H4 · text"``): printed before each score
            (``"L11.H4 · text = 0.123"``). Default: the bare number.

    Returns:
        ``(fig, axes)``: ``axes`` is a ``[K]`` numpy array of Axes, one per image.

    Examples::

        >>> import torch
        >>> from captum_clipspan.visualization import plot_top_images
        >>> similarity = heads.attribute(images, texts=query)[:, 11, 4, 0]   # [B]
        >>> top = similarity.topk(8).indices
        >>> fig, axes = plot_top_images(images[top], similarity[top], ncols=4, title="L11.H4")
        >>> fig.savefig("top_images.png")
    """
    pictures = _image_list(images)
    values = None
    if scores is not None:
        values = _as_float(scores, "scores", (1,), "a 1-D [K] sequence")
        _check_count(values, len(pictures), "scores", "image")
    if titles is not None:
        titles = _texts(titles, "titles")
        _check_count(titles, len(pictures), "titles", "image")
    fig, axes = _panel_grid(len(pictures), ncols, (2.4, 2.6), fig)
    for index, (ax, picture) in enumerate(zip(axes, pictures, strict=True)):
        ax.imshow(picture)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
        if titles is not None:
            ax.set_title(_wrap(titles[index], 24, max_lines=2), fontsize=9)
        if values is not None:
            number = format(values[index], fmt)
            ax.set_xlabel(f"{score_label} = {number}" if score_label else number, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig, axes


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


def _draw_patch_map(ax: Axes, image: np.ndarray, attr: np.ndarray, style: _MapStyle,
                    title: str | None) -> Any:
    """One overlay through Captum's ``visualize_image_attr``; a map with nothing of the chosen
    sign (which Captum cannot normalize) shows the gray image and says so. Returns the heat
    map's ``AxesImage`` (``None`` when none was drawn)."""
    from captum.attr import visualization as viz

    heat = None
    shown = {"all": attr, "positive": np.maximum(attr, 0.0), "negative": np.minimum(attr, 0.0),
             "absolute_value": attr}[style.sign]
    if not np.any(shown):
        ax.imshow(image if style.method == "original_image" else image.mean(axis=2),
                  cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
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


def _patch_map_colorbar(fig: Figure | SubFigure, axes: np.ndarray, heats: list[Any],
                        sign: str) -> Any:
    """One colorbar for every panel (each map is scaled to Captum's range), with a sign legend;
    ``None`` when no panel drew a heat map."""
    heats = [heat for heat in heats if heat is not None]
    if not heats:
        return None
    colorbar = fig.colorbar(heats[0], ax=list(axes), shrink=0.85, label=PATCH_MAP_LABEL)
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
                    colorbar: bool = True,
                    fade: bool = True) -> tuple[Figure | SubFigure, np.ndarray]:
    """Patch maps over one image, one panel per map (Figure 7 of the paper).

    Each map is upsampled bilinearly to the image size when its grid differs and drawn with
    :func:`captum.attr.visualization.visualize_image_attr`, which scales each map by its own
    ``100 - outlier_perc`` percentile. A map with no values of the chosen ``sign`` shows the
    gray image with a note instead of failing.

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
    picture = _image_hwc(image, "image")
    attrs = _maps_hw(maps, picture.shape[:2], "maps")
    if titles is not None:
        titles = _texts(titles, "titles")
        _check_count(titles, attrs.shape[0], "titles", "map")
    fig, axes = _panel_grid(attrs.shape[0], ncols, (3.0, 3.2), fig)
    heats = [_draw_patch_map(ax, picture, attr, style,
                             None if titles is None else _wrap(titles[index], 30, max_lines=2))
             for index, (ax, attr) in enumerate(zip(axes, attrs, strict=True))]
    if colorbar:
        _patch_map_colorbar(fig, axes, heats, sign)
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
        ax = next(panels)
        ax.imshow(picture)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("image", fontsize=9)
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


# --------------------------------------------------------------------------- segmentation

__all__ += ["plot_contrastive_map", "plot_head_similarity", "plot_nearest_neighbors",
            "plot_topic_segmentation"]


def _labels_hw(labels: Any, size: tuple[int, int], n_texts: int) -> np.ndarray:
    """``[g, g]`` integer text indices -> ``[H, W]`` by nearest-neighbour upsampling."""
    array = _to_numpy(labels, "labels")
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise ValueError(f"labels must be a [g, g] integer map of text indices (e.g. "
                         f"topic_segmentation(...)[b]), got shape {tuple(array.shape)} and dtype "
                         f"{array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= n_texts):
        raise ValueError(f"labels must be text indices in 0..{n_texts - 1}, got "
                         f"{array.min()}..{array.max()}")
    rows = np.arange(size[0]) * array.shape[0] // size[0]
    cols = np.arange(size[1]) * array.shape[1] // size[1]
    return array[rows[:, None], cols[None, :]]


def plot_topic_segmentation(image: Any, labels: Any, texts: Sequence[str],
                            title: str | None = None, alpha: float = 0.55, cmap: str = "tab10",
                            fig: Figure | SubFigure | None = None
                            ) -> tuple[Figure | SubFigure, np.ndarray]:
    """Each patch colored by the text that wins there within one head (the paper's Figure 8).

    Args:
        image: ``[3, H, W]`` tensor or ``[H, W, 3]`` array (or a PIL image).
        labels: ``[g, g]`` text indices, e.g.
            ``segmentation.topic_segmentation(clip, images, texts, layer, head)[b]``.
        texts: the ``T`` texts the indices refer to (the legend).
        title: Figure title, e.g. ``"L11.H4"``. Default: none.
        alpha: Opacity of the colors over the image. Default: 0.55.
        cmap: A qualitative colormap name. Default: ``"tab10"``.
        fig: An empty figure or subfigure to draw into. Default: a new figure.

    Returns:
        ``(fig, axes)``: a ``[2]`` array of Axes: the image and the labelled patches (with a
        legend of the texts that win somewhere).

    Examples::

        >>> from captum_clipspan.segmentation import topic_segmentation
        >>> texts = ["a red object", "a blue object", "a striped background"]
        >>> labels = topic_segmentation(clip, images, texts, layer=3, head=3)   # [B, g, g]
        >>> fig, axes = plot_topic_segmentation(images[0], labels[0], texts, title="L3.H3")
    """
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    picture = _image_hwc(image, "image")
    names = _texts(texts, "texts")
    full = _labels_hw(labels, picture.shape[:2], len(names))
    colors = colormaps[cmap].resampled(max(len(names), 1))
    painted = np.array([colors(i)[:3] for i in range(len(names))])[full]
    fig, axes = _panel_grid(2, 2, (3.2, 3.4), fig)
    axes[0].imshow(picture)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow((1 - alpha) * picture + alpha * painted)
    axes[1].set_title("topics", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    shown = sorted(set(np.unique(full).tolist()))
    axes[1].legend(handles=[Patch(color=colors(i), label=_wrap(names[i], 28, 2)) for i in shown],
                   loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
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
    axes[0].imshow(picture)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_title("image", fontsize=9)
    label = f"{_wrap(text_a, 30, 1)}\nminus {_wrap(text_b, 30, 1)}"
    _draw_patch_map(axes[1], picture, attr[0], style, label)
    if title:
        fig.suptitle(title)
    return fig, axes


# --------------------------------------------------------------------------- retrieval


def plot_nearest_neighbors(query: Any, neighbors: Any, scores: ArrayLike | None = None,
                           title: str | None = None, ncols: int = 6, fmt: str = ".3f",
                           fig: Figure | SubFigure | None = None
                           ) -> tuple[Figure | SubFigure, np.ndarray]:
    """A query image followed by its nearest neighbours through one head.

    Args:
        query: the query image (``[3, H, W]``, ``[H, W, 3]`` or PIL).
        neighbors: ``K`` images, as in :func:`plot_top_images`.
        scores: ``[K]`` similarities printed under the neighbours. Default: none.
        title: Figure title, e.g. ``"L3.H1 neighbours"``. Default: none.
        ncols: Images per row. Default: 6.
        fmt: Format spec of the scores. Default: ``".3f"``.
        fig: An empty figure or subfigure to draw into. Default: a new figure.

    Returns:
        ``(fig, axes)``: a ``[K + 1]`` array of Axes, the query first (with a black border).

    Examples::

        >>> from captum_clipspan.retrieval import nearest_neighbors
        >>> near = nearest_neighbors(cache, layer=3, head=1, index=0, k=5)
        >>> fig, axes = plot_nearest_neighbors(images[0], images[near.indices], near.scores)
    """
    pictures = _image_list(neighbors)
    values = None
    if scores is not None:
        values = _as_float(scores, "scores", (1,), "a 1-D [K] sequence")
        _check_count(values, len(pictures), "scores", "neighbor")
    labels = ["query", *[f"#{rank + 1}" for rank in range(len(pictures))]]
    fig, axes = plot_top_images([_image_hwc(query, "query"), *pictures], titles=labels,
                                ncols=ncols, title=title, fig=fig)
    if values is not None:
        for ax, value in zip(axes[1:], values, strict=True):
            ax.set_xlabel(format(value, fmt), fontsize=9)
    axes[0].spines[:].set_visible(True)
    axes[0].spines[:].set_linewidth(3)
    return fig, axes


def plot_head_similarity(matrix: ArrayLike, heads: Sequence[tuple[int, int]] | None = None,
                         title: str | None = None, cmap: str = "viridis", ax: Axes | None = None,
                         colorbar_label: str | None = "similarity") -> tuple[Figure, Axes]:
    """A head × head similarity matrix (how entangled two heads' direct effects are).

    Args:
        matrix: ``[K, K]``, e.g. ``retrieval.head_similarity(cache).matrix``.
        heads: ``K`` ``(layer, head)`` pairs labelling rows and columns ("L3.H1"). Default:
            indices.
        title: Axes title. Default: none.
        cmap: Colormap name. Default: ``"viridis"``.
        ax: Axes to draw into. Default: a new figure.
        colorbar_label: Label of the colorbar. Default: ``"similarity"``.

    Returns:
        ``(fig, ax)``; ``ax.images[0].get_array()`` holds ``matrix``.

    Examples::

        >>> from captum_clipspan.retrieval import head_similarity
        >>> sim = head_similarity(cache)
        >>> fig, ax = plot_head_similarity(sim.matrix, sim.heads, title="head similarity")
    """
    grid = _as_float(matrix, "matrix", (2,), "a square [K, K] matrix")
    if grid.shape[0] != grid.shape[1] or grid.size == 0:
        raise ValueError(f"matrix must be a non-empty square [K, K] matrix, got {grid.shape}")
    n = grid.shape[0]
    names = ([f"L{layer}.H{head}" for layer, head in heads] if heads is not None
             else [str(i) for i in range(n)])
    _check_count(names, n, "heads", "row of the matrix")
    fig, ax = _single_axes(ax, (max(4.0, 0.32 * n + 2.0), max(3.5, 0.32 * n + 1.2)))
    image = ax.imshow(grid, cmap=cmap, interpolation="nearest")
    fontsize = 8 if n <= 16 else 6 if n <= 48 else 4
    ax.set_xticks(np.arange(n), labels=names, rotation=90, fontsize=fontsize)
    ax.set_yticks(np.arange(n), labels=names, fontsize=fontsize)
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    return fig, ax
