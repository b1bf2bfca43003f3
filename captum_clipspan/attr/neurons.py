"""Effects of one MLP layer's neurons on the image-text similarity: second order (through later
heads, Gandelsman et al., ICLR 2025) or first order (direct); and the neurons' segmentation map.

:class:`NeuronActivationMap` (the same paper, Sec. 5) maps each text by the mean activation, at
each patch, of the MLP neurons whose second-order effect points most along the text: a neuron's
direction is the first principal component of its effect (``NeuronReport.component``, from
:class:`~captum_clipspan.NeuronLens`), the ``top_neurons`` neurons with the largest
``|component . text|`` over every given layer are kept, and their post-activations
(``blocks.{l}.mlp.hook_post``) are averaged over the patch tokens. The math is written once, as
functions on tensors (:func:`select_neurons`, :func:`neuron_maps`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, overload

import torch
from captum.log import log_usage
from torch import Tensor

from ..decomposition import compute_dtype, decompose
from ..decomposition.neuron_maps import ORDERS, neuron_effects
from ..hooked.clip import HookedCLIP
from ..validation import check_choice, resolve_layer
from .base import ClipSpanAttribution, ResolvedTexts, TargetType, TextsType, patch_grid
from .baselines import _PatchMapAttribution

if TYPE_CHECKING:
    from ..neurons.report import NeuronReport

__all__ = ["NeuronActivationMap", "NeuronContribution", "neuron_maps", "select_neurons"]

NeuronsType = int | Sequence[int] | Tensor | None


class NeuronContribution(ClipSpanAttribution):
    """Effect of every neuron of one MLP layer on the image embedding.

    ``order="second"`` (default): each neuron's output carried by every later attention head's
    value path to the embedding (:func:`~captum_clipspan.second_order`), the quantity the paper
    reads in words. ``order="first"``: its direct effect (:func:`~captum_clipspan.first_order`);
    the neurons then sum, with the MLP bias's share, to the layer's direct term, and
    ``return_convergence_delta`` reports that sum minus the layer's term of the decomposition.
    Second-order effects sum to no quantity of the forward pass, so they have no delta.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        layer: the MLP layer (negative counts from the end); second order needs a later layer.
        order: ``"second"`` or ``"first"``.
        convention: ``"reference"`` (the authors' code) or ``"centered"``.

    Examples::

        >>> neurons = cs.NeuronContribution(clip, layer=9)
        >>> scores = neurons.attribute(images, texts=["a dog", "a cat"])     # [B, n, 2]
        >>> own = neurons.attribute(images, texts=["a dog", "a cat"], target=[0, 1],
        ...                         neurons=[17, 4])                        # [B, 2]
        >>> smooth = NoiseTunnel(neurons).attribute(images, nt_samples=8, texts=["a dog"])
    """

    def __init__(self, clip: HookedCLIP, layer: int, order: str = "second",
                 convention: str = "reference") -> None:
        super().__init__(clip, convention)
        check_choice(order, "order", ORDERS)
        n_layers = clip.visual.n_layers
        self.layer = resolve_layer(layer, n_layers)
        if order == "second" and self.layer == n_layers - 1:
            raise ValueError(f"layer {layer} is the last layer: no attention reads its MLP's "
                             "output, so it has no second-order effect (accepted: layers "
                             f"0..{n_layers - 2}; order='first' works on every layer).")
        self.order = order

    def has_convergence_delta(self) -> bool:
        return self.order == "first"

    def compute_convergence_delta(self, inputs: Tensor, texts: TextsType = None,
                                  target: TargetType = None) -> Tensor:
        """Completeness error of the first-order effects: every neuron plus the bias's share
        minus the layer's direct term ``mlps[:, layer]`` of the decomposition.

        Returns:
            ``[B, T]`` (``[B, E]`` without texts), or ``[B]`` with a target.

        Examples::

            >>> cs.NeuronContribution(clip, 9, order="first").compute_convergence_delta(images)
        """
        return self.attribute(inputs, texts, target, return_convergence_delta=True)[1]

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  neurons: NeuronsType = None, *,
                  return_convergence_delta: Literal[True]) -> tuple[Tensor, Tensor]: ...

    @overload
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  neurons: NeuronsType = None,
                  return_convergence_delta: Literal[False] = False) -> Tensor: ...

    @log_usage()
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  neurons: NeuronsType = None,
                  return_convergence_delta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Per-neuron effects.

        Args:
            inputs: ``[B, 3, H, W]`` preprocessed images.
            texts: string(s), text embeddings ``[T, E]``/``[E]``, a
                :class:`~captum_clipspan.ZeroShotClassifier`, or ``None`` (default) for
                joint-space vectors.
            target: ``None`` (default: every text) or one index per example into the texts
                (an int, a list of ints or a ``LongTensor [B]``).
            neurons: the neuron indices to report (default ``None``: all ``n``).
            return_convergence_delta: also return the completeness error (``order="first"``
                and every neuron only): the neurons plus the bias's share minus the layer's
                direct term.

        Returns:
            ``[B, n, T]`` scores, ``[B, n]`` with a target, or ``[B, n, E]`` vectors without
            texts (``n`` the number of selected neurons); and the delta (``[B, T]``, ``[B]`` or
            ``[B, E]``) when asked.
        """
        if return_convergence_delta and not self.has_convergence_delta():
            raise ValueError("second-order effects sum to no quantity of the forward pass, so "
                             "they have no convergence delta; use order='first' for one.")
        if return_convergence_delta and neurons is not None:
            raise ValueError("the convergence delta sums every neuron of the layer; drop "
                             f"neurons={neurons!r} or return_convergence_delta=True.")
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be a tensor [B, 3, H, W] of preprocessed images, got "
                            f"{type(inputs).__name__}.")
        resolved = ResolvedTexts.resolve(self.clip, texts, target, inputs.shape[0])
        effects = neuron_effects(self.clip, inputs, self.layer, self.order, neurons=neurons,
                                 texts=resolved.text_embeddings, convention=self.convention)
        attributions = resolved.select(effects.neurons)
        if not return_convergence_delta:
            return attributions
        parts = decompose(self.clip, inputs, granularity="layer", convention=self.convention,
                          text_embeddings=resolved.text_embeddings)
        return attributions, resolved.select(effects.total() - parts.mlps[:, self.layer])



