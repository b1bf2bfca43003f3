"""Mean-ablation figures: the accumulated-layers curve (Figure 2 of the paper) and its table as
bars (Table 1)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .common import ArrayLike, _as_float, _check_count, _single_axes, _texts, _to_numpy, _wrap

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
