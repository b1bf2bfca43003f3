"""What a backend tells the hooked ViT about one tower family: its modules, in a fixed vocabulary.

A backend (``hooked/backends/``) reads one family's module layout (open_clip, timm, transformers)
once and describes it with these dataclasses; :class:`~captum_clipspan.hooked.vit.HookedViT` and the
decomposition only ever see this description. Every ``run`` callable is the backend's own code
path, so the hooked tower's passthrough is bit-identical to the backend's forward; the other
fields are what the split path and the decomposition need (weights as tensors, norms as modules).

Shapes: ``D`` model width, ``H`` heads, ``d`` head width, ``N`` tokens, ``Q`` pool queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

Context = dict[str, Any]


@dataclass
class AttentionSpec:
    """One self-attention layer.

    Attributes:
        n_heads: ``H``.
        d_head: ``d``.
        project: ``(x [B, N, D], context) -> (q, k, v)``, each ``[B, N, H, d]``: projections with
            their biases, then qk-norm and rotary embeddings where the model has them, so that
            ``softmax(q k^T * scale + score_bias)`` is the attention pattern.
        out_weight: ``[D, H * d]`` the out-projection weight (``nn.Linear`` layout).
        out_bias: ``[D]`` or ``None``.
        run: ``(x, context) -> [B, N, D]`` the backend's own attention (before LayerScale).
        qkv_weights: the query, key and value projection weights, each ``[H * d, D]``.
        qkv_biases: their biases, each ``[H * d]`` or ``None``. Both may be zero-argument
            callables: a slice of a fused weight must be taken at use time, because
            ``module.to()`` replaces the parameters' storage.
        scale: the softmax temperature (``d ** -0.5`` unless the model says otherwise).
        score_bias: ``() -> [H, N, N]`` an additive score term (relative positions), or
            ``None``.
        z_norm: a norm over the concatenated head outputs before the out-projection (EVA's
            sub-LN), or ``None``.
        out_norm: a norm on the attention output after the out-projection (post-norm blocks,
            EVA02-E's ``x + norm1(attn(x))``), or ``None``.
        softmax_dtype: the dtype the model takes its softmax in (transformers' eager attention:
            float32), or ``None`` for the scores' own; may be a zero-argument callable.
    """

    n_heads: int
    d_head: int
    project: Callable[[Tensor, Context], tuple[Tensor, Tensor, Tensor]]
    out_weight: Tensor
    out_bias: Tensor | None
    run: Callable[[Tensor, Context], Tensor]
    qkv_weights: tuple[Tensor, ...] | Callable[[], tuple[Tensor, ...]] | None = None
    qkv_biases: tuple[Tensor | None, ...] | Callable[[], tuple[Tensor | None, ...]] = (
        None, None, None)
    scale: float | None = None
    score_bias: Callable[[], Tensor] | None = None
    z_norm: nn.Module | None = None
    out_norm: nn.Module | None = None
    softmax_dtype: torch.dtype | Callable[[], torch.dtype | None] | None = None


@dataclass
class MLPSpec:
    """One MLP, ``out_norm(post(inner_norm(p)))`` of hidden units ``p`` ``[B, N, n]``.

    A plain MLP has ``p = act(pre(x))``; a gated one (SwiGLU, GLU) ``p = act(pre(x)) *
    pre_linear(x)``, ``pre`` being the gate. An MLP that gives only ``run`` is one opaque term
    (its hidden units are not exposed).

    Attributes:
        run: ``(x [B, N, D]) -> [B, N, D]`` the backend's own MLP, ``out_norm`` included.
        pre: the (gate's) input projection, ``x -> [B, N, n]``.
        act: the activation.
        post: the out-projection module, ``p -> [B, N, D]``, bias included.
        pre_linear: the linear branch of a gated MLP, ``x -> [B, N, n]``, or ``None``.
        out_weight: ``[D, n]`` the out-projection weight (``nn.Linear`` layout); ``out_bias``
            ``[D]`` or ``None``.
        inner_norm: a norm over the hidden units before the out-projection (EVA's sub-LN in
            SwiGLU, timm's ``scale_mlp_norm``), or ``None``.
        out_norm: a norm on the MLP's output (post-norm blocks, EVA02-E's
            ``x + norm2(mlp(x))``), or ``None``.
    """

    run: Callable[[Tensor], Tensor]
    pre: Callable[[Tensor], Tensor] | None = None
    act: Callable[[Tensor], Tensor] | None = None
    post: Callable[[Tensor], Tensor] | None = None
    pre_linear: Callable[[Tensor], Tensor] | None = None
    out_weight: Tensor | None = None
    out_bias: Tensor | None = None
    inner_norm: nn.Module | None = None
    out_norm: nn.Module | None = None


@dataclass
class BlockSpec:
    """``x + ls1 * attn(ln1(x))`` then ``x + ls2 * mlp(ln2(x))`` (pre-norm residual block). A
    post-norm block (``x + norm(attn(x))``) has no ``ln1``/``ln2``; its attention norm is
    ``attention.out_norm`` and its MLP norm ``mlp.out_norm``."""

    ln1: nn.Module | None
    attention: AttentionSpec
    ln2: nn.Module | None
    mlp: MLPSpec
    ls1: Tensor | None = None
    ls2: Tensor | None = None


@dataclass
class AttentionPoolSpec:
    """Attention pooling by learned queries (SigLIP's MAP head, PE-Core, CoCa's pooler).

    Attributes:
        n_heads: pool heads ``G``.
        d_head: pool head width.
        query: ``() -> [Q, G, d]`` the queries as they enter the dot product.
        project_kv: ``(x [B, N, D]) -> (k, v)``, each ``[B, N, G, d]`` (position embedding,
            biases and key norm included).
        v_weight: ``[G * d, D]`` the value projection weight; ``v_bias`` ``[G * d]`` or ``None``
            (either may be a zero-argument callable, as for ``AttentionSpec.qkv_weights``).
        out_weight: ``[D_out, G * d]`` the out-projection; ``out_bias`` ``[D_out]`` or ``None``.
        run: ``(x) -> [B, D_out]`` the backend's own pool (after query selection).
        scale: softmax temperature (``d ** -0.5`` when ``None``).
        pos_embed: ``[N, D]`` added to the tokens before the key/value projections, or ``None``.
        mlp: ``(y [B, Q, D_out]) -> [B, Q, D_out]`` the pool's own residual MLP branch
            (``y + mlp(norm(y))``), or ``None``.
        select: how the ``Q`` query outputs become one vector: ``"first"`` or ``"mean"``.
        kv_norm: a per-token norm applied to the tokens before the pool (CoCa's ``ln_k``), which
            then plays the role of the final norm, or ``None``.
    """

    n_heads: int
    d_head: int
    query: Callable[[], Tensor]
    project_kv: Callable[[Tensor], tuple[Tensor, Tensor]]
    v_weight: Tensor | Callable[[], Tensor]
    v_bias: Tensor | Callable[[], Tensor | None] | None
    out_weight: Tensor
    out_bias: Tensor | None
    run: Callable[[Tensor], Tensor]
    scale: float | None = None
    pos_embed: Tensor | None = None
    mlp: Callable[[Tensor], Tensor] | None = None
    select: str = "first"
    kv_norm: nn.Module | None = None


@dataclass
class ReadoutSpec:
    """From the final residual stream ``[B, N, D]`` to the image embedding ``[B, E]``.

    ``final_norm`` (per token before the pool, or on the pooled vector when
    ``final_norm_after_pool``), then the pool over ``pool_rows``, then ``project``.

    Attributes:
        pool: ``"token"`` (one row, ``pool_rows`` an int), ``"mean"`` or ``"attention"``.
        pool_rows: the token rows the pool reads: an int for ``"token"``, else a ``slice``.
        final_norm: a norm module or ``None``.
        final_norm_after_pool: whether ``final_norm`` acts on the pooled vector.
        attention_pool: the pool for ``"attention"``.
        proj: ``[D_out, E]`` the linear map(s) after the pool as one matrix (``x @ proj``),
            or ``None`` for the identity; ``proj_bias`` ``[E]`` or ``None``. Either may be a
            zero-argument callable when it is composed from several weights, so that it always
            reflects the current weights.
        project: ``(pooled [B, D_out]) -> [B, E]`` the backend's own projection code.
    """

    pool: str
    pool_rows: int | slice
    final_norm: nn.Module | None
    final_norm_after_pool: bool
    project: Callable[[Tensor], Tensor]
    proj: Tensor | Callable[[], Tensor] | None
    proj_bias: Tensor | Callable[[], Tensor] | None = None
    attention_pool: AttentionPoolSpec | None = None


@dataclass
class TowerSpec:
    """A whole ViT-style image tower.

    Attributes:
        family: a short name of the backend family (``"open_clip"``, ``"timm-vit"``, ...).
        module: the backend's own tower module (it owns every weight).
        patchify: ``(images) -> [B, P, D]`` patch tokens.
        assemble: ``(patch tokens) -> (tokens [B, N, D], context)``: class/register tokens,
            positions, pre-norm; ``context`` is passed to every attention (rotary tables).
        blocks: the residual blocks in order.
        readout: pooling, final norm and projection.
        image_size: ``(H, W)`` the input size; ``grid_size``: the patch grid.
        n_prefix_tokens: tokens before the patch tokens (class and register tokens).
    """

    family: str
    module: nn.Module
    patchify: Callable[[Tensor], Tensor]
    assemble: Callable[[Tensor], tuple[Tensor, Context]]
    blocks: list[BlockSpec]
    readout: ReadoutSpec
    image_size: tuple[int, int]
    grid_size: tuple[int, int]
    n_prefix_tokens: int


class UnsupportedTowerError(ValueError):
    """The image tower is not one the decomposition can be exact on; the message says why."""
