"""timm ViTs, bare or inside open_clip's ``TimmModel``.

Three trunk classes are described: ``VisionTransformer`` (SigLIP/SigLIP2 with their MAP head,
MobileCLIP-B's and ViTamin's conv stems, mean-pooled ViTs), ``VisionTransformerRelPos`` (relative
position bias in the scores) and ``Eva`` (EVA01/EVA02 with RoPE, sub-LN and SwiGLU, PE-Core with
``AttentionRope`` and a MAP head). Every ``run`` is timm's own module call, so the passthrough is
timm's forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spec import (
    AttentionPoolSpec,
    AttentionSpec,
    BlockSpec,
    MLPSpec,
    ReadoutSpec,
    TowerSpec,
    UnsupportedTowerError,
)
from .common import split_heads, unsupported

Linears = list[nn.Linear]


def timm_tower_spec(visual: nn.Module) -> TowerSpec:
    """Describe open_clip's ``TimmModel``: the timm trunk, then open_clip's ``head``."""
    spec = timm_trunk_spec(visual.trunk, visual.head)
    return dataclasses.replace(spec, module=visual)


def timm_trunk_spec(trunk: nn.Module, head: nn.Module | None) -> TowerSpec:
    """Describe a timm ViT trunk followed by ``head`` (open_clip's extra projection, or ``None``).

    Raises:
        UnsupportedTowerError: for non-ViT trunks (ConvNeXt, FastViT, Swin, ...) and any module
            the decomposition cannot be exact on; the message names it.
    """
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    describe = {VisionTransformer: _vit_spec, VisionTransformerRelPos: _relpos_spec,
                Eva: _eva_spec}.get(type(trunk))
    if describe is None:
        kind = f"a timm {type(trunk).__name__} ({_architecture(trunk)})"
        if isinstance(trunk, (VisionTransformer, VisionTransformerRelPos, Eva)):
            raise unsupported(f"This image tower is {kind}, a ViT variant the timm backend "
                              "does not describe.")
        raise unsupported(f"This image tower is {kind}, not a ViT.")
    if getattr(trunk, "dynamic_img_size", False):
        raise unsupported(f"This timm tower ({_architecture(trunk)}) uses dynamic_img_size=True.")
    return describe(trunk, head)


def _architecture(trunk: nn.Module) -> str:
    cfg = getattr(trunk, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(trunk).__name__


# Family descriptions ----------------------------------------------------------------------------

def _vit_spec(trunk: nn.Module, head: nn.Module | None) -> TowerSpec:
    """timm ``VisionTransformer``: ``_pos_embed`` (class/register tokens, positions), patch
    dropout and ``norm_pre``, then pre-norm ``Block``s."""
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    blocks = []
    for block in trunk.blocks:
        _require(block, Block, "block")
        attn = _require(block.attn, Attention, "attention")
        blocks.append(_block_spec(block, block.ls1, block.ls2,
                                  _attention_spec(attn, lambda x, _, a=attn: a(x))))

    def assemble(patches: Tensor) -> tuple[Tensor, dict]:
        return trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(patches))), {}

    rows = slice(0 if trunk.pool_include_prefix else trunk.num_prefix_tokens, None)
    return _tower_spec("timm-vit", trunk, assemble, blocks, _readout(trunk, head, rows, rows))


def _relpos_spec(trunk: nn.Module, head: nn.Module | None) -> TowerSpec:
    """timm ``VisionTransformerRelPos``: a class token, no absolute positions, and a relative
    position bias (per block, or shared by all) added to the attention scores."""
    from timm.models.vision_transformer_relpos import RelPosAttention, RelPosBlock

    shared = trunk.shared_rel_pos

    def shared_bias() -> Tensor | None:
        return shared.get_bias() if shared is not None else None

    blocks = []
    for block in trunk.blocks:
        _require(block, RelPosBlock, "block")
        attn = _require(block.attn, RelPosAttention, "attention")
        source = attn.rel_pos if attn.rel_pos is not None else shared
        score_bias = (lambda s=source: s.get_bias()[0]) if source is not None else None
        attention = _attention_spec(attn, lambda x, _, a=attn: a(x, shared_rel_pos=shared_bias()),
                                    score_bias=score_bias)
        blocks.append(_block_spec(block, block.ls1, block.ls2, attention))

    def assemble(patches: Tensor) -> tuple[Tensor, dict]:  # forward_features' class token
        if trunk.cls_token is None:
            return patches, {}
        return torch.cat((trunk.cls_token.expand(patches.shape[0], -1, -1), patches), dim=1), {}

    rows = slice(trunk.num_prefix_tokens, None)
    return _tower_spec("timm-relpos", trunk, assemble, blocks, _readout(trunk, head, rows, rows))


def _eva_spec(trunk: nn.Module, head: nn.Module | None) -> TowerSpec:
    """timm ``Eva``: ``EvaAttention`` or ``AttentionRope`` with RoPE on the patch tokens (the
    table travels in the context as ``"rope"``), optional sub-LN, LayerScale ``gamma_1/2``."""
    from timm.layers import AttentionRope
    from timm.models.eva import EvaAttention, EvaBlock, EvaBlockPostNorm

    if trunk.rope_mixed:
        raise unsupported("This EVA tower uses mixed RoPE (rope_type='mixed'), a different "
                          "table per block.")
    blocks = []
    for block in trunk.blocks:
        _require(block, (EvaBlock, EvaBlockPostNorm), "block")
        attn = _require(block.attn, (EvaAttention, AttentionRope), "attention")
        run = lambda x, context, a=attn: a(x, rope=context["rope"])  # noqa: E731
        if isinstance(block, EvaBlockPostNorm):  # x + norm1(attn(x)), x + norm2(mlp(x))
            attention = _attention_spec(attn, run, rope_prefix=attn.num_prefix_tokens,
                                        out_norm=_norm(block.norm1))
            blocks.append(BlockSpec(ln1=None, attention=attention, ln2=None,
                                    mlp=_mlp_spec(block.mlp, _norm(block.norm2))))
            continue
        blocks.append(_block_spec(block, block.gamma_1, block.gamma_2,
                                  _attention_spec(attn, run, rope_prefix=attn.num_prefix_tokens)))

    def assemble(patches: Tensor) -> tuple[Tensor, dict]:
        tokens, rope = trunk._pos_embed(patches)
        return trunk.norm_pre(tokens), {"rope": rope}

    # Eva's attention pool reads every token, its mean pool only the patch tokens.
    return _tower_spec("timm-eva", trunk, assemble, blocks,
                       _readout(trunk, head, slice(0, None), slice(trunk.num_prefix_tokens, None)))


def _tower_spec(family: str, trunk: nn.Module, assemble: Callable[[Tensor], tuple[Tensor, dict]],
                blocks: list[BlockSpec], readout: ReadoutSpec) -> TowerSpec:
    patch_embed = trunk.patch_embed
    if getattr(patch_embed, "grid_size", None) is None:
        raise unsupported(f"This timm tower's patch embedding ({type(patch_embed).__name__}) has "
                          "no fixed grid.")
    return TowerSpec(
        family=family, module=trunk, patchify=patch_embed, assemble=assemble, blocks=blocks,
        readout=readout, image_size=tuple(patch_embed.img_size),
        grid_size=tuple(patch_embed.grid_size), n_prefix_tokens=trunk.num_prefix_tokens,
    )


# Blocks ----------------------------------------------------------------------------------------

def _require(module: nn.Module, kinds: type | tuple[type, ...], what: str) -> nn.Module:
    """``module`` itself, if it is exactly one of ``kinds`` (a subclass may change the forward)."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if type(module) not in kinds:
        raise unsupported(f"This timm tower uses {type(module).__name__} as its {what}, which the "
                          "timm backend does not describe.")
    return module


def _norm(module: nn.Module) -> nn.Module:
    """A LayerNorm/RMSNorm (or Identity) that :class:`HookedNorm` can expand exactly."""
    name = type(module).__name__
    if isinstance(module, (nn.Identity, nn.LayerNorm, nn.RMSNorm)) or name == "RmsNorm":
        return module
    raise unsupported(f"This timm tower uses {name} as a norm layer.")


def _layer_scale(scale: nn.Module | Tensor | None) -> Tensor | None:
    """LayerScale's gain: ``gamma`` of timm's ``LayerScale``, a bare ``Parameter`` (EVA) or none."""
    if scale is None or isinstance(scale, Tensor):
        return scale
    if isinstance(scale, nn.Identity):
        return None
    if type(scale).__name__ == "LayerScale":
        return scale.gamma
    raise unsupported(f"This timm tower uses {type(scale).__name__} as its layer scale.")


def _block_spec(block: nn.Module, ls1: nn.Module | Tensor | None,
                ls2: nn.Module | Tensor | None, attention: AttentionSpec) -> BlockSpec:
    return BlockSpec(ln1=_norm(block.norm1), attention=attention, ln2=_norm(block.norm2),
                     mlp=_mlp_spec(block.mlp), ls1=_layer_scale(ls1), ls2=_layer_scale(ls2))


def _mlp_spec(mlp: nn.Module, out_norm: nn.Module | None = None) -> MLPSpec:
    """timm's ``Mlp``, ``SwiGLU``, ``GluMlp`` (EVA's packed SwiGLU) and ViTamin's ``GeGluMlp``
    expose their hidden units, with the inner norm of ``scale_mlp_norm`` towers and a post-norm
    block's ``out_norm``; any other MLP runs whole, one opaque term."""
    from timm.layers import GluMlp, Mlp, SwiGLU
    from timm.models.vitamin import GeGluMlp

    run = mlp if out_norm is None else (lambda x: out_norm(mlp(x)))
    kind, linear, inner = type(mlp), None, getattr(mlp, "norm", None)
    if kind is Mlp and isinstance(mlp.fc1, nn.Linear):
        pre, out = mlp.fc1, mlp.fc2
    elif kind is SwiGLU:
        pre, linear, out = mlp.fc1_g, mlp.fc1_x, mlp.fc2
    elif kind is GluMlp and isinstance(mlp.fc1, nn.Linear):
        gate = 1 if mlp.gate_last else 0
        pre = lambda x: mlp.fc1(x).chunk(2, dim=-1)[gate]  # noqa: E731
        linear = lambda x: mlp.fc1(x).chunk(2, dim=-1)[1 - gate]  # noqa: E731
        out = mlp.fc2
    elif kind is GeGluMlp:  # its norm acts on the input: part of both branches
        pre = lambda x: mlp.w0(mlp.norm(x))  # noqa: E731
        linear = lambda x: mlp.w1(mlp.norm(x))  # noqa: E731
        out, inner = mlp.w2, None
    else:
        return MLPSpec(run=run)
    inner = None if isinstance(inner, nn.Identity) else inner
    if not isinstance(out, nn.Linear) or (inner is not None and not _is_norm(inner)):
        return MLPSpec(run=run)
    return MLPSpec(run=run, pre=pre, act=mlp.act, post=out, pre_linear=linear,
                   out_weight=out.weight, out_bias=out.bias, inner_norm=inner, out_norm=out_norm)


def _is_norm(module: nn.Module) -> bool:
    """Whether :func:`_norm` accepts ``module``."""
    try:
        _norm(module)
    except UnsupportedTowerError:
        return False
    return True


def _qkv_params(attn: nn.Module) -> tuple[tuple[Tensor, ...], tuple[Tensor | None, ...]]:
    """The live q, k, v weights ``[H * d, D]`` and biases of a timm attention layer (fused
    ``qkv``, EVA's separate ``q_bias/k_bias/v_bias``, or ``q_proj/k_proj/v_proj``)."""
    if getattr(attn, "qkv", None) is not None:
        weights = tuple(attn.qkv.weight.chunk(3))
        if getattr(attn, "q_bias", None) is not None:
            return weights, (attn.q_bias, attn.k_bias, attn.v_bias)
        bias = attn.qkv.bias
        return weights, tuple(bias.chunk(3)) if bias is not None else (None,) * 3
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    return tuple(p.weight for p in projections), tuple(p.bias for p in projections)


def _attention_spec(attn: nn.Module, run: Callable[[Tensor, dict], Tensor],
                    score_bias: Callable[[], Tensor] | None = None,
                    rope_prefix: int | None = None,
                    out_norm: nn.Module | None = None) -> AttentionSpec:
    """A timm self-attention: q/k/v projections, per-head ``q_norm/k_norm``, RoPE on the tokens
    after the first ``rope_prefix`` (when the context carries a table), optional sub-LN
    ``norm``, ``proj``."""
    if getattr(attn, "gate", None) is not None:
        raise unsupported("This timm tower uses gated attention (a sigmoid gate on each head's "
                          "output), which is not linear in the values.")
    if getattr(attn, "num_kv_groups", 1) != 1:
        raise unsupported("This timm tower uses grouped-query attention (num_kv_heads).")
    n_heads, d_head = attn.num_heads, attn.head_dim
    half = getattr(attn, "rotate_half", False)

    def project(x: Tensor, context: dict) -> tuple[Tensor, Tensor, Tensor]:
        weights, biases = _qkv_params(attn)
        if getattr(attn, "qkv", None) is not None:  # one GEMM, as timm runs it
            bias = None if biases[0] is None else torch.cat(biases)
            projected = F.linear(x, attn.qkv.weight, bias).chunk(3, dim=-1)
        else:
            projected = (F.linear(x, w, b) for w, b in zip(weights, biases, strict=True))
        q, k, v = (split_heads(t, n_heads).transpose(1, 2) for t in projected)  # [B, H, N, d]
        q, k = attn.q_norm(q), attn.k_norm(k)
        rope = context.get("rope") if rope_prefix is not None else None
        if rope is not None:
            q, k = (_rotate(t, rope, rope_prefix, half).type_as(v) for t in (q, k))
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    return AttentionSpec(
        n_heads=n_heads, d_head=d_head, project=project, out_weight=attn.proj.weight,
        out_bias=attn.proj.bias, run=run, qkv_weights=lambda: _qkv_params(attn)[0],
        qkv_biases=lambda: _qkv_params(attn)[1],
        scale=attn.scale, score_bias=score_bias,
        z_norm=_z_norm(getattr(attn, "norm", None)), out_norm=out_norm,
    )


def _z_norm(norm: nn.Module | None) -> nn.Module | None:
    """The sub-LN over the concatenated heads (``scale_norm``), or ``None``."""
    return None if norm is None or isinstance(norm, nn.Identity) else _norm(norm)


def _rotate(x: Tensor, rope: Tensor, n_prefix: int, half: bool) -> Tensor:
    """RoPE on ``x`` ``[B, H, N, d]`` past its prefix tokens, as timm's attention applies it."""
    from timm.layers import apply_rot_embed_cat

    return torch.cat([x[:, :, :n_prefix], apply_rot_embed_cat(x[:, :, n_prefix:], rope, half=half)],
                     dim=2)


# Readout ---------------------------------------------------------------------------------------

def _readout(trunk: nn.Module, head: nn.Module | None, attention_rows: slice,
             mean_rows: slice) -> ReadoutSpec:
    """``norm`` (per token) or ``fc_norm`` (after the pool), the pool, then ``head_drop``,
    ``head`` and open_clip's ``head``, all linear maps composed into one matrix."""
    norm, fc_norm = _norm(trunk.norm), _norm(getattr(trunk, "fc_norm", nn.Identity()))
    if not isinstance(norm, nn.Identity) and not isinstance(fc_norm, nn.Identity):
        raise unsupported("This timm tower has both a final norm and an fc_norm.")
    after_pool = not isinstance(fc_norm, nn.Identity)
    linears = _projection_linears(trunk, head)

    def project(pooled: Tensor) -> Tensor:
        x = trunk.head(trunk.head_drop(pooled))
        return x if head is None else head(x)

    common = dict(final_norm=fc_norm if after_pool else norm, final_norm_after_pool=after_pool,
                  project=project, proj=(lambda: _composed_matrix(linears)) if linears else None,
                  proj_bias=(lambda: _composed_bias(linears))
                  if any(lin.bias is not None for lin in linears) else None)
    pool = getattr(trunk, "attn_pool", None)
    if pool is not None:
        return ReadoutSpec(pool="attention", pool_rows=attention_rows,
                           attention_pool=_latent_pool(pool), **common)
    kind = trunk.global_pool
    if kind == "token":
        return ReadoutSpec(pool="token", pool_rows=0, **common)
    if kind == "avg":
        return ReadoutSpec(pool="mean", pool_rows=mean_rows, **common)
    raise unsupported(f"This timm tower pools with global_pool={kind!r}; 'token', 'avg' and "
                      "'map' are supported.")


def _projection_linears(trunk: nn.Module, head: nn.Module | None) -> Linears:
    """The linear layers after the pool, in order: timm's ``head``, open_clip's ``head.proj``."""
    if not isinstance(trunk.head, (nn.Linear, nn.Identity)):
        raise unsupported(f"This timm tower's classifier head is a {type(trunk.head).__name__}.")
    linears = [trunk.head] if isinstance(trunk.head, nn.Linear) else []
    for name, layer in (head.named_children() if head is not None else ()):
        if name == "proj" and isinstance(layer, nn.Linear):
            linears.append(layer)
        elif name == "mlp":
            raise unsupported("This tower's projection head is an MLP (timm_proj='mlp'), which is "
                              "not linear.")
        elif not isinstance(layer, (nn.Dropout, nn.Identity)):
            raise unsupported(f"This tower's head has a {type(layer).__name__} ({name!r}; "
                              "timm_pool='abs_attn'/'rot_attn' pooling).")
    return linears


def _composed_matrix(linears: Linears) -> Tensor:
    """``[D_out, E]`` such that ``x @ matrix`` applies every layer's weight in turn."""
    matrix = linears[0].weight.T
    for layer in linears[1:]:
        matrix = matrix @ layer.weight.T
    return matrix


def _composed_bias(linears: Linears) -> Tensor:
    """``[E]`` what the layers add to ``x @ matrix``: each bias, mapped by the layers after it."""
    bias = None
    for layer in linears:
        if bias is not None:
            bias = bias @ layer.weight.T
        if layer.bias is not None:
            bias = layer.bias if bias is None else bias + layer.bias
    return bias


def _latent_pool(pool: nn.Module) -> AttentionPoolSpec:
    """timm's ``AttentionPoolLatent`` (SigLIP's MAP head, PE-Core's): latent queries, ``kv``
    with ``k_norm``, ``proj``, then ``y + mlp(norm(y))`` and the first or mean latent."""
    from timm.layers import AttentionPoolLatent

    _require(pool, AttentionPoolLatent, "attention pool")
    if pool.mlp is None or pool.pool not in ("token", "avg"):
        raise unsupported("This timm tower's attention pool has no output projection "
                          f"(out_features=0) or keeps all its latents (pool_type={pool.pool!r}).")
    n_heads, width = pool.num_heads, pool.num_heads * pool.head_dim

    def query() -> Tensor:
        return pool.q_norm(split_heads(pool.q(pool.latent)[0], n_heads))

    def project_kv(x: Tensor) -> tuple[Tensor, Tensor]:
        if pool.pos_embed is not None:
            x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
        k, v = (split_heads(t, n_heads) for t in pool.kv(x).chunk(2, dim=-1))
        return pool.k_norm(k), v

    return AttentionPoolSpec(
        n_heads=n_heads, d_head=pool.head_dim, query=query, project_kv=project_kv,
        v_weight=lambda: pool.kv.weight[width:],
        v_bias=lambda: None if pool.kv.bias is None else pool.kv.bias[width:],
        out_weight=pool.proj.weight, out_bias=pool.proj.bias, run=pool, scale=pool.scale,
        pos_embed=pool.pos_embed, mlp=lambda y: pool.mlp(pool.norm(y)),
        select="first" if pool.pool == "token" else "mean",
    )
