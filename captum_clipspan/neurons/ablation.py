"""Which paths of an MLP layer matter: mean-ablating its neurons' direct, second-order and
indirect effects (the second-order paper's Sec. 3), scored by zero-shot accuracy.

An MLP layer's whole effect on the embedding (its output replaced by its mean inside the network,
:class:`~captum_clipspan.MeanAblation`'s ``"total"`` mode) splits into three parts:

* the first-order (direct) effect, the layer's direct term ``mlp.{l}`` of the decomposition (the
  sum of its neurons' :func:`~captum_clipspan.decomposition.neuron_maps.first_order` effects);
* the second-order effect, the sum of its neurons' effects through later heads' value paths;
* the rest, the indirect effects beyond second order (through later MLPs, patterns and norms).

Every setting goes through the one mean-ablation formula of :mod:`captum_clipspan.evaluation`
(:func:`~captum_clipspan.evaluation.deviations_from_means`); the second-order term is given to it
as the ``mlps`` field of a term mapping (the MLP layer's output as carried by the later heads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..attr.ablation import MeanAblation, component_means
from ..decomposition import decompose
from ..decomposition.neuron_maps import neuron_effects
from ..evaluation import ComponentMeans, correct, deviations_from_means
from ..hooked.clip import HookedCLIP
from ..sources import ImageSource, iterate_batches
from ..text import ZeroShotClassifier
from ..validation import check_labels, resolve_layer
from .report import NeuronReport

__all__ = ["SETTINGS", "NeuronAblation", "neuron_ablation"]

SETTINGS = ("baseline", "first-order ablated", "second-order ablated",
            "first- and second-order ablated", "indirect (beyond second-order) ablated",
            "whole MLP ablated")
"""The settings of :func:`neuron_ablation`, in table order."""


@dataclass
class NeuronAblation:
    """Zero-shot accuracy with parts of one MLP layer's effect mean-ablated.

    Attributes:
        layer: the MLP layer.
        accuracy: ``{setting: accuracy}`` for each of :data:`SETTINGS`.
        count: images evaluated.
        convention: the decomposition convention of the direct and second-order terms.
    """

    layer: int
    accuracy: dict[str, float]
    count: int
    convention: str

    def to_frame(self) -> Any:
        """A DataFrame indexed by setting: accuracy and change from the baseline."""
        import pandas as pd

        baseline = self.accuracy["baseline"]
        return pd.DataFrame([(name, value, value - baseline) for name, value in
                             self.accuracy.items()],
                            columns=["setting", "accuracy", "change"]).set_index("setting")


def neuron_ablation(clip: HookedCLIP, layer: int, data: ImageSource,
                    classifier: ZeroShotClassifier, *,
                    means_data: ImageSource | None = None, labels: Any = None,
                    report: NeuronReport | None = None, convention: str = "reference",
                    batch_size: int = 64, show_progress: bool = True) -> NeuronAblation:
    """Mean-ablate one MLP layer's first-order, second-order and indirect effects.

    For image ``i`` with normalized embedding ``e_i``, ``d1_i`` the layer's direct term minus its
    mean and ``d2_i`` its neurons' summed second-order effect minus its mean, and ``t_i`` the
    embedding with the layer's output replaced by its mean inside the network (divided by the
    clean embedding's norm, so that all are in the same units):

    * first-order ablated: ``e - d1``; second-order ablated: ``e - d2``; both: ``e - d1 - d2``;
    * whole MLP ablated: ``t``; indirect (beyond second order) ablated: ``t + d1 + d2``, the whole
      effect removed but its first- and second-order parts put back.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        layer: the MLP layer (not the last: it needs a later attention layer).
        data: labelled images (class sub-folders, ``(image, label)`` items), or give ``labels``.
        classifier: a :class:`~captum_clipspan.ZeroShotClassifier`.
        means_data: the images the means are taken over (default: ``data``).
        labels: ``[N]`` class indices overriding the source's.
        report: a :class:`NeuronReport` of every neuron of ``layer`` in ``convention``: its
            means give the second-order mean (no pass for it).
        convention: ``"reference"`` or ``"centered"``.
        batch_size: images per forward pass.
        show_progress: progress bars.

    Returns:
        A :class:`NeuronAblation`.

    Examples::

        >>> study = cs.neuron_ablation(clip, 9, "imagenet-val/", zs)
        >>> study.to_frame()
    """
    from tqdm.auto import tqdm

    vit = clip.visual
    layer = resolve_layer(layer, vit.n_layers)
    means_data = data if means_data is None else means_data
    means = component_means(clip, means_data, layers=[layer], convention=convention,
                            batch_size=batch_size, show_progress=show_progress)
    second_means = ComponentMeans({"mlps": _second_order_mean(
        clip, layer, means_data, report, convention, batch_size, show_progress)}, (),
        convention, means.count)
    total = MeanAblation(clip, means, mode="total")
    class_embeddings = classifier.class_embeddings.float().cpu()
    override = None if labels is None else torch.as_tensor(labels)
    hits, seen = torch.zeros(len(SETTINGS), dtype=torch.long), 0
    component = [[f"mlp.{layer}"]]
    with tqdm(desc=f"MLP {layer} ablations", unit="img", disable=not show_progress) as progress:
        for images, batch_labels in iterate_batches(clip, data, batch_size):
            if override is not None:
                batch_labels = override[seen:seen + images.shape[0]]
            batch_labels = check_labels(batch_labels, images.shape[0], class_embeddings.shape[0])
            parts = decompose(clip, images, granularity="layer", convention=convention)
            embed = parts.image_embed
            second = {"image_embed": embed, "mlps": _at_layer(
                _second_order_sum(clip, images, layer, convention), layer, vit.n_layers)}
            first_change = deviations_from_means(parts, means, component)[:, 0]
            second_change = deviations_from_means(second, second_means, component)[:, 0]
            with torch.no_grad():
                norm = clip.encode_image(images).to(embed).norm(dim=-1, keepdim=True)
                with vit.hooks(fwd_hooks=total.replacement_hooks(component[0])):
                    whole = clip.encode_image(images).to(embed) / norm
            settings = torch.stack([embed, embed - first_change, embed - second_change,
                                    embed - first_change - second_change,
                                    whole + first_change + second_change, whole], dim=1)
            hits += correct(settings.cpu(), class_embeddings, batch_labels).sum(0)
            seen += images.shape[0]
            progress.update(images.shape[0])
    if seen == 0:
        raise ValueError("the image source is empty.")
    accuracy = dict(zip(SETTINGS, (hits.double() / seen).tolist(), strict=True))
    return NeuronAblation(layer, accuracy, seen, convention)


def _second_order_sum(clip: HookedCLIP, images: Tensor, layer: int, convention: str) -> Tensor:
    """``[B, E]`` the layer's neurons' second-order effects summed (normalized)."""
    return neuron_effects(clip, images, layer, "second", convention=convention).neurons.sum(1)


def _at_layer(values: Tensor, layer: int, n_layers: int) -> Tensor:
    """``[B, E]`` -> ``[B, L, E]``, zero but at ``layer``: an ``mlps`` field for ``mlp.{layer}``."""
    field = values.new_zeros(values.shape[0], n_layers, values.shape[-1])
    field[:, layer] = values
    return field


def _second_order_mean(clip: HookedCLIP, layer: int, data: ImageSource,
                       report: NeuronReport | None, convention: str, batch_size: int,
                       show_progress: bool) -> Tensor:
    """``[L, E]`` the mean summed second-order effect, zero but at ``layer``."""
    from tqdm.auto import tqdm

    vit = clip.visual
    if report is not None:
        report.check_model(clip)
        if report.layer != layer or report.convention != convention or len(
                report) != vit.blocks[layer].mlp.d_mlp:
            raise ValueError(f"the report must cover every neuron of layer {layer} in the "
                             f"{convention!r} convention; it holds {len(report)} neurons of "
                             f"layer {report.layer} ({report.convention!r}).")
        return _at_layer(report.mean.double().sum(0, keepdim=True), layer, vit.n_layers)[0]
    total, count = None, 0
    with tqdm(desc=f"MLP {layer} second-order mean", unit="img",
              disable=not show_progress) as progress:
        for images, _ in iterate_batches(clip, data, batch_size):
            value = _second_order_sum(clip, images, layer, convention).double().sum(0)
            total = value if total is None else total + value
            count += images.shape[0]
            progress.update(images.shape[0])
    if total is None:
        raise ValueError("the reference set is empty.")
    return _at_layer((total / count)[None], layer, vit.n_layers)[0]