def select_neurons(components: Tensor, texts: Tensor, top: int) -> Tensor:
    """The neurons most aligned with each text: the ``top`` largest ``|component . text|``.

    Args:
        components: ``[M, E]`` each neuron's direction (its first principal component).
        texts: ``[T, E]`` text embeddings.
        top: neurons kept per text (``1 <= top <= M``).

    Returns:
        ``[T, top]`` row indices into ``components``, most aligned first.
    """
    alignment = (texts @ components.T).abs()  # [T, M]
    return alignment.topk(top, dim=1).indices


def neuron_maps(activations: Tensor, selected: Tensor) -> Tensor:
    """Each text's map: the mean activation of its selected neurons at every token.

    Args:
        activations: ``[B, N, M]`` the neurons' post-activation values at each token.
        selected: ``[T, k]`` each text's neuron indices into ``M`` (:func:`select_neurons`).

    Returns:
        ``[B, N, T]``.
    """
    n_texts, k = selected.shape
    # A dense [M, T] averaging matrix: gathering [B, N, T, k] instead would hold 200 values per
    # token and class (640 MB for ImageNet's 1,000 classes on a batch of 16 ViT-B-32 images).
    weights = activations.new_zeros(activations.shape[-1], n_texts)
    columns = torch.arange(n_texts, device=selected.device).expand(k, n_texts)
    weights[selected.T.to(weights.device), columns.to(weights.device)] = 1.0 / k
    return activations @ weights


