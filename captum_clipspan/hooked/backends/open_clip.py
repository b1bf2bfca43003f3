"""open_clip's own ``VisionTransformer``, including CoCa's attentional pooler."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spec import AttentionPoolSpec, AttentionSpec, BlockSpec, MLPSpec, ReadoutSpec, TowerSpec
from .common import mha_pool_spec, mha_weights, split_heads, unsupported


def _gamma(layer_scale: nn.Module) -> Tensor | None:
    return getattr(layer_scale, "gamma", None)


def mha_attention_spec(attn: nn.MultiheadAttention, run) -> AttentionSpec:
    """A batch-first self-attention ``nn.MultiheadAttention`` (open_clip, HF SigLIP's pool)."""
    if attn.bias_k is not None or attn.add_zero_attn or not attn.batch_first:
        raise unsupported("This tower's attention has extra k/v biases, zero attention or is not "
                          "batch_first (open_clip < 2.26).")
    n_heads = attn.num_heads

    def project(x: Tensor, context: dict) -> tuple[Tensor, Tensor, Tensor]:
        if attn._qkv_same_embed_dim:
            qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        else:
            qkv = [F.linear(x, w, b) for w, b in zip(*mha_weights(attn), strict=True)]
        return tuple(split_heads(t, n_heads) for t in qkv)

    return AttentionSpec(
        n_heads=n_heads, d_head=attn.head_dim, project=project,
        out_weight=attn.out_proj.weight, out_bias=attn.out_proj.bias, run=run,
        qkv_weights=lambda: mha_weights(attn)[0], qkv_biases=lambda: mha_weights(attn)[1],
    )


def _block_spec(block: nn.Module) -> BlockSpec:
    from open_clip.transformer import ResidualAttentionBlock

    if not isinstance(block, ResidualAttentionBlock):
        raise unsupported(f"This tower uses {type(block).__name__} blocks (qk_norm, scaled cosine "
                          "attention or other custom-block options).")
    if hasattr(block, "ln_1_kv"):
        raise unsupported("This tower's blocks use cross-attention (ln_1_kv).")
    mlp = block.mlp
    return BlockSpec(
        ln1=block.ln_1,
        attention=mha_attention_spec(block.attn, lambda x, context: block.attention(q_x=x)),
        ln2=block.ln_2,
        mlp=MLPSpec(run=mlp, pre=mlp.c_fc, act=mlp.gelu, post=mlp.c_proj,
                    out_weight=mlp.c_proj.weight, out_bias=mlp.c_proj.bias),
        ls1=_gamma(block.ls_1), ls2=_gamma(block.ls_2),
    )


def _coca_pool(pooler: nn.Module, select: str) -> AttentionPoolSpec:
    """CoCa's ``AttentionalPooler``: ``ln_k`` on the tokens, then learned queries."""
    attn = pooler.attn

    def run(x: Tensor) -> Tensor:  # AttentionalPooler.forward after its ln_k
        q = pooler.ln_q(pooler.query)
        out = attn(q.unsqueeze(0).expand(x.shape[0], -1, -1), x, x, need_weights=False)[0]
        return out[:, 0]

    return mha_pool_spec(attn, lambda: pooler.ln_q(pooler.query), run, select=select,
                         kv_norm=pooler.ln_k)


def open_clip_tower_spec(visual: nn.Module) -> TowerSpec:
    """Describe an open_clip ``VisionTransformer``."""
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise unsupported(f"This image tower is a {type(visual).__name__}, not a ViT.")
    if not visual.transformer.batch_first:
        raise unsupported("This tower's transformer is not batch_first (open_clip < 2.26).")
    blocks = [_block_spec(block) for block in visual.transformer.resblocks]

    def patchify(images: Tensor) -> Tensor:
        x = visual.conv1(images)
        return x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)

    def assemble(patches: Tensor) -> tuple[Tensor, dict]:
        cls = visual.class_embedding.view(1, 1, -1).expand(patches.shape[0], -1, -1)
        x = torch.cat([cls.to(patches.dtype), patches], dim=1)
        x = x + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(visual.patch_dropout(x)), {}

    proj = visual.proj

    def project(pooled: Tensor) -> Tensor:
        return pooled if proj is None else pooled @ proj

    pool_type = visual.pool_type
    if getattr(visual, "attn_pool", None) is not None:
        if getattr(visual, "attn_pool_contrastive", None) is not None:
            raise unsupported("This tower uses CoCa's 'parallel'/'cascade' pooling "
                              f"({visual.attn_pool_type!r}).")
        if pool_type != "tok":
            raise unsupported(f"This CoCa tower pools its queries with pool_type={pool_type!r}.")
        readout = ReadoutSpec(
            pool="attention", pool_rows=slice(0, None), final_norm=visual.ln_post,
            final_norm_after_pool=True, project=project, proj=proj,
            attention_pool=_coca_pool(visual.attn_pool, "first"),
        )
    elif pool_type in ("tok", "avg"):
        readout = ReadoutSpec(
            pool="token" if pool_type == "tok" else "mean",
            pool_rows=0 if pool_type == "tok" else slice(1, None),
            final_norm=visual.ln_post, final_norm_after_pool=bool(visual.final_ln_after_pool),
            project=project, proj=proj,
        )
    else:
        raise unsupported(f"This tower uses pool_type={pool_type!r}.")
    return TowerSpec(
        family="open_clip", module=visual, patchify=patchify, assemble=assemble, blocks=blocks,
        readout=readout, image_size=tuple(visual.image_size), grid_size=tuple(visual.grid_size),
        n_prefix_tokens=1,
    )
