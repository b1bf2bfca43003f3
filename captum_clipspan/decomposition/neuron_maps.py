"""MLP neurons' first- and second-order effects on the image embedding (Gandelsman, Efros and
Steinhardt, "Interpreting the Second-Order Effects of Neurons in CLIP", ICLR 2025).

Neuron ``n`` of MLP layer ``l`` writes ``q_{n,i} w_n`` at token ``i``: ``q = p / (sigma tau)`` its
activation over the per-token scales of the MLP's own norms (sub-LN, post-norm; ones without),
``w_n`` its out-projection row with those norms' weights, centering and LayerScale folded in
(:func:`neuron_output_weights`). Its *first-order* effect is that write read out directly; its
*second-order* effect is the write carried by every later head's value path to the output,

    phi_n = sum_{l' > l} sum_h sum_g r_{l',h,g,n} (w_n R_{l',h,g}),
    r_{l',h,g,n} = sum_i alpha_{l',h,g,i} q_{n,i},

with ``alpha`` the later head's attention pattern at the pool's rows weighted by ``omega`` (per
pool head ``g``) and divided by ``ln1``'s scale at token ``i``, and ``R`` the image-independent map
through ``ln1``'s weight (and centering), ``W_V^h``, the head's output map and the readout. The
maps ``w_n R`` (``[G, H, n, X]``) are built once per model and layer and kept
(:func:`value_path_maps`); per image only ``r`` (``[B, G, H, n]``) is computed, never a
``[B, N, n, D]`` tensor. The MLP's bias (and the constants of its norms) enters as two more rows of
``w`` ("pseudo-neurons"), so that the neurons plus the bias add up exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..validation import (
    check_choice,
    check_eval_mode,
    check_indices,
    check_text_embeddings,
    resolve_layer,
    resolve_texts,
)
from .capture import CAPTURE_BUDGET, _Capture, _row_weights, capture_bytes_per_image
from .consistency import user_hooks
from .core import _bias_term, _row_omega
from .readout import (
    NormWeights,
    ReadoutMap,
    attention_constant,
    head_output_weights,
    norm_after,
    pool_rows,
    readout_constant,
)
from .terms import CONVENTIONS
from .weights import (
    _cached,
    _detached,
    _head_output,
    cached_readout_map,
    compute_dtype,
    norm_weights,
    readout_weights,
)

if TYPE_CHECKING:
    from ..hooked.vit import HookedViT

ORDERS = ("second", "first")


@dataclass
class NeuronEffects:
    """Per-neuron effects of one MLP layer on a batch of image embeddings.

    ``X`` is the joint-space width ``E``, or the number of texts ``T``; ``n_s`` the number of
    selected neurons.

    Attributes:
        neurons: ``[B, n_s, X]`` each selected neuron's effect.
        bias: ``[B, X]`` the MLP's bias share (its out-projection bias and norm constants, through
            the same paths), ``"centered"`` only; in ``"reference"`` it is spread equally over the
            layer's neurons with the later layers' and the readout's constants.
        indices: ``[n_s]`` the neuron indices.
        layer: the MLP layer.
        order: ``"second"`` (through later heads) or ``"first"`` (direct).
        convention: ``"reference"`` or ``"centered"``.
        normalized: whether every effect was divided by the embedding's norm.
        text_embeddings: ``[T, E]`` the texts the effects were projected on, or ``None``.
    """

    neurons: Tensor
    bias: Tensor | None
    indices: Tensor
    layer: int
    order: str
    convention: str
    normalized: bool
    text_embeddings: Tensor | None = None

    def total(self) -> Tensor:
        """``[B, X]`` the selected neurons' effects plus the bias share."""
        total = self.neurons.sum(dim=1)
        return total if self.bias is None else total + self.bias


def concatenate_effects(parts: Sequence[NeuronEffects]) -> NeuronEffects:
    """Join the effects of consecutive batches along the batch dimension."""
    first = parts[0]
    values = {f.name: getattr(first, f.name) for f in fields(first)}
    values["neurons"] = torch.cat([p.neurons for p in parts])
    values["bias"] = None if first.bias is None else torch.cat([p.bias for p in parts])
    return NeuronEffects(**values)


# The math, on tensors -------------------------------------------------------------------------

