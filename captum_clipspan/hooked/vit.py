"""A TransformerLens-style hooked view of a live open_clip ``VisionTransformer``.

``HookedViT`` does not convert weights: it holds the open_clip tower and calls its own submodules,
so ``hooked(x)`` equals ``model.visual(x)``. Hook points follow TransformerLens names
(``blocks.3.attn.hook_pattern``), so ``run_with_cache`` and ``hooks()`` work as users expect.

Attention runs on one of two paths. *Passthrough* calls open_clip's ``nn.MultiheadAttention`` and is
bit-identical to open_clip; it is used when nothing inside attention is hooked. *Split* recomputes
q/k/v from ``in_proj_weight`` and passes every step through a hook point, so that interventions
propagate. The same holds for the LayerNorms: they are expanded (to expose ``hook_scale``) only when
one of their hook points is hooked.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

SUPPORTED_TOWERS = (
    "open_clip VisionTransformer towers with the default residual block "
    "(LayerScale, QuickGELU, no ln_pre, 'tok'/'avg' pooling and final_ln_after_pool included)"
)


def _unsupported(reason: str) -> ValueError:
    return ValueError(f"{reason} captum_clipspan supports {SUPPORTED_TOWERS}.")


def check_supported_tower(visual: nn.Module) -> None:
    """Raise a ``ValueError`` naming the tower if it is not an open_clip-native ViT we can hook."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    kind = type(visual).__name__
    if kind == "ModifiedResNet":
        raise _unsupported("This image tower is a ResNet (ModifiedResNet), not a ViT.")
    if kind == "TimmModel":
        raise _unsupported("This image tower is a timm model (TimmModel).")
    if not isinstance(visual, VisionTransformer):
        raise _unsupported(f"This image tower is a {kind}, not an open_clip VisionTransformer.")
    if getattr(visual, "attn_pool", None) is not None:
        raise _unsupported("This tower uses CoCa-style attentional pooling (attn_pool).")
    if visual.pool_type not in ("tok", "avg"):
        raise _unsupported(f"This tower uses pool_type={visual.pool_type!r}.")
    if visual.proj is None:
        raise _unsupported("This tower has no output projection (proj is None).")
    if not visual.transformer.batch_first:
        raise _unsupported("This tower's transformer is not batch_first (open_clip < 2.26).")
    for block in visual.transformer.resblocks:
        if not isinstance(block, ResidualAttentionBlock):
            raise _unsupported(
                f"This tower uses {type(block).__name__} blocks (qk_norm, scaled cosine attention "
                "or other custom-block options)."
            )
        attn = block.attn
        if (
            hasattr(block, "ln_1_kv")
            or not attn._qkv_same_embed_dim
            or attn.bias_k is not None
            or attn.add_zero_attn
        ):
            raise _unsupported("This tower's attention has cross-attention or extra k/v biases.")


