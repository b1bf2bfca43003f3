"""Pieces every image-tower adapter shares: the refusal that lists what is supported, head
splitting and ``nn.MultiheadAttention``'s weights and pools."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..spec import AttentionPoolSpec, UnsupportedTowerError

SUPPORTED_TOWERS = (
    "open_clip VisionTransformer towers (LayerScale, QuickGELU, no ln_pre, 'tok'/'avg' pooling, "
    "final_ln_after_pool, CoCa's attentional pooler); timm VisionTransformer and Eva towers in "
    "open_clip's TimmModel (SigLIP, SigLIP2, PE-Core, EVA01, EVA02 incl. EVA02-E, MobileCLIP-B, "
    "ViTamin, mean-pooled and relative-position ViTs); transformers CLIPModel, "
    "CLIPVisionModel[WithProjection], MetaClip2Model, MetaClip2VisionModel[WithProjection], "
    "AltCLIPModel, AltCLIPVisionModel, ChineseCLIPModel, ChineseCLIPVisionModel, CLIPSegModel, "
    "CLIPSegVisionModel, SiglipModel and SiglipVisionModel"
)


def unsupported(reason: str) -> UnsupportedTowerError:
    """An error that names why a tower is refused and lists what is supported."""
    return UnsupportedTowerError(f"{reason} captum_clipspan supports {SUPPORTED_TOWERS}.")


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """``[..., H * d]`` -> ``[..., H, d]``."""
    return x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)


def mha_weights(attn: nn.MultiheadAttention) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """``nn.MultiheadAttention``'s q, k, v weights ``[H * d, D_in]`` and biases, as views of the
    live parameters (take them at use time: ``module.to()`` replaces the parameters' storage)."""
    if attn._qkv_same_embed_dim:
        weights = tuple(attn.in_proj_weight.chunk(3))
    else:
        weights = (attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight)
    biases = tuple(attn.in_proj_bias.chunk(3)) if attn.in_proj_bias is not None else (None,) * 3
    return weights, biases


def mha_pool_spec(attn: nn.MultiheadAttention, queries: Callable[[], Tensor],
                  run: Callable[[Tensor], Tensor], **fields: Any) -> AttentionPoolSpec:
    """An attention pool on ``nn.MultiheadAttention``: fixed ``queries()`` ``[Q, D_q]`` attend to
    the tokens (CoCa's pooler, transformers SigLIP's MAP head)."""
    n_heads = attn.num_heads

    def query() -> Tensor:
        weights, biases = mha_weights(attn)
        return split_heads(F.linear(queries(), weights[0], biases[0]), n_heads)

    def project_kv(x: Tensor) -> tuple[Tensor, Tensor]:
        if attn._qkv_same_embed_dim:  # keys and values in one GEMM, as the module runs them
            width = attn.embed_dim
            bias = attn.in_proj_bias[width:] if attn.in_proj_bias is not None else None
            k, v = F.linear(x, attn.in_proj_weight[width:], bias).chunk(2, dim=-1)
        else:
            weights, biases = mha_weights(attn)
            k, v = (F.linear(x, w, b) for w, b in zip(weights[1:], biases[1:], strict=True))
        return split_heads(k, n_heads), split_heads(v, n_heads)

    return AttentionPoolSpec(
        n_heads=n_heads, d_head=attn.head_dim, query=query, project_kv=project_kv,
        v_weight=lambda: mha_weights(attn)[0][2], v_bias=lambda: mha_weights(attn)[1][2],
        out_weight=attn.out_proj.weight, out_bias=attn.out_proj.bias, run=run, **fields,
    )