def neuron_output_weights(W_out: Tensor, layer_scale: Tensor | None,  # noqa: N803
                          inner_norm: NormWeights | None,
                          out_norm: NormWeights | None = None) -> Tensor:
    """``[n, D]`` what each hidden unit writes into the residual stream per unit of ``q``.

    The MLP's own norms are affine per token given their scales, exactly as for a head
    (:func:`head_output_weights` with heads of width one): the weight and centering of a norm
    over the hidden units (sub-LN) and of a post-norm fold into the rows, the scales stay in ``q``.

    Args:
        W_out: ``[n, D]`` the out-projection's rows.
        layer_scale: ``[D]`` LayerScale after the MLP, or ``None``.
        inner_norm: the norm over the hidden units, or ``None``.
        out_norm: the norm on the MLP's output, or ``None``.
    """
    return head_output_weights(W_out[:, None], layer_scale, inner_norm, out_norm)[:, 0]


def neuron_units(W_out: Tensor, b_out: Tensor, layer_scale: Tensor | None,  # noqa: N803
                 inner_norm: NormWeights | None, out_norm: NormWeights | None) -> Tensor:
    """``[n + 2, D]``: :func:`neuron_output_weights`, then the MLP's constant in two rows, the
    part divided by the post-norm's scale and the part that is not (:func:`attention_constant`).
    Their activations are ``1 / tau_i`` and ``1`` (:func:`unit_activations`)."""
    scaled, plain = attention_constant(W_out[:, None], b_out, layer_scale, inner_norm, out_norm)
    rows = neuron_output_weights(W_out, layer_scale, inner_norm, out_norm)
    return torch.cat([rows, scaled[None], plain[None]])


def unit_activations(post: Tensor, inner_scale: Tensor | None,
                     out_scale: Tensor | None) -> Tensor:
    """``[B, M, n + 2]`` the activations of :func:`neuron_units` at ``M`` token rows.

    Args:
        post: ``[B, M, n]`` hidden units ``p`` (``hook_post``).
        inner_scale: ``[B, M, 1]`` the sub-LN's scale ``sigma`` (``mlp.ln.hook_scale``) or ``None``.
        out_scale: ``[B, M, 1]`` the post-norm's scale ``tau`` (``mlp.ln_out.hook_scale``) or
            ``None``.
    """
    ones = post.new_ones(*post.shape[:-1], 1)
    tau = ones if out_scale is None else out_scale
    sigma = ones if inner_scale is None else inner_scale
    return torch.cat([post / (sigma * tau), 1 / tau, ones], dim=-1)


def value_path_maps(units: Tensor, ln1: NormWeights | None, W_V: Tensor,  # noqa: N803
                    head_out: Tensor, readout: ReadoutMap, center: bool) -> Tensor:
    """``[G, H, K, X]`` each residual-stream row carried by each head's value path to the output.

    Row ``k`` enters through ``ln1``'s weight (and its centering when ``center``), the head's
    value projection, its output map (out-projection, sub-LN, post-norm, LayerScale folded) and
    the readout (one branch per pool head ``g``); ``ln1``'s scale and the pattern are per image
    and stay outside.

    Args:
        units: ``[K, D]`` rows written into the residual stream.
        ln1: the later layer's attention norm, or ``None`` (post-norm blocks).
        W_V: ``[H, D, d]`` its value projection.
        head_out: ``[H, d, D]`` from :func:`head_output_weights`.
        readout: the readout as a :class:`ReadoutMap`.
        center: apply ``ln1``'s centering (``"centered"``) or leave it to the shared constant.
    """
    if ln1 is not None:
        units = norm_after(units, NormWeights(ln1.weight, None, ln1.centered and center))
    values = torch.einsum("kD,hDd->hkd", units, W_V)
    return torch.einsum("hkd,ghdx->ghkx", values, readout.fold(head_out))


def pooled_pattern(row_weights: Tensor, pattern_rows: Tensor) -> Tensor:
    """``[B, G, H, N]`` a head's pattern at the pool's rows, weighted: ``sum_r w_{g,r} a_{r,i}``.

    Args:
        row_weights: ``[B, G, R]`` ``omega`` of the pooled rows (with the attention's own
            per-row scales).
        pattern_rows: ``[B, H, R, N]`` the attention pattern's pooled query rows.
    """
    return torch.einsum("bgr,bhrn->bghn", row_weights, pattern_rows)