class NeuronActivationMap(_PatchMapAttribution):
    """The neurons' segmentation map: per text, the mean activation at each patch of the
    ``top_neurons`` neurons whose second-order effect is most aligned with the text (the
    authors' ``compute_segmentation.py``: 200 neurons of ViT-B-32's MLP layers 8-10).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        reports: one :class:`~captum_clipspan.NeuronReport` per MLP layer (or one report), from
            :meth:`NeuronLens.fit <captum_clipspan.NeuronLens.fit>` on this model; the neurons of
            every report compete together.
        top_neurons: neurons averaged per text (the authors' 200).

    Raises:
        TypeError: ``reports`` that are not neuron reports.
        ValueError: no reports, two reports of one layer, a report of another model or of
            another joint-space width, a report without components, or ``top_neurons`` outside
            ``1..M`` (``M`` the reports' neurons together).

    Examples::

        >>> from captum_clipspan.attr.neurons import NeuronActivationMap
        >>> reports = [cs.NeuronLens(clip, layer, bank="general").fit(reference_images)
        ...            for layer in (8, 9, 10)]
        >>> maps = NeuronActivationMap(clip, reports).attribute(
        ...     images, texts=zero_shot_classifier, target=labels, interpolate=True)  # [B, 1, H, W]
        >>> smooth = NoiseTunnel(NeuronActivationMap(clip, reports)).attribute(
        ...     images, nt_samples=8, texts=["a dog"])
    """

    needs_texts = True

    def __init__(self, clip: HookedCLIP, reports: NeuronReport | Sequence[NeuronReport],
                 top_neurons: int = 200) -> None:
        super().__init__(clip)
        reports = _check_reports(clip, reports)
        self.layers = [report.layer for report in reports]
        self.neurons = [report.neurons.long().cpu() for report in reports]
        self.components = torch.cat([report.component.detach().float().cpu()
                                     for report in reports])
        total = self.components.shape[0]
        if (isinstance(top_neurons, bool) or not isinstance(top_neurons, numbers.Integral)
                or not 1 <= top_neurons <= total):
            raise ValueError(f"top_neurons must be an int in 1..{total} (the reports' neurons "
                             f"together), got {top_neurons!r}.")
        self.top_neurons = int(top_neurons)

    def _activations(self, inputs: Tensor) -> Tensor:
        """``[B, N, M]`` the reports' neurons' post-activations, layer after layer."""
        names = [f"blocks.{layer}.mlp.hook_post" for layer in self.layers]
        with torch.no_grad():
            _, cache = self.clip.visual.run_with_cache(inputs, names_filter=names)
        dtype = compute_dtype(self.clip.dtype)
        return torch.cat([cache[name][..., neurons.to(cache[name].device)].to(dtype)
                          for name, neurons in zip(names, self.neurons, strict=True)], dim=-1)

    def _maps(self, inputs: Tensor, resolved: ResolvedTexts) -> Tensor:
        activations = self._activations(inputs)
        texts = resolved.text_embeddings.to(device=activations.device, dtype=activations.dtype)
        selected = select_neurons(self.components.to(texts), texts, self.top_neurons)
        per_token = resolved.select(neuron_maps(activations, selected))  # [B, N, U] or [B, N]
        per_token = per_token[:, None] if resolved.columns is not None else per_token.mT
        return patch_grid(per_token, self.clip.visual).to(self.clip.dtype)


def _check_reports(clip: HookedCLIP, reports: NeuronReport | Sequence[NeuronReport]
                   ) -> list[NeuronReport]:
    """The reports as a list, each checked against the model (see the class's Raises)."""
    reports = [reports] if not isinstance(reports, Sequence) else list(reports)
    if not reports:
        raise ValueError("reports is empty; give one NeuronReport per MLP layer "
                         "(cs.NeuronLens(clip, layer).fit(images)).")
    vit = clip.visual
    for report in reports:
        if not all(hasattr(report, name) for name in ("layer", "neurons", "component",
                                                      "check_model")):
            raise TypeError(f"reports must be NeuronReports (cs.NeuronLens(clip, layer)"
                            f".fit(images)), got {type(report).__name__}.")
        report.check_model(clip)
        component = report.component
        if not isinstance(component, Tensor) or component.dim() != 2 or (
                component.shape[0] != len(report.neurons)) or not component.abs().sum() > 0:
            raise ValueError(f"the report of layer {report.layer} has no principal components "
                             "(component must be [n, E] with a nonzero row per neuron read); "
                             "fit it with cs.NeuronLens(clip, layer).fit(images).")
        if component.shape[1] != clip.embed_dim:
            raise ValueError(f"the report of layer {report.layer} has components of width "
                             f"{component.shape[1]}; this model's joint space has width "
                             f"{clip.embed_dim}.")
        if not 0 <= report.layer < vit.n_layers or not vit.blocks[report.layer].mlp.has_neurons:
            raise ValueError(f"layer {report.layer} of this tower has no MLP neurons to read.")
        if len(report.neurons) and int(report.neurons.max()) >= vit.blocks[report.layer].mlp.d_mlp:
            raise ValueError(f"the report of layer {report.layer} reads neuron "
                             f"{int(report.neurons.max())}; that MLP has "
                             f"{vit.blocks[report.layer].mlp.d_mlp} neurons.")
    layers = [report.layer for report in reports]
    if len(set(layers)) != len(layers):
        raise ValueError(f"two reports of one layer (layers {layers}); give one per MLP layer.")
    return reports
