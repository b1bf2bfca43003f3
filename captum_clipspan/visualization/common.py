"""What every figure shares: the self-displaying figure, input coercion (tensors, arrays, PIL
images -> numpy), panel grids and label wrapping."""

from __future__ import annotations

import io
import math
import numbers
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import SubFigure


ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


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


def _image_panel(ax: Axes, picture: np.ndarray, title: str | None = None,
                 **imshow_kwargs: Any) -> None:
    """``picture`` drawn on ``ax`` without ticks, under a small title when one is given."""
    ax.imshow(picture, **imshow_kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


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