def second_order_effects(alpha: Tensor, activations: Tensor, maps: Tensor) -> Tensor:
    """``[B, K, X]`` the second-order effects through one later layer, ``sum_{h,g} r w R``.

    Args:
        alpha: ``[B, G, H, N]`` :func:`pooled_pattern` divided by ``ln1``'s scale per token.
        activations: ``[B, N, K]`` :func:`unit_activations` at every token.
        maps: ``[G, H, K, X]`` :func:`value_path_maps`.
    """
    coefficients = torch.einsum("bghn,bnk->bghk", alpha, activations)  # r, [B, G, H, K]
    return torch.einsum("bghk,ghkx->bkx", coefficients, maps)


def first_order_effects(row_weights: Tensor, activations: Tensor, maps: Tensor) -> Tensor:
    """``[B, K, X]`` the direct effects ``sum_g (sum_r omega_{g,r} q_r) w R_g``.

    Args:
        row_weights: ``[B, G, R]`` ``omega`` of the pooled rows.
        activations: ``[B, R, K]`` :func:`unit_activations` at the pooled rows.
        maps: ``[G, K, X]`` each unit through the readout (``ReadoutMap.fold``).
    """
    return torch.einsum("bgk,gkx->bkx", pool_rows(row_weights, activations), maps)


# Maps, built once per model and layer ----------------------------------------------------------

def _texts_key(text_embeddings: Tensor | None) -> str | None:
    if text_embeddings is None:
        return None
    data = text_embeddings.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return hashlib.sha1(data).hexdigest()


def _units(vit: HookedViT, layer: int, dtype: torch.dtype) -> Tensor:
    mlp = vit.blocks[layer].mlp
    return neuron_units(_detached(mlp.W_out, dtype), _detached(mlp.b_out, dtype),
                        _detached(mlp.layer_scale, dtype), norm_weights(mlp.ln, dtype),
                        norm_weights(mlp.ln_out, dtype))


def _second_order_maps(vit: HookedViT, layer: int, later: int, readout: ReadoutMap,
                       center: bool, dtype: torch.dtype) -> Tensor:
    """``[G, H, n + 2, X]`` neuron rows of ``layer`` through layer ``later``'s heads."""
    attn = vit.blocks[later].attn
    return value_path_maps(_units(vit, layer, dtype), norm_weights(vit.blocks[later].ln1, dtype),
                           _detached(attn.W_V, dtype), _head_output(vit, later, dtype), readout,
                           center)


def _constant_maps(vit: HookedViT, later: int, readout: ReadoutMap,
                   dtype: torch.dtype) -> Tensor:
    """``[G, H, 2, X]`` (``"reference"``) layer ``later``'s own value-path constants per head:
    ``ln1``'s bias plus the value bias (weight ``sum_i alpha_i``), and ``-ln1.weight`` (weight
    ``sum_i alpha_i mu_i``, the mean that ``ln1`` removes)."""
    block = vit.blocks[later]
    W_V = _detached(block.attn.W_V, dtype)  # noqa: N806
    b_V = _detached(block.attn.b_V, dtype)  # noqa: N806
    ln1 = norm_weights(block.ln1, dtype)
    bias = torch.zeros(W_V.shape[0], W_V.shape[2], dtype=dtype, device=W_V.device)
    mean = torch.zeros_like(bias)
    if b_V is not None:
        bias = bias + b_V
    if ln1 is not None:
        if ln1.bias is not None:
            bias = bias + torch.einsum("D,hDd->hd", ln1.bias, W_V)
        if ln1.centered:
            weight = ln1.weight if ln1.weight is not None else torch.ones_like(W_V[0, :, 0])
            mean = -torch.einsum("D,hDd->hd", weight, W_V)
    values = torch.stack([bias, mean], dim=1)  # [H, 2, d]
    return torch.einsum("hkd,ghdx->ghkx", values, readout.fold(_head_output(vit, later, dtype)))


# One forward pass --------------------------------------------------------------------------

