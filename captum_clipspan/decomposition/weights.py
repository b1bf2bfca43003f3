"""Reading the readout's and the heads' weights through the hooked tower's accessors, and the
per-model cache of maps folded from them (kept per weight version)."""

from __future__ import annotations

import dataclasses
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .readout import (
    NormWeights,
    ReadoutMap,
    ReadoutWeights,
    attention_constant,
    head_output_weights,
    readout_map,
)

if TYPE_CHECKING:
    from ..hooked.vit import HookedNorm, HookedViT


MAP_CACHE_BUDGET = 1 << 30
"""Bytes of folded maps (the neurons', the heads') kept per model, least recently used first out;
a map larger than this is built for each call instead."""


# Per model: key -> a tensor or a ReadoutMap.
_MAPS: weakref.WeakKeyDictionary[Any, OrderedDict[tuple, Any]] = weakref.WeakKeyDictionary()


def _weights_version(vit: HookedViT) -> tuple:
    """Changes whenever a weight is replaced, moved, converted or edited in place."""
    return tuple((id(p), p.data_ptr(), p._version, p.dtype, p.device)
                 for p in vit.model.parameters())


def _nbytes(value: Any) -> int:
    """Bytes held by a tensor, or by the tensors of a dataclass (a :class:`ReadoutMap`)."""
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if dataclasses.is_dataclass(value):
        return sum(_nbytes(getattr(value, field.name)) for field in dataclasses.fields(value))
    return 0


def _cached(vit: HookedViT, key: tuple, build: Any, version: tuple | None = None) -> Any:
    """``build()``, kept per model while the maps fit in :data:`MAP_CACHE_BUDGET` (``version``:
    :func:`_weights_version` when the caller has read it already this call)."""
    key = (*key, _weights_version(vit) if version is None else version)
    entries = _MAPS.setdefault(vit, OrderedDict())
    if key in entries:
        entries.move_to_end(key)
        return entries[key]
    value = build()
    if _nbytes(value) <= MAP_CACHE_BUDGET:
        entries[key] = value
        while sum(_nbytes(v) for v in entries.values()) > MAP_CACHE_BUDGET:
            entries.popitem(last=False)
    return value


def cached_readout_map(vit: HookedViT, weights: ReadoutWeights, centered: bool,
                       dtype: torch.dtype, text_embeddings: Tensor | None = None,
                       n_rows: int | None = None, version: tuple | None = None) -> ReadoutMap:
    """:func:`~.readout.readout_map` of ``weights`` (read from ``vit`` at ``dtype``), for about
    ``n_rows`` rows (:meth:`~.readout.ReadoutMap.for_rows`); kept per weight version when it
    ends in the joint space (the texts of a call are not kept)."""
    if text_embeddings is not None:
        term_map = readout_map(weights, centered, text_embeddings)
        return term_map if n_rows is None else term_map.for_rows(n_rows)
    version = _weights_version(vit) if version is None else version
    key = ("readout_map", centered, dtype)
    term_map = _cached(vit, key, lambda: readout_map(weights, centered), version)
    if n_rows is None or not term_map.folds_for(n_rows):
        return term_map
    return _cached(vit, (*key, "folded"), lambda: term_map.for_rows(n_rows), version)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in fp32 even for fp16/bf16 models, in fp64 for fp64 models."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _detached(tensor: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A weight read as a constant at the compute dtype (``None`` stays ``None``)."""
    return None if tensor is None else tensor.detach().to(dtype)


def norm_weights(norm: HookedNorm, dtype: torch.dtype) -> NormWeights | None:
    """A hooked norm's weights, or ``None`` when the model has no norm there."""
    if not norm.exists:
        return None
    return NormWeights(_detached(norm.w, dtype), _detached(norm.b, dtype), norm.centered)


def readout_weights(vit: HookedViT, dtype: torch.dtype) -> ReadoutWeights:
    """Gather the readout's tensors through the hooked tower's accessors."""
    final = norm_weights(vit.ln_final, dtype)
    norm_after_pool = vit.final_ln_after_pool
    proj = _detached(vit.proj, dtype)
    pool = vit.pool
    width = pool.W_O.shape[-1] if pool is not None else vit.d_model
    weights = ReadoutWeights(
        pre_norm=None if norm_after_pool else final,
        post_norm=final if norm_after_pool else None,
        proj=proj if proj is not None else torch.eye(width, dtype=dtype, device=vit.device),
        proj_bias=_detached(vit.proj_bias, dtype),
    )
    if pool is not None:
        if pool.ln_k.exists:
            if weights.pre_norm is not None:
                raise ValueError("this tower normalizes its tokens twice before the pool; the "
                                 "decomposition supports one per-token norm.")
            weights.pre_norm = norm_weights(pool.ln_k, dtype)
        weights.value_weight = _detached(pool.W_V, dtype)
        weights.value_bias = _detached(pool.b_V, dtype)
        weights.out_weight = _detached(pool.W_O, dtype)
        weights.out_bias = _detached(pool.b_O, dtype)
        weights.pos_embed = _detached(pool.pos_embed, dtype)
    return weights


def _head_output(vit: HookedViT, layer: int, dtype: torch.dtype) -> Tensor:
    """Each head's map from its attention output to the residual stream in ``layer``,
    ``[H, d, D]`` (:func:`~.readout.head_output_weights` of the layer's weights)."""
    attn = vit.blocks[layer].attn
    return head_output_weights(_detached(attn.W_O, dtype), _detached(attn.layer_scale, dtype),
                               norm_weights(attn.ln, dtype), norm_weights(attn.ln_out, dtype))


def attention_constants(vit: HookedViT, dtype: torch.dtype,
                        version: tuple | None = None) -> Tensor:
    """``[L, 2, D]`` every layer's :func:`_attention_constant` ``(scaled, plain)``, kept per
    weight version."""
    return _cached(vit, ("attention_constants", dtype), lambda: torch.stack([
        torch.stack(_attention_constant(vit, layer, dtype)) for layer in range(vit.n_layers)]),
        version)


def _attention_constant(vit: HookedViT, layer: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The part of ``layer``'s attention output in no head, ``(scaled, plain)`` ``[D]`` each
    (:func:`~.readout.attention_constant` of the layer's weights)."""
    attn = vit.blocks[layer].attn
    return attention_constant(_detached(attn.W_O, dtype), _detached(attn.b_O, dtype),
                              _detached(attn.layer_scale, dtype), norm_weights(attn.ln, dtype),
                              norm_weights(attn.ln_out, dtype))
