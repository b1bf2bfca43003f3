"""Topic segmentation: each patch colored by the text that wins there within one head (Figure 8
of the paper)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .common import _image_hwc, _image_panel, _panel_grid, _texts, _to_numpy, _wrap

if TYPE_CHECKING:
    from matplotlib.figure import Figure, SubFigure


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
    _image_panel(axes[0], picture, "image")
    _image_panel(axes[1], (1 - alpha) * picture + alpha * painted, "topics")
    shown = sorted(set(np.unique(full).tolist()))
    axes[1].legend(handles=[Patch(color=colors(i), label=_wrap(names[i], 28, 2)) for i in shown],
                   loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig, axes
