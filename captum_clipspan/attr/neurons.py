"""Effects of one MLP layer's neurons on the image-text similarity: second order (through later
heads, Gandelsman et al., ICLR 2025) or first order (direct)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

from captum.log import log_usage
from torch import Tensor

from ..decomposition import decompose
from ..decomposition.second_order import ORDERS, neuron_effects
from ..hooked.clip import HookedCLIP
from ..validation import resolve_layer
from .base import ClipSpanAttribution, ResolvedTexts, TargetType, TextsType

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
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
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