class _NeuronCapture:
    """The decomposition's readout capture, plus the MLP layer's hidden units (and its norms'
    scales) and, per later layer, ``ln1``'s scales (and means) and the pattern's pooled rows."""

    def __init__(self, vit: HookedViT, layer: int, later: Sequence[int], dtype: torch.dtype,
                 pattern_hooked: dict[int, bool], means: bool) -> None:
        self.vit, self.layer, self.later, self.dtype = vit, layer, tuple(later), dtype
        self.readout = _Capture(vit, "head" if later else "layer", later, dtype, None,
                                pattern_hooked)
        self.store = self.readout.store
        self.pattern_hooked, self.means = pattern_hooked, means
        self.rows = slice(None) if later else vit.pool_rows
        self.query_rows: dict[int, Tensor] = {}

    def save(self, key: str, reduce: Any = None):
        def hook(tensor: Tensor, hook: Any) -> None:
            tensor = tensor[:, self.rows].to(self.dtype)
            self.store[key] = tensor if reduce is None else reduce(tensor)
        return hook

    def save_query_rows(self, layer: int):
        def hook(q: Tensor, hook: Any) -> None:
            self.query_rows[layer] = q[:, self.vit.pool_rows].to(self.dtype)
        return hook

    def pattern_from_keys(self, layer: int):
        def hook(k: Tensor, hook: Any) -> None:
            attn, rows = self.vit.blocks[layer].attn, self.vit.pool_rows
            scores = attn.scores(self.query_rows.pop(layer), k.to(self.dtype), rows=rows)
            self.store[f"pattern.{layer}"] = attn.softmax(scores, self.dtype)
        return hook

    def save_pattern(self, layer: int):
        def hook(pattern: Tensor, hook: Any) -> None:
            self.store[f"pattern.{layer}"] = pattern[:, :, self.vit.pool_rows].to(self.dtype)
        return hook

    def hooks(self) -> list[tuple[str, Any]]:
        vit, mlp = self.vit, f"blocks.{self.layer}.mlp."
        hooks = self.readout.hooks()
        hooks.append((mlp + "hook_post", self.save("post")))
        if vit.blocks[self.layer].mlp.ln.exists:
            hooks.append((mlp + "ln.hook_scale", self.save("inner_scale")))
        if vit.blocks[self.layer].mlp.ln_out.exists:
            hooks.append((mlp + "ln_out.hook_scale", self.save("mlp_out_scale")))
        for later in self.later:
            block, prefix = vit.blocks[later], f"blocks.{later}."
            if block.ln1.exists:
                hooks.append((prefix + "ln1.hook_scale", self.save(f"ln1_scale.{later}")))
                if self.means and block.ln1.centered:
                    hooks.append((prefix + "hook_resid_pre",
                                  self.save(f"ln1_mean.{later}", lambda x: x.mean(-1))))
            if self.pattern_hooked[later]:
                hooks.append((prefix + "attn.hook_pattern", self.save_pattern(later)))
            else:
                hooks.append((prefix + "attn.hook_q", self.save_query_rows(later)))
                hooks.append((prefix + "attn.hook_k", self.pattern_from_keys(later)))
        return hooks


def _bytes_per_image(vit: HookedViT, n_units: int, later: int, dtype: torch.dtype) -> int:
    """What one image holds during :func:`neuron_effects` (an upper bound)."""
    n_tokens, rows = vit.n_tokens, vit.n_pool_rows
    values = n_tokens * (n_units + later) + later * vit.n_heads * rows * n_tokens
    values = values * torch.empty((), dtype=dtype).element_size()
    return values + capture_bytes_per_image(vit, "head" if later else "layer", later, dtype)


# The public functions ------------------------------------------------------------------------

def _resolve_texts(clip: Any, vit: HookedViT, texts: Any) -> Tensor | None:
    if texts is None or isinstance(texts, Tensor) or not hasattr(clip, "encode_text"):
        return None if texts is None else check_text_embeddings(texts, vit.output_dim)
    return resolve_texts(clip, texts)


