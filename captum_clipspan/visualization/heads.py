"""Figures indexed by attention heads: the layer × head grid of one score per head and the
head × head similarity matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .common import ArrayLike, _as_float, _check_count, _single_axes, _to_numpy

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
        annotate: Print each cell's value in it, in a font that fits the cell; when even the
            smallest readable font would overprint (a 12 x 12 grid in a small panel, 144+
            heads), the values are left out and the title says so. Default: ``False``.
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
        fontsize = _cell_fontsize(ax, grid, fmt)
        if fontsize is None:
            note = "(cells too small to print their values: read them on the colorbar)"
            ax.set_title(f"{title}\n{note}" if title else note)
            return fig, ax
        for (row, col), value in np.ndenumerate(grid):
            if not np.isfinite(value):
                continue
            red, green, blue, _ = image.cmap(image.norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(col, row, format(value, fmt), ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black")
    return fig, ax


_MIN_FONTSIZE = 4.5  # points; smaller cell values cannot be read


def _cell_fontsize(ax: Axes, grid: np.ndarray, fmt: str) -> float | None:
    """The largest font (at most 8 pt) in which every formatted value fits its cell, or ``None``
    when that is below :data:`_MIN_FONTSIZE`."""
    box = ax.get_window_extent()
    points = 72.0 / ax.figure.dpi  # a SubFigure reports its root figure's dpi
    # 0.85: the colorbar and labels still take their share when the layout is drawn.
    cell_width = 0.85 * box.width * points / grid.shape[1]
    cell_height = 0.85 * box.height * points / grid.shape[0]
    widest = max((len(format(v, fmt)) for v in grid.ravel() if np.isfinite(v)), default=1)
    size = min(8.0, cell_width / (0.62 * widest), cell_height / 1.25)
    return size if size >= _MIN_FONTSIZE else None


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
