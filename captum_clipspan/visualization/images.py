"""Image grids: what the model sees of a photo, a head's top images (Figures 1 and 5 of the
paper) and a query's nearest neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

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


def _scores(scores: ArrayLike | None, n: int, what: str) -> np.ndarray | None:
    """``[n]`` float scores, one per ``what`` (``None`` stays ``None``)."""
    if scores is None:
        return None
    values = _as_float(scores, "scores", (1,), "a 1-D [K] sequence")
    _check_count(values, n, "scores", what)
    return values


def _print_score(ax: Axes, value: float, fmt: str, label: str | None = None) -> None:
    """A score under an image panel: ``"label = value"``, or the bare number."""
    number = format(value, fmt)
    ax.set_xlabel(f"{label} = {number}" if label else number, fontsize=9)


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
    values = _scores(scores, len(pictures), "image")
    if titles is not None:
        titles = _texts(titles, "titles")
        _check_count(titles, len(pictures), "titles", "image")
    fig, axes = _panel_grid(len(pictures), ncols, (2.4, 2.6), fig)
    for index, (ax, picture) in enumerate(zip(axes, pictures, strict=True)):
        _image_panel(ax, picture, None if titles is None else _wrap(titles[index], 24, max_lines=2))
        ax.spines[:].set_visible(False)
        if values is not None:
            _print_score(ax, values[index], fmt, score_label)
    if title:
        fig.suptitle(title)
    return fig, axes


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
    values = _scores(scores, len(pictures), "neighbor")
    labels = ["query", *[f"#{rank + 1}" for rank in range(len(pictures))]]
    fig, axes = plot_top_images([_image_hwc(query, "query"), *pictures], titles=labels,
                                ncols=ncols, title=title, fig=fig)
    if values is not None:
        for ax, value in zip(axes[1:], values, strict=True):
            _print_score(ax, value, fmt)
    axes[0].spines[:].set_visible(True)
    axes[0].spines[:].set_linewidth(3)
    return fig, axes
