"""Figures of the neuron lens: each neuron's sparse texts as bars, the layer's neurons as a grid
(effect size against how rank-one they are), and top images with per-token activation maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .common import (
    _as_float,
    _check_count,
    _DisplayFigure,
    _image_panel,
    _panel_grid,
    _single_axes,
    _texts,
    _wrap,
)
from .images import _image_list

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

__all__ = ["plot_neuron_grid", "plot_neuron_images", "plot_neuron_texts"]


def plot_neuron_texts(report: Any, neurons: Sequence[int], max_texts: int = 8, ncols: int = 4,
                      fig: Figure | SubFigure | None = None) -> tuple[Figure | SubFigure, Any]:
    """Each neuron's sparse texts as horizontal bars of their coefficients (blue positive, red
    negative), largest magnitude on top.

    Args:
        report: a :class:`~captum_clipspan.NeuronReport`.
        neurons: neuron indices of the report's layer, one panel each.
        max_texts: texts per panel.
        ncols: panels per row.
        fig: an empty figure or subfigure to draw into.

    Returns:
        ``(fig, axes)``, one axes per neuron.
    """
    neurons = list(neurons)
    if not neurons:
        raise ValueError("neurons is empty; give at least one neuron index.")
    fig, axes = _panel_grid(len(neurons), ncols, (3.6, 0.35 * max_texts + 1.0), fig)
    for ax, neuron in zip(axes, neurons, strict=True):
        pairs = report.texts_of(neuron, max_texts)
        rows = np.arange(len(pairs))
        values = np.array([value for _, value in pairs])
        ax.barh(rows, values, color=np.where(values >= 0, "#2171b5", "#cb181d"), height=0.7)
        ax.set_yticks(rows, labels=[_wrap(text, 30, max_lines=2) for text, _ in pairs],
                      fontsize=8)
        ax.set_ylim(len(pairs) - 0.5, -0.5)
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        row = report.row(neuron)
        ax.set_title(f"L{report.layer}.N{neuron}  (PC {float(report.component_variance[row]):.0%},"
                     f" texts {float(report.text_variance[row]):.0%})", fontsize=9)
    return fig, axes


def plot_neuron_grid(report: Any, highlight: int = 10, ax: Axes | None = None
                     ) -> tuple[Figure, Axes]:
    """Every neuron of the report as a point: its effect size (mean centered norm) against the
    variance its first component explains; the ``highlight`` strongest are labelled."""
    fig, ax = _single_axes(ax, (6.0, 4.2))
    effect = _as_float(report.centered_norm, "report.centered_norm", (1,), "[n]")
    variance = _as_float(report.component_variance, "report.component_variance", (1,), "[n]")
    ax.scatter(effect, variance, s=8, color="#6baed6", alpha=0.7)
    for neuron in report.strongest(highlight):
        row = report.row(neuron)
        ax.scatter(effect[row], variance[row], s=18, color="#08519c")
        ax.annotate(str(neuron), (effect[row], variance[row]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("second-order effect (mean norm of the centered effect)")
    ax.set_ylabel("variance explained by the first component")
    ax.set_title(f"MLP layer {report.layer}: {len(report)} neurons over {report.count} images")
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def plot_neuron_images(images: Sequence[Any], maps: Sequence[Any] | None = None,
                       titles: Sequence[str] | None = None, alpha: float = 0.5
                       ) -> tuple[Figure, np.ndarray]:
    """Rows of top images, one row per neuron, each optionally overlaid with the neuron's
    per-token activation map.

    Args:
        images: one entry per neuron: its images (anything
            :func:`~captum_clipspan.visualization.plot_top_images` reads).
        maps: one entry per neuron: ``[K, g, g]`` activation maps of its images (upsampled to the
            image size for display), or ``None``.
        titles: one row label per neuron.
        alpha: opacity of the maps.

    Returns:
        ``(fig, axes)`` with ``axes`` ``[rows, K]`` (cells past a row's images are hidden).
    """
    rows = [_image_list(row) for row in images]
    if not rows:
        raise ValueError("images is empty; give one list of images per neuron.")
    _check_count(maps, len(rows), "maps", "neuron")
    if titles is not None:
        titles = _texts(titles, "titles")
        _check_count(titles, len(rows), "titles", "neuron")
    width = max(len(row) for row in rows)
    fig = _DisplayFigure(figsize=(1.6 * width, 1.8 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), width, squeeze=False)
    for index, row in enumerate(rows):
        heat = None if maps is None else _as_float(maps[index], f"maps[{index}]", (3,),
                                                    "[K, g, g]")
        for column, ax in enumerate(axes[index]):
            if column >= len(row):
                ax.set_visible(False)
                continue
            picture = row[column]
            _image_panel(ax, picture)
            if heat is not None:
                ax.imshow(heat[column], cmap="inferno", alpha=alpha, interpolation="bilinear",
                          extent=(-0.5, picture.shape[1] - 0.5, picture.shape[0] - 0.5, -0.5))
            if column == 0 and titles is not None:
                ax.set_ylabel(_wrap(titles[index], 22, max_lines=3), fontsize=8)
    return fig, axes
