"""TextSpan tables: each head's chosen texts with the cumulative variance they explain."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .common import _as_float, _check_count, _panel_grid, _texts, _wrap

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure


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


def _chosen_heads(panels: dict, heads: Any, max_heads: int | None) -> tuple[dict, str | None]:
    """The panels to draw, and a note saying which when they are not all of them."""
    if heads is not None:
        missing = [key for key in heads if key not in panels]
        if missing:
            raise KeyError(f"heads {missing} are not in results (it holds {len(panels)} heads, "
                           f"e.g. {list(panels)[:4]})")
        return {key: panels[key] for key in heads}, None
    if max_heads is None or len(panels) <= max_heads:
        return panels, None
    if not isinstance(max_heads, numbers.Integral) or max_heads < 1:
        raise ValueError(f"max_heads must be a positive integer or None, got {max_heads!r}")

    def explained(key: Any) -> float:
        variance = np.asarray(panels[key].variance_explained, dtype=np.float64).ravel()
        return float(variance[-1]) if variance.size else float("-inf")

    top = sorted(panels, key=explained, reverse=True)[:max_heads]
    note = (f"the {max_heads} of {len(panels)} heads whose texts explain the most variance; "
            "pass heads= or max_heads= for others (clipspan explore shows every head)")
    return {key: panels[key] for key in top}, note


def plot_textspan(results: Any, max_texts: int = 10, title: str | None = None, ncols: int = 3,
                  fig: Figure | SubFigure | None = None, max_heads: int | None = 12,
                  heads: Any = None) -> tuple[Figure | SubFigure, Any]:
    """TextSpan tables: each head's chosen texts with the variance they explain.

    Each panel lists the texts top-down in the order TextSpan chose them; each row's bar is the
    cumulative fraction of the head's variance explained after that text, its darker end the
    text's own gain. A figure of every head of a real model would be metres tall, so at most
    ``max_heads`` are drawn (those whose texts explain the most variance, best first, with a
    note saying so); ``heads=`` picks others.

    Args:
        results: One TextSpan result, or a mapping ``{(layer, head): result}`` (one panel per
            head, in key order, titled ``"L{layer}.H{head}"``). A result is anything with
            ``texts`` (``list[str]``, in the order chosen) and ``variance_explained`` (``[m]``,
            cumulative, in [0, 1]), like
            :class:`~captum_clipspan.attr.textspan_core.TextSpanResult`.
        max_texts: Show at most this many texts per head. Default: 10.
        title: Axes title (one result) or figure title (a mapping). Default: none.
        ncols: Panels per row for a mapping. Default: 3.
        fig: An empty figure or subfigure to draw into. Default: a new figure.
        max_heads: For a mapping with more heads, draw only this many: those with the largest
            final variance explained, best first. ``None``: all. Default: 12.
        heads: The ``(layer, head)`` keys to draw, in this order (overrides ``max_heads``).
            Default: none.

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
    note = None
    if single:
        panels = {None: results}
    elif isinstance(results, Mapping) or hasattr(results, "items"):
        panels = dict(results.items())
        if not panels:
            raise ValueError("results is an empty mapping; expected {(layer, head): result}")
        panels, note = _chosen_heads(panels, heads, max_heads)
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
    if title or note:
        fig.suptitle("\n".join(_wrap(part, 110) for part in (title, note) if part))
    return fig, axes