def _layer_norm_parts(
    norm: nn.LayerNorm, x: Tensor, scale_hook: HookPoint, normalized_hook: HookPoint
) -> Tensor:
    """LayerNorm written out so that its scale and normalized input pass through hook points."""
    from open_clip.transformer import LayerNormFp32

    out_dtype = x.dtype
    if isinstance(norm, LayerNormFp32):
        x = x.float()
    centered = x - x.mean(-1, keepdim=True)
    scale = scale_hook((centered.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt())
    normalized = normalized_hook(centered / scale)
    if norm.weight is not None:
        normalized = normalized * norm.weight + norm.bias
    return normalized.to(out_dtype)


class HookedLayerNorm(nn.Module):
    """Hook points of one open_clip LayerNorm (``hook_scale`` ``[..., 1]``, ``hook_normalized``)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.__dict__["norm"] = norm  # the open_clip module, deliberately not registered again
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.norm, nn.Identity):
            return x
        if self.hook_scale.has_hooks() or self.hook_normalized.has_hooks():
            return _layer_norm_parts(self.norm, x, self.hook_scale, self.hook_normalized)
        return self.norm(x)


class HookedAttention(nn.Module):
    """Hook points of one ``nn.MultiheadAttention``; shapes follow TransformerLens.

    ``hook_q``/``hook_k``/``hook_v``/``hook_z``: ``[B, N, H, d_head]``; ``hook_attn_scores`` and
    ``hook_pattern``: ``[B, H, N_query, N_key]``; ``hook_result``: ``[B, N, H, D]``, each head's
    output after LayerScale (the out-projection bias is not part of any head).
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.__dict__["block"] = block
        self.n_heads = block.attn.num_heads
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        self.hook_result = HookPoint()
        self.force_split = False

    def is_hooked(self) -> bool:
        return self.force_split or any(
            hp.has_hooks()
            for hp in (self.hook_q, self.hook_k, self.hook_v, self.hook_attn_scores,
                       self.hook_pattern, self.hook_z, self.hook_result)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map the ``ln_1`` output ``[B, N, D]`` to the attention output after LayerScale."""
        block = self.block
        if not self.is_hooked():
            return block.ls_1(block.attention(q_x=x))
        attn = block.attn
        batch, n_tokens, width = x.shape
        head_shape = (batch, n_tokens, self.n_heads, width // self.n_heads)
        # in_proj_weight is [3D, D]: q, k, v stacked, heads contiguous in groups of d_head.
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q = self.hook_q(q.reshape(head_shape))
        k = self.hook_k(k.reshape(head_shape))
        v = self.hook_v(v.reshape(head_shape))
        if self.hook_attn_scores.has_hooks() or self.hook_pattern.has_hooks():
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_shape[-1])
            pattern = self.hook_pattern(self.hook_attn_scores(scores).softmax(dim=-1))
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        else:
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            ).transpose(1, 2)
        z = self.hook_z(z)
        if self.hook_result.has_hooks():
            out_weight = attn.out_proj.weight.reshape(width, self.n_heads, -1)
            result = self.hook_result(block.ls_1(torch.einsum("bnhd,Dhd->bnhD", z, out_weight)))
            return result.sum(dim=2) + block.ls_1(attn.out_proj.bias)
        return block.ls_1(attn.out_proj(z.reshape(batch, n_tokens, width)))


class HookedMLP(nn.Module):
    """Hook points of one open_clip MLP (``hook_pre`` after ``c_fc``, ``hook_post`` after GELU)."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.__dict__["mlp"] = mlp
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp.c_proj(self.hook_post(self.mlp.gelu(self.hook_pre(self.mlp.c_fc(x)))))


class HookedBlock(nn.Module):
    """One residual block: ``x + ls_1(attn(ln_1(x)))`` then ``+ ls_2(mlp(ln_2(x)))``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.__dict__["block"] = block
        self.hook_resid_pre = HookPoint()
        self.ln1 = HookedLayerNorm(block.ln_1)
        self.attn = HookedAttention(block)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = HookedLayerNorm(block.ln_2)
        self.mlp = HookedMLP(block.mlp)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
        mlp_out = self.hook_mlp_out(self.block.ls_2(self.mlp(self.ln2(x))))
        return self.hook_resid_post(x + mlp_out)


class HookedViT(HookedRootModule):
    """A live open_clip ``VisionTransformer`` with TransformerLens hook points.

    Hook names: ``hook_patch_embed`` (conv tokens ``[B, g*g, D]``), ``hook_embed`` (``ln_pre``
    output, the first residual term ``[B, N, D]``), ``blocks.{l}.hook_resid_pre``,
    ``blocks.{l}.ln1.hook_scale``, ``blocks.{l}.attn.hook_q|k|v|attn_scores|pattern|z|result``,
    ``blocks.{l}.hook_attn_out``, ``blocks.{l}.hook_resid_mid``, ``blocks.{l}.ln2.hook_scale``,
    ``blocks.{l}.mlp.hook_pre|post``, ``blocks.{l}.hook_mlp_out``, ``blocks.{l}.hook_resid_post``,
    ``ln_final.hook_scale|normalized`` (``ln_post``), ``hook_pooled`` (``[B, D]``, before
    ``proj``) and ``hook_image_embed`` (``[B, E]``).

    Args:
        visual: an open_clip ``VisionTransformer`` (``model.visual``). It stays the owner of the
            weights; the hooked module only calls its submodules.

    Examples::

        >>> model = open_clip.create_model("ViT-B-16").eval()
        >>> hooked = HookedViT(model.visual)
        >>> embed, cache = hooked.run_with_cache(images, names_filter=lambda n: "pattern" in n)
        >>> cache["blocks.11.attn.hook_pattern"].shape  # [B, H, N, N]
    """

    def __init__(self, visual: nn.Module) -> None:
        check_supported_tower(visual)
        super().__init__()
        self.model = visual
        resblocks = visual.transformer.resblocks
        self.n_layers = len(resblocks)
        self.n_heads = resblocks[0].attn.num_heads
        self.d_model = visual.transformer.width
        self.d_head = self.d_model // self.n_heads
        self.output_dim = visual.proj.shape[1]
        self.image_size = tuple(visual.image_size)
        self.grid_size = tuple(visual.grid_size)
        self.n_tokens = self.grid_size[0] * self.grid_size[1] + 1
        self.pool_type = visual.pool_type
        self.final_ln_after_pool = bool(visual.final_ln_after_pool)
        self.hook_patch_embed = HookPoint()
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(HookedBlock(block) for block in resblocks)
        self.ln_final = HookedLayerNorm(visual.ln_post)
        self.hook_pooled = HookPoint()
        self.hook_image_embed = HookPoint()
        self.setup()

    def setup(self) -> None:
        """Name our own modules and hook points only; open_clip's modules stay untouched."""
        self.mod_dict, self.hook_dict = {}, {}
        for name, module in self.named_modules():
            if name in ("", "model") or name.startswith("model."):
                continue
            module.name = name
            self.mod_dict[name] = module
            if isinstance(module, HookPoint):
                self.hook_dict[name] = module

    @property
    def dtype(self) -> torch.dtype:
        return self.model.proj.dtype

    @property
    def device(self) -> torch.device:
        return self.model.proj.device

    def check_images(self, images: Tensor) -> None:
        """Raise a clear error unless ``images`` is a finite ``[B, 3, H, W]`` batch of this size."""
        if not isinstance(images, Tensor):
            raise TypeError(
                f"images must be a torch.Tensor [B, 3, {self.image_size[0]}, "
                f"{self.image_size[1]}], got {type(images).__name__}; use "
                "HookedCLIP.preprocess_images for PIL images."
            )
        expected = (3, *self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape [B, {', '.join(map(str, expected))}] for this model, got "
                f"{list(images.shape)}; resize with HookedCLIP.preprocess_images."
            )
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got {images.dtype}.")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values.")

    def embed(self, images: Tensor) -> Tensor:
        """Patch embedding, class token, positions, patch dropout and ``ln_pre``: ``[B, N, D]``."""
        visual = self.model
        x = visual.conv1(images)
        x = self.hook_patch_embed(x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1))
        cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return self.hook_embed(visual.ln_pre(visual.patch_dropout(x)))

    def pool(self, residual: Tensor) -> Tensor:
        """``ln_post`` and pooling of the final residual stream ``[B, N, D]`` -> ``[B, D]``."""
        if self.final_ln_after_pool:
            return self.ln_final(pool_tokens(residual, self.pool_type))
        return pool_tokens(self.ln_final(residual), self.pool_type)

    def forward(self, images: Tensor) -> Tensor:
        """Image embeddings ``[B, E]``, equal to ``model.visual(images)``."""
        x = self.embed(images)
        for block in self.blocks:
            x = block(x)
        pooled = self.hook_pooled(self.pool(x))
        return self.hook_image_embed(pooled @ self.model.proj)


def pool_tokens(x: Tensor, pool_type: str) -> Tensor:
    """open_clip's global pooling: the class token (``"tok"``) or the mean of patch tokens."""
    return x[:, 1:].mean(dim=1) if pool_type == "avg" else x[:, 0]