def _resolve_neurons(neurons: Any, n_units: int, layer: int) -> Tensor:
    if neurons is None:
        return torch.arange(n_units)
    if isinstance(neurons, int) and not isinstance(neurons, bool):
        neurons = [neurons]
    indices = check_indices(neurons, "neurons")
    if len(indices) == 0:
        raise ValueError("neurons is empty; pass at least one index, or None for every neuron.")
    if indices.max() >= n_units:
        raise ValueError(f"neurons index {int(indices.max())} is out of range for MLP layer "
                         f"{layer}, which has {n_units} hidden units (accepted: 0..{n_units - 1}).")
    return indices


def neuron_effects(
    clip: Any,
    images: Tensor,
    layer: int,
    order: str = "second",
    *,
    neurons: int | Sequence[int] | Tensor | None = None,
    texts: Any = None,
    convention: str = "reference",
    normalize: bool = True,
) -> NeuronEffects:
    """First- or second-order effects of one MLP layer's neurons, with the bias's share.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` or :class:`~captum_clipspan.HookedViT`.
        images: ``[B, 3, H, W]`` preprocessed images at the model's input size.
        layer: the MLP layer (negative counts from the end).
        order: ``"second"`` (through every later head's value path) or ``"first"`` (direct).
        neurons: indices of the neurons to report (``None``: all ``n``).
        texts: text embeddings ``[T, E]`` or ``[E]`` (or, with a ``HookedCLIP``, strings or a
            ``ZeroShotClassifier``): the effects are then scores on the texts.
        convention: ``"reference"`` (the authors' code: constants shared, see ``docs/math.md``)
            or ``"centered"`` (each neuron on its own; the bias a separate term).
        normalize: divide by ``||encode_image(x)||``.

    Returns:
        A :class:`NeuronEffects`.

    Raises:
        ValueError: for a model in training mode, a layer without later attention (second
            order), an MLP whose hidden units the tower does not expose, neuron indices out of
            range, texts of the wrong width, or bad arguments.
    """
    vit = getattr(clip, "visual", clip)
    check_choice(order, "order", ORDERS)
    check_choice(convention, "convention", CONVENTIONS)
    check_eval_mode(vit, "dropout makes neuron effects meaningless in training mode")
    vit.check_images(images)
    layer = resolve_layer(layer, vit.n_layers)
    mlp = vit.blocks[layer].mlp
    if not mlp.has_neurons:
        raise ValueError(f"MLP layer {layer} of this {vit.family} tower does not expose its "
                         f"hidden units ({type(mlp.spec.run).__name__} runs whole); neuron effects "
                         "need an fc-act-fc, SwiGLU or GLU MLP.")
    later = tuple(range(layer + 1, vit.n_layers)) if order == "second" else ()
    if order == "second" and not later:
        raise ValueError(f"layer {layer} is the last layer: no attention reads its MLP's output, "
                         f"so it has no second-order effect (accepted: layers 0..{vit.n_layers - 2}"
                         "; first_order works on every layer).")
    indices = _resolve_neurons(neurons, mlp.d_mlp, layer)
    text_embeddings = _resolve_texts(clip, vit, texts)
    dtype = compute_dtype(vit.dtype)
    chunk = max(1, CAPTURE_BUDGET // _bytes_per_image(vit, mlp.d_mlp + 2, len(later), dtype))
    if text_embeddings is not None:
        text_embeddings = text_embeddings.to(vit.device)
    options = dict(order=order, convention=convention, normalize=normalize)
    parts = [_effects(vit, part, layer, later, indices, text_embeddings, dtype, **options)
             for part in images.split(chunk)]
    return parts[0] if len(parts) == 1 else concatenate_effects(parts)


# Hook points whose edits the effects follow: they change the patterns, norm scales or hidden
# units that are read from the run. An edit anywhere else on the way from the MLP's output to the
# embedding (values, head outputs, the residual stream, the pool) is in no map, so it is refused.
FOLLOWED_HOOKS = ("hook_q", "hook_k", "hook_attn_scores", "hook_pattern", "hook_pre",
                  "hook_pre_linear", "hook_post", "hook_scale", "hook_embed", "hook_patch_embed")


def check_followed(hooked: Sequence[str]) -> None:
    """Raise for user hooks whose edits no neuron effect would carry (see ``FOLLOWED_HOOKS``)."""
    foreign = [name for name in hooked if name.rsplit(".", 1)[-1] not in FOLLOWED_HOOKS]
    if foreign:
        raise ValueError(f"hooks on {foreign} may edit the path from the MLP's output to the "
                         "embedding, which the neuron effects' maps do not carry; the effects "
                         f"follow edits of {list(FOLLOWED_HOOKS)} only. Remove the other hooks "
                         "while computing neuron effects.")


def _effects(vit: HookedViT, images: Tensor, layer: int, later: tuple[int, ...], indices: Tensor,
             text_embeddings: Tensor | None, dtype: torch.dtype, order: str, convention: str,
             normalize: bool) -> NeuronEffects:
    centered = convention == "centered"
    with torch.no_grad(), vit.lock:
        hooked = user_hooks(vit)
        check_followed(hooked)
        pattern_hooked = {l: any(name.startswith(f"blocks.{l}.attn.hook_") and name.endswith(
            ("hook_pattern", "hook_attn_scores")) for name in hooked) for l in later}
        weights = readout_weights(vit, dtype)
        term_map = cached_readout_map(vit, weights, centered, dtype, text_embeddings)
        capture = _NeuronCapture(vit, layer, later, dtype, pattern_hooked, not centered)
        with vit.hooks(fwd_hooks=capture.hooks()):
            vit(images)
        store = capture.store
        pool_weights, post_scale = _row_weights(vit, store, store["resid"])
        omega = pool_weights / post_scale[:, None, None]  # [B, G, R]
        if "pre_scale" in store:
            omega = omega / store["pre_scale"].reshape(omega.shape[0], 1, -1)
        n_units = vit.blocks[layer].mlp.d_mlp
        every = len(indices) == n_units and bool((indices == torch.arange(n_units)).all())
        columns = slice(None) if every else torch.cat([indices, torch.tensor([-2, -1])]).to(
            vit.device)  # the selected neurons and the two bias rows
        activations = unit_activations(store["post"], store.get("inner_scale"),
                                       store.get("mlp_out_scale"))[..., columns]
        key = (layer, order, convention, dtype, _texts_key(text_embeddings))
        if order == "first":
            maps = _cached(vit, key, lambda: term_map.fold(_units(vit, layer, dtype)[:, None])[
                :, :, 0])
            effects = first_order_effects(omega, activations, maps[:, columns])
            constant = 0
        else:
            effects, constant = _through_later_heads(vit, capture, omega, activations, columns,
                                                     term_map, key, centered)
        neurons, bias = effects[:, :-2], effects[:, -2:].sum(dim=1)
        if not centered:
            residual = pool_rows(omega.sum(-1, keepdim=True) if store["resid"].shape[1] == 1
                                 else omega, store["resid"])
            shared = (cached_readout_map(vit, weights, True, dtype, text_embeddings)(residual)
                      - term_map(residual)
                      + readout_constant(weights, pool_weights, post_scale, text_embeddings)
                      ) / (2 * vit.n_layers + 1)
            if order == "second":  # each later layer's share of the readout's constant
                shared = shared * sum(1 / (2 * l + 1) for l in later)
            neurons = neurons + ((bias + constant + shared) / n_units)[:, None]
            bias = None
        if normalize:
            norm = capture.readout.scratch["image_embed"].to(dtype).norm(dim=-1)
            neurons = neurons / norm[:, None, None]
            bias = None if bias is None else bias / norm[:, None]
    return NeuronEffects(neurons=neurons, bias=bias, indices=indices, layer=layer, order=order,
                         convention=convention, normalized=normalize,
                         text_embeddings=text_embeddings)


def _through_later_heads(vit: HookedViT, capture: _NeuronCapture, omega: Tensor,
                         activations: Tensor, columns: Tensor | slice, term_map: ReadoutMap,
                         key: tuple, centered: bool) -> tuple[Tensor, Tensor | int]:
    """``([B, K, X], constant)``: the selected units' effects through every later head, and in
    ``"reference"`` the later layers' own constants that the neurons share (``[B, X]``)."""
    store, dtype, layer = capture.store, capture.dtype, capture.layer
    effects, constant = 0, 0
    for later in capture.later:
        row_omega = _row_omega(capture.readout, omega, later)
        pattern = pooled_pattern(row_omega, store.pop(f"pattern.{later}"))  # [B, G, H, N]
        alpha = pattern
        if f"ln1_scale.{later}" in store:
            alpha = pattern / store[f"ln1_scale.{later}"][:, None, None, :, 0]
        maps = _cached(vit, (*key, later), lambda l=later: _second_order_maps(
            vit, layer, l, term_map, centered, dtype))
        effects = effects + second_order_effects(alpha, activations, maps[:, :, columns])
        if centered:
            continue
        constants = _cached(vit, (*key, later, "constant"),
                            lambda l=later: _constant_maps(vit, l, term_map, dtype))
        mean = store.get(f"ln1_mean.{later}")
        # ln1's bias and the value bias are not divided by ln1's scale; the mean it removes is.
        weights = torch.stack([pattern.sum(-1), (alpha * mean[:, None, None]).sum(-1)
                               if mean is not None else torch.zeros_like(alpha[..., 0])], -1)
        own = torch.einsum("bghk,ghkx->bx", weights, constants)
        own = own + _bias_term(vit, capture.readout, omega, later, term_map)
        constant = constant + own / (2 * later + 1)
    return effects, constant


def second_order(clip: Any, images: Tensor, layer: int, *,
                 neurons: int | Sequence[int] | Tensor | None = None, texts: Any = None,
                 convention: str = "reference", normalize: bool = True) -> Tensor:
    """Second-order effects of one MLP layer's neurons: each neuron's output carried by every
    later attention head's value path to the image embedding (patterns and norm scales read from
    the forward pass).

    In ``"centered"`` convention the neurons plus the MLP bias's share
    (:func:`neuron_effects`' ``bias``) sum exactly to the part of the later heads' direct terms
    that flows from this MLP's output. In ``"reference"`` convention, ``100 *`` the result is the
    authors' ``SecondOrderPrsNeurons`` (``compute_second_order_neuron_prs.py``): all later layers
    and heads summed, constants shared equally, divided by the embedding's norm.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` or :class:`~captum_clipspan.HookedViT`.
        images: ``[B, 3, H, W]`` preprocessed images.
        layer: the MLP layer; it needs a later attention layer (not the last layer).
        neurons: neuron indices (``None``: all ``n``).
        texts: text embeddings ``[T, E]``/``[E]`` (or strings, with a ``HookedCLIP``).
        convention: ``"reference"`` (default) or ``"centered"``.
        normalize: divide by ``||encode_image(x)||`` (default).

    Returns:
        ``[B, n, E]``, or ``[B, n, T]`` with texts.

    Examples::

        >>> effects = cs.second_order(clip, images, layer=9)              # [B, 3072, 512]
        >>> scores = cs.second_order(clip, images, 9, neurons=[1, 7], texts=["a dog"])  # [B, 2, 1]
    """
    return neuron_effects(clip, images, layer, "second", neurons=neurons, texts=texts,
                          convention=convention, normalize=normalize).neurons


def first_order(clip: Any, images: Tensor, layer: int, *,
                neurons: int | Sequence[int] | Tensor | None = None, texts: Any = None,
                convention: str = "reference", normalize: bool = True) -> Tensor:
    """First-order (direct) effects of one MLP layer's neurons, ``p_n w_n`` through the readout.

    The neurons plus the bias's share (``"centered"``) or the neurons alone (``"reference"``,
    where each carries ``1 / n`` of the bias and of the layer's share of the readout's constant)
    sum exactly to the layer's term ``mlps[:, layer]`` of :func:`~captum_clipspan.decompose`.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` or :class:`~captum_clipspan.HookedViT`.
        images: ``[B, 3, H, W]`` preprocessed images.
        layer: the MLP layer.
        neurons: neuron indices (``None``: all ``n``).
        texts: text embeddings ``[T, E]``/``[E]`` (or strings, with a ``HookedCLIP``).
        convention: ``"reference"`` (default) or ``"centered"``.
        normalize: divide by ``||encode_image(x)||`` (default).

    Returns:
        ``[B, n, E]``, or ``[B, n, T]`` with texts.

    Examples::

        >>> direct = cs.first_order(clip, images, layer=9)                 # [B, 3072, 512]
    """
    return neuron_effects(clip, images, layer, "first", neurons=neurons, texts=texts,
                          convention=convention, normalize=normalize).neurons
