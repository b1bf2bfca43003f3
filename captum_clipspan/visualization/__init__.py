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

from .ablation import ABLATED_LAYERS_LABEL as ABLATED_LAYERS_LABEL
from .ablation import plot_ablation_bars, plot_ablation_curve
from .common import ArrayLike as ArrayLike
from .heads import plot_head_grid, plot_head_similarity
from .images import model_view, plot_nearest_neighbors, plot_top_images
from .maps import PATCH_MAP_LABEL as PATCH_MAP_LABEL
from .maps import plot_best_worst, plot_contrastive_map, plot_patch_maps
from .neurons import plot_neuron_grid, plot_neuron_images, plot_neuron_texts  # noqa: F401
from .textspan import plot_textspan
from .topics import plot_topic_segmentation

__all__ = [
    "model_view",
    "plot_ablation_bars",
    "plot_ablation_curve",
    "plot_best_worst",
    "plot_head_grid",
    "plot_patch_maps",
    "plot_textspan",
    "plot_top_images",
    "plot_contrastive_map",
    "plot_head_similarity",
    "plot_nearest_neighbors",
    "plot_topic_segmentation",
]
