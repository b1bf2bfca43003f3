"""Exact direct-effect decomposition of a CLIP-ViT image embedding (Gandelsman et al., Sec. 3-4).

The residual stream at every token is a sum of terms,

    x_i = z_0,i + sum_l [ sum_h sum_j c_{l,h,i,j} + b_l ] + sum_l m_l,i,

and the readout is linear in ``x`` once its norms' scales and its pool's weights are read from the
real forward pass (:mod:`.readout`). Only the pooled query rows of each layer's attention pattern
are used; the paper's code builds a ``[B, N, N, H, D]`` tensor instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..validation import check_choice, check_eval_mode, check_text_embeddings, resolve_layers
from .capture import _Capture, _row_weights, images_per_pass
from .consistency import check_consistent, user_hooks
from .readout import (
    ReadoutMap,
    ReadoutWeights,
    after_pool,
    in_text_columns,
    pool_rows,
    readout_constant,
)
from .terms import CONVENTIONS, GRANULARITIES, Decomposition, concatenate
from .weights import (
    _cached,
    _head_output,
    _weights_version,
    attention_constants,
    cached_readout_map,
    compute_dtype,
    readout_weights,
)

if TYPE_CHECKING:
    from ..hooked.vit import HookedViT


def decompose(
    clip: Any,
    images: Tensor,
    granularity: str = "head",
    convention: str = "reference",
    layers: int | Sequence[int] | None = None,
    normalize: bool = True,
    text_embeddings: Tensor | None = None,
) -> Decomposition:
    """Split image embeddings exactly into direct contributions of layers, heads and tokens.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` or :class:`~captum_clipspan.HookedViT`.
        images: ``[B, 3, H, W]`` preprocessed images at the model's input size.
        granularity: ``"layer"`` (embedding, MSA and MLP layers), ``"head"`` (adds ``heads``) or
            ``"token"`` (adds ``heads`` and ``tokens``, per image token).
        convention: ``"reference"`` (default) reproduces the paper's code: the final norm's mean
            and bias (and every other readout constant) are shared equally by the ``2L + 1``
            residual terms and, inside an attention layer, by its ``N * H`` (token, head) cells
            together with the out-projection bias. ``"centered"`` centers every term on its own and
            keeps the out-projection biases (``attn_biases``) and the readout's constant
            (``ln_bias``) as separate terms.
        layers: layers for ``heads``/``tokens`` (``None``: all). Whole-layer terms always cover
            every layer, so the decomposition stays complete.
        normalize: divide every term by ``||encode_image(x)||`` so that they sum to the unit-norm
            embedding (and their dot products with unit texts sum to the cosine similarity).
        text_embeddings: optional ``[T, E]`` (or ``[E]``); every term is then contracted with the
            texts at once (``X = T``), and no ``[..., E]`` per-token tensor is ever built.

    Returns:
        A :class:`Decomposition`; ``total()`` equals ``image_embed`` (fp64: ~1e-12, fp32: ~1e-6).

    Raises:
        ValueError: for a model in training mode, bad arguments, or a hook on the model that
            changed the forward pass in a way no term carries (the message names the hooks).

    Examples::

        >>> parts = cs.decompose(clip, images, granularity="token", layers=[-2, -1])
        >>> parts.heads.shape         # [B, 2, H, E]
        >>> (parts.total() - parts.image_embed).abs().max()   # ~1e-7 in fp32
    """
    vit = getattr(clip, "visual", clip)
    check_choice(granularity, "granularity", GRANULARITIES)
    check_choice(convention, "convention", CONVENTIONS)
    check_eval_mode(vit, "patch dropout and dropout make the decomposition meaningless in "
                    "training mode")
    vit.check_images(images)
    selected = resolve_layers(layers, vit.n_layers)
    dtype = compute_dtype(vit.dtype)
    chunk = images_per_pass(vit, granularity, len(selected), dtype)
    if len(images) > chunk:  # bounded memory: the captured rows of one chunk at a time
        options = dict(granularity=granularity, convention=convention, layers=layers,
                       normalize=normalize, text_embeddings=text_embeddings)
        return concatenate([decompose(clip, part, **options) for part in images.split(chunk)])
    if text_embeddings is not None:
        text_embeddings = check_text_embeddings(text_embeddings, vit.output_dim).to(vit.device)
    with torch.no_grad(), vit.lock:
        hooked = user_hooks(vit)
        pattern_hooked = {l: any(name.startswith(f"blocks.{l}.attn.hook_") and name.endswith(
            ("hook_pattern", "hook_attn_scores")) for name in hooked) for l in range(vit.n_layers)}
        weights = readout_weights(vit, dtype)
        centered = convention == "centered"
        rows_through_map = len(images) * (3 * vit.n_layers + 1 + (
            len(selected) * vit.n_heads if granularity != "layer" else 0))
        version = _weights_version(vit)
        term_map = cached_readout_map(
            vit, weights, centered, dtype, text_embeddings,
            vit.n_tokens * rows_through_map if granularity == "token" else rows_through_map,
            version)
        head_outs = {layer: _head_output(vit, layer, dtype) for layer in selected}
        # Through an attention pool: each head's output projection folded with the pool's value
        # map (two of a head term's three contractions), kept per weight version, [G, L_s, H, d, V].
        head_values = _cached(vit, ("head_values", tuple(selected), centered, dtype),
                              lambda: torch.stack([term_map.fold_values(head_outs[layer])
                                                   for layer in selected], 1), version) if (
            term_map.value is not None and granularity != "layer") else None
        token_maps = ((lambda layer: term_map.fold(head_outs[layer]))
                      if granularity == "token" else None)
        capture = _Capture(vit, granularity, selected, dtype, token_maps, pattern_hooked)
        with capture.attached():
            vit(images)
        parts = _assemble(vit, capture, weights, term_map, head_outs, convention, normalize,
                          text_embeddings, head_values, version)
    if hooked:
        check_consistent(parts, hooked, vit.dtype)  # the tolerance of the model's own precision
    return parts


def decompose_batches(clip: Any, images: Tensor, batch_size: int = 8,
                      **kwargs: Any) -> Iterator[Decomposition]:
    """Stream :func:`decompose` over ``images`` in chunks of ``batch_size``, one
    :class:`Decomposition` per chunk, so memory stays that of one chunk (token granularity on a
    large batch needs it: its output is ``[B, L_s, N, H, E]``).

    Examples::

        >>> for parts in cs.decompose_batches(clip, images, 8, granularity="token"):
        ...     maps.append(parts.tokens.sum(dim=(1, 3)) @ texts.T)   # reduce, then drop
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    for chunk in images.split(batch_size):
        yield decompose(clip, chunk, **kwargs)


def _assemble(vit: HookedViT, capture: _Capture, weights: ReadoutWeights, term_map: ReadoutMap,
              head_outs: dict[int, Tensor], convention: str, normalize: bool,
              text_embeddings: Tensor | None, head_values: Tensor | None,
              version: tuple) -> Decomposition:
    store, n_layers, dtype = capture.store, vit.n_layers, capture.dtype
    pool_weights, post_scale = _row_weights(vit, store, store["resid"])
    omega = pool_weights / post_scale[:, None, None]
    if "pre_scale" in store:
        omega = omega / store["pre_scale"].reshape(omega.shape[0], 1, -1)
    reduced_omega = omega.sum(dim=-1, keepdim=True)  # pairs with rows averaged during the pass

    def pooled(key: str) -> Tensor:
        rows = store[key]
        return pool_rows(reduced_omega if rows.shape[1] == 1 else omega, rows)

    # Every whole-layer term through the readout at once: [B, G, K, D] -> [B, K, X].
    mlp_keys = [f"mlp.{l}" for l in range(n_layers)]
    attn_keys = [f"attn.{l}" for l in range(n_layers) if f"attn.{l}" in store]
    whole = term_map(torch.stack([pooled(key) for key in ["embed", *mlp_keys, *attn_keys]], 2))
    embed, mlps = whole[:, 0], whole[:, 1:n_layers + 1]
    bias_terms = term_map(_bias_rows(vit, capture, omega, range(n_layers), version))  # [B, L, X]

    heads = tokens = attn_biases = ln_bias = None
    layer_index = list(capture.layers)
    if capture.granularity != "layer":
        heads = _head_terms(capture, omega, reduced_omega, head_outs, term_map, head_values)
    if capture.granularity == "token":
        tokens = _fill_token_terms(capture, omega, reduced_omega)
    stored = dict(zip(attn_keys, whole[:, n_layers + 1:].unbind(1), strict=True))
    # A selected layer's attention is its heads plus the part in no head (its output is not
    # kept during the pass: one tensor per layer less to hold).
    attns = torch.stack([stored[f"attn.{l}"] if f"attn.{l}" in stored
                         else heads[:, layer_index.index(l)].sum(dim=1) + bias_terms[:, l]
                         for l in range(n_layers)], 1)

    constant = readout_constant(weights, pool_weights, post_scale, text_embeddings)
    pool_mlp = None
    if "pool_mlp" in store:
        mlp_out = torch.einsum("q,bqd->bd", vit.pool.query_weights(store["pool_mlp"]),
                               store["pool_mlp"])
        pool_mlp = after_pool(weights, mlp_out, post_scale, text_embeddings)
    if convention == "reference":
        # The constant plus what centering would have removed from every term, shared equally.
        residual = pooled("resid")
        centered_map = cached_readout_map(vit, weights, True, dtype, text_embeddings,
                                          version=version)
        shared = (centered_map(residual) - term_map(residual) + constant) / (2 * n_layers + 1)
        embed = embed + shared
        mlps = mlps + shared[:, None]
        attns = attns + shared[:, None]
        if heads is not None:
            layer_constant = bias_terms[:, layer_index] + shared[:, None]  # [B, L_s, X]
            heads = heads + layer_constant[:, :, None] / vit.n_heads
            if tokens is not None:
                n_cells = vit.n_heads * tokens.shape[2]
                tokens.add_(layer_constant[:, :, None, None] / n_cells)
    else:
        attn_biases = bias_terms
        ln_bias = constant

    image_embed = capture.scratch["image_embed"].to(dtype)
    norm = image_embed.norm(dim=-1)
    image_embed = in_text_columns(image_embed, text_embeddings)
    parts = dict(embed=embed, attns=attns, mlps=mlps, heads=heads, tokens=tokens,
                 attn_biases=attn_biases, ln_bias=ln_bias, pool_mlp=pool_mlp,
                 image_embed=image_embed)
    if normalize:
        parts = {k: None if v is None else v / norm.reshape(-1, *[1] * (v.dim() - 1))
                 for k, v in parts.items() if k != "tokens"}
        if tokens is not None:
            parts["tokens"] = tokens.div_(norm.reshape(-1, 1, 1, 1, 1))
    return Decomposition(**parts, layers=tuple(layer_index), convention=convention,
                         normalized=normalize, text_embeddings=text_embeddings)


def _row_omega(capture: _Capture, omega: Tensor, layer: int,
               scales: tuple[str, ...] = ("z_scale", "out_scale")) -> Tensor:
    """The row weights of one layer's heads, divided by the per-row scales of its norms inside
    attention (sub-LN, post-norm), if any."""
    for name in scales:
        scale = capture.row_scale(name, layer)
        if scale is not None:
            omega = omega / scale.reshape(omega.shape[0], 1, -1)
    return omega


def _bias_rows(vit: HookedViT, capture: _Capture, omega: Tensor, layers: Sequence[int],
               version: tuple | None = None) -> Tensor:
    """``[B, G, L, D]`` the part of each attention layer in no head, pooled (before the
    readout)."""
    constants = attention_constants(vit, capture.dtype, version)[list(layers)]  # [L, 2, D]
    rows = omega.sum(dim=-1)[..., None, None] * constants[:, 1]  # plain: [B, G, L, D]
    for index, layer in enumerate(layers):
        if capture.row_scale("out_scale", layer) is not None:  # scaled by the out-norm's rows
            rows[:, :, index] += _row_omega(capture, omega, layer, ("out_scale",)).sum(
                dim=-1)[..., None] * constants[index, 0]
    return rows


def _bias_term(vit: HookedViT, capture: _Capture, omega: Tensor, layer: int,
               term_map: ReadoutMap) -> Tensor:
    """``[B, X]`` the part of one attention layer in no head."""
    return term_map(_bias_rows(vit, capture, omega, [layer])[:, :, 0])


def _head_terms(capture: _Capture, omega: Tensor, reduced_omega: Tensor,
                head_outs: dict[int, Tensor], term_map: ReadoutMap,
                head_values: Tensor | None = None) -> Tensor:
    """``[B, L_s, H, X]`` the head terms of the selected layers (``head_values``: ``[G, L_s, H,
    d, V]``, the heads' outputs already folded with an attention pool's values,
    :meth:`ReadoutMap.fold_values`), mapped through the readout at once."""
    pooled = []
    for layer in capture.layers:
        z = capture.store[f"z.{layer}"]  # [B, R, H, d], or [B, 1, H, d] when averaged in the pass
        weights = (_row_omega(capture, omega, layer) if z.shape[1] == capture.n_rows
                   else reduced_omega)
        pooled.append(pool_rows(weights, z))  # [B, G, H, d]
    if head_values is not None:
        values = torch.einsum("bglhk,glhkv->bglhv", torch.stack(pooled, 2), head_values)
        return term_map.after_values(values)
    return term_map(torch.stack([torch.einsum("bghk,hkD->bghD", rows, head_outs[layer])
                                 for rows, layer in zip(pooled, capture.layers, strict=True)], 2))


def _fill_token_terms(capture: _Capture, omega: Tensor, reduced_omega: Tensor) -> Tensor:
    """``[B, L_s, N, H, X]`` the token terms, completed in place in the capture's buffer: a
    layer mapped during the pass takes the image's factor, the others are mapped now that the
    row weights are known, one layer's pattern at a time."""
    store = capture.store
    for index, layer in enumerate(capture.layers):
        if f"values.{layer}" not in store:  # mapped during the pass, up to the image's factor
            store["tokens"][:, index].mul_(reduced_omega.sum(dim=1)[:, 0, None, None, None])
            continue
        pooled_pattern = capture.pooled_pattern(layer, _row_omega(capture, omega, layer))
        capture.map_tokens(layer, pooled_pattern, store.pop(f"values.{layer}"))
    return store["tokens"]
