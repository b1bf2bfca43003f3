"""timm towers (bare, or inside open_clip's TimmModel) are described exactly: the hooked tower is
bit-identical to timm's forward, its split path matches it, and the decomposition sums to it. The
towers are the real open_clip configurations, shrunk to two blocks (and a small width where the
architecture allows it), with every 1-D parameter randomized."""

from __future__ import annotations

import collections
import contextlib
import re

import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import randomize_
from timm.layers import Attention, AttentionPoolLatent, RmsNorm
from timm.models.eva import Eva
from timm.models.vision_transformer import ResPostBlock, VisionTransformer
from timm.models.vision_transformer_relpos import VisionTransformerRelPos
from timm.models.vitamin import VitCfg, VitConvCfg
from torch import nn

import captum_clipspan as cs
from captum_clipspan.hooked.backends.timm import timm_trunk_spec
from captum_clipspan.hooked.spec import UnsupportedTowerError

# One open_clip configuration per tower family.
FAMILIES = {
    "siglip": "ViT-B-16-SigLIP",
    "siglip2": "ViT-SO400M-14-SigLIP2",
    "pe-core": "PE-Core-B-16",
    "eva01": "EVA01-g-14",
    "eva02": "EVA02-B-16",
    "eva02-e-post-norm": "EVA02-E-14",
    "mobileclip-b": "MobileCLIP-B",
    "mobileclip2-l": "MobileCLIP2-L-14",
    "gap": "vit_medium_patch16_gap_256",
    "relpos": "vit_relpos_medium_patch16_cls_224",
    "vitamin": "ViTamin-S",
}
# MobileCLIP-B's convolutional stem fixes the transformer width; ViTamin's is shrunk with it.
FIXED_WIDTH = ("mci",)
SMALL_VITAMIN_STEM = VitCfg(embed_dim=(16, 32, 64), depths=(1, 1, 1), stem_width=16,
                            conv_cfg=VitConvCfg(norm_layer="layernorm2d"), head_type="1d")


@contextlib.contextmanager
def timm_overrides(**overrides):
    """Make ``timm.create_model`` (as open_clip's TimmModel calls it) pass ``overrides``."""
    create = timm.create_model

    def create_small(name, *args, **kwargs):
        return create(name, *args, **{**kwargs, **overrides})

    timm.create_model = create_small
    try:
        yield
    finally:
        timm.create_model = create


def _timm_vision_cfg(name: str) -> tuple[int, dict]:
    config = open_clip.get_model_config(name)
    return config["embed_dim"], dict(config["vision_cfg"])


def tiny_tower(name: str, patches: int = 4, dtype: torch.dtype = torch.float64,
               **vision_updates) -> nn.Module:
    """open_clip's vision tower of config ``name``: 2 blocks, ``patches`` x ``patches`` tokens."""
    embed_dim, vision = _timm_vision_cfg(name)
    vision.update(vision_updates)
    timm_name = vision["timm_model_name"]
    patch = re.search(r"patch(\d+)", timm_name)
    patch = int(patch.group(1)) if patch else 16  # the conv stems' stride
    overrides = dict(depth=2, img_size=patches * patch)
    if not any(part in timm_name for part in FIXED_WIDTH):
        overrides.update(embed_dim=64, num_heads=4)
    if "vitamin" in timm_name:
        overrides.update(embed_cfg=SMALL_VITAMIN_STEM)
    vision["image_size"] = patches * patch
    torch.manual_seed(0)
    with timm_overrides(**overrides):
        visual = open_clip.model._build_vision_tower(embed_dim, vision)
    return randomize_(visual.eval()).to(dtype)


def images_of(hooked: cs.HookedViT, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, *hooked.image_size, generator=generator).to(hooked.dtype)


def check_hooked_paths(hooked: cs.HookedViT, reference, images: torch.Tensor) -> None:
    """(a) passthrough bit-identical, (b) split path and hooked patterns exact in fp64, (c) the
    cached patterns are ``[B, H, N, N]``."""
    with torch.no_grad():
        expected = reference(images)
        assert torch.equal(hooked(images), expected)
        for block in hooked.blocks:
            block.attn.force_split = True
        try:
            torch.testing.assert_close(hooked(images), expected, rtol=0, atol=1e-10)
            names = lambda name: name.endswith("hook_pattern")  # noqa: E731
            out, cache = hooked.run_with_cache(images, names_filter=names)
        finally:
            for block in hooked.blocks:
                block.attn.force_split = False
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    n = hooked.n_tokens
    for layer in range(hooked.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (len(images), hooked.n_heads, n, n)
    if hooked.pool is not None:
        assert cache["pool.hook_pattern"].shape[-1] == len(range(n)[hooked.pool_rows])
    assert hooked.list_hooks() == {}


def check_decomposition(hooked: cs.HookedViT, reference, images: torch.Tensor,
                        atol: float) -> None:
    """(d) every convention's terms sum to the unit embedding; heads and tokens sum up."""
    with torch.no_grad():
        expected = F.normalize(reference(images), dim=-1)
    for convention in ("reference", "centered"):
        parts = cs.decompose(hooked, images, granularity="token", convention=convention)
        torch.testing.assert_close(parts.total(), expected, rtol=0, atol=atol)
        attns = parts.attns if parts.attn_biases is None else parts.attns - parts.attn_biases
        torch.testing.assert_close(parts.heads.sum(2), attns, rtol=0, atol=atol)
        torch.testing.assert_close(parts.tokens.sum(2), parts.heads, rtol=0, atol=atol)


@pytest.mark.parametrize("family", FAMILIES)
def test_open_clip_timm_tower_is_exact(family):
    visual = tiny_tower(FAMILIES[family])
    hooked = cs.HookedViT(visual)
    images = images_of(hooked)
    check_hooked_paths(hooked, visual, images)
    check_decomposition(hooked, visual, images, atol=1e-10)


@pytest.mark.parametrize("family", ["siglip", "pe-core", "eva02", "gap"])
def test_open_clip_timm_tower_decomposes_in_fp32(family):
    visual = tiny_tower(FAMILIES[family], dtype=torch.float32)
    hooked = cs.HookedViT(visual)
    check_decomposition(hooked, visual, images_of(hooked), atol=1e-5)


def _with_three_latents(trunk: nn.Module) -> nn.Module:
    n_rows = trunk.patch_embed.num_patches + trunk.num_prefix_tokens
    trunk.attn_pool = AttentionPoolLatent(64, num_heads=4, latent_len=3, pool_type="avg",
                                          qk_norm=True, pos_embed="abs", feat_size=n_rows,
                                          norm_layer=nn.LayerNorm)
    return trunk


def _with_narrow_heads(trunk: nn.Module) -> nn.Module:
    """Heads of width 8, so that ``H * d = 32`` is not the model width ``D = 64``."""
    for block in trunk.blocks:
        block.attn = Attention(64, num_heads=4, attn_head_dim=8, qkv_bias=True, qk_norm=True,
                               scale_norm=True, norm_layer=nn.LayerNorm)
    return trunk


SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
# Options of the three trunk classes that no open_clip configuration uses.
VARIANTS = {
    "vit-registers-prefix-mean-fc-norm": lambda: VisionTransformer(
        **SMALL, reg_tokens=2, no_embed_class=True, global_pool="avg", pool_include_prefix=True,
        fc_norm=True, init_values=0.5, qk_norm=True, scale_attn_norm=True, pre_norm=True),
    "vit-token-rmsnorm-patch-drop": lambda: VisionTransformer(
        **SMALL, norm_layer=RmsNorm, patch_drop_rate=0.5, scale_mlp_norm=True),
    "vit-map-three-latents": lambda: _with_three_latents(VisionTransformer(
        **SMALL, global_pool="map", reg_tokens=1, pool_include_prefix=True)),
    "vit-narrow-heads": lambda: _with_narrow_heads(VisionTransformer(**SMALL, qkv_bias=False)),
    "relpos-shared-bias-mean": lambda: VisionTransformerRelPos(
        **SMALL, shared_rel_pos=True, rel_pos_type="bias", class_token=True, fc_norm=True),
    "eva-fused-qkv-registers": lambda: Eva(
        **SMALL, qkv_fused=True, use_rot_pos_emb=True, rope_rotate_half=True, num_reg_tokens=2,
        init_values=0.5, qk_norm=True, scale_attn_inner=True, global_pool="avg"),
    "eva-rope-attention-unfused": lambda: Eva(
        **SMALL, attn_type="rope", qkv_fused=False, use_rot_pos_emb=True, global_pool="map",
        use_pre_transformer_norm=True, attn_pool_num_heads=2, swiglu_mlp=True),
    "eva-post-norm-sub-ln-mean": lambda: Eva(
        **SMALL, use_post_norm=True, scale_attn_inner=True, use_rot_pos_emb=True,
        global_pool="avg"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_timm_trunk_variant_is_exact(variant):
    torch.manual_seed(0)
    trunk = randomize_(VARIANTS[variant]().eval()).double()
    hooked = cs.HookedViT(trunk)
    images = images_of(hooked)
    check_hooked_paths(hooked, trunk, images)
    check_decomposition(hooked, trunk, images, atol=1e-10)


def test_spec_reads_prefix_tokens_pool_rows_and_norm_placement():
    vit = cs.HookedViT(VARIANTS["vit-registers-prefix-mean-fc-norm"]().eval())
    assert (vit.n_prefix_tokens, vit.pool_rows, vit.pool_type) == (3, slice(0, None), "avg")
    assert vit.final_ln_after_pool and vit.blocks[0].attn.ln.exists
    siglip = cs.HookedViT(tiny_tower(FAMILIES["siglip"]))
    assert (siglip.n_prefix_tokens, siglip.pool_rows, siglip.pool_type) == (0, slice(0, None),
                                                                            "attn")
    assert not siglip.final_ln_after_pool and siglip.proj is None
    pe_core = cs.HookedViT(tiny_tower(FAMILIES["pe-core"]))  # Eva's pool reads the class token
    assert (pe_core.n_prefix_tokens, pe_core.pool_rows) == (1, slice(0, None))
    assert pe_core.proj_bias is not None
    gap = cs.HookedViT(tiny_tower(FAMILIES["gap"]))
    assert (gap.pool_type, gap.final_ln_after_pool, gap.ln_final.exists) == ("avg", False, True)


def test_trunk_head_and_extra_projection_compose_into_one_matrix():
    torch.manual_seed(0)
    trunk = randomize_(VisionTransformer(**SMALL).eval()).double()
    head = nn.Sequential(collections.OrderedDict(
        drop=nn.Dropout(0.1), proj=nn.Linear(10, 6, dtype=torch.float64))).eval()
    hooked = cs.HookedViT(timm_trunk_spec(trunk, head))
    images = images_of(hooked)
    reference = lambda x: head(trunk(x))  # noqa: E731
    with torch.no_grad():
        pooled = hooked.run_with_cache(images, names_filter="hook_pooled")[1]["hook_pooled"]
        torch.testing.assert_close(pooled @ hooked.proj + hooked.proj_bias, reference(images))
    check_hooked_paths(hooked, reference, images)
    check_decomposition(hooked, reference, images, atol=1e-10)


def test_open_clip_projection_bias_is_in_the_readout():
    visual = tiny_tower("vit_medium_patch16_gap_256", timm_proj_bias=True)
    hooked = cs.HookedViT(visual)
    assert torch.equal(hooked.proj_bias, visual.head.proj.bias)
    torch.testing.assert_close(hooked.proj, visual.head.proj.weight.T)


def _gated() -> nn.Module:
    trunk = VisionTransformer(**SMALL)
    trunk.blocks[1].attn.gate = nn.Linear(64, 64)
    return trunk


REFUSED = {
    "gated attention": _gated,
    "mixed RoPE": lambda: Eva(**SMALL, use_rot_pos_emb=True, rope_type="mixed"),
    "dynamic_img_size": lambda: VisionTransformer(**SMALL, dynamic_img_size=True),
    "ResPostBlock": lambda: VisionTransformer(**SMALL, block_fn=ResPostBlock),
    "global_pool='max'": lambda: VisionTransformer(**SMALL, class_token=False, global_pool="max"),
    "global_pool=''": lambda: VisionTransformer(**SMALL, global_pool=""),
}


@pytest.mark.parametrize("reason", REFUSED)
def test_inexact_timm_trunks_are_refused_by_name(reason):
    with pytest.raises(UnsupportedTowerError, match=re.escape(reason)):
        cs.HookedViT(REFUSED[reason]())


def test_mlp_projection_head_is_refused():
    with pytest.raises(UnsupportedTowerError, match="MLP"):
        cs.HookedViT(tiny_tower("vit_medium_patch16_gap_256", timm_proj="mlp"))


# The sweep over every open_clip configuration with a timm image tower --------------------------

def _timm_configs() -> list[str]:
    return [name for name in open_clip.list_models()
            if open_clip.get_model_config(name).get("vision_cfg", {}).get("timm_model_name")]


def _tower_key(name: str) -> tuple:
    """Configurations with the same key differ only in their text towers."""
    embed_dim, vision = _timm_vision_cfg(name)
    keys = ("timm_model_name", "timm_pool", "timm_proj", "timm_proj_bias")
    return embed_dim, *(vision.get(key) for key in keys)


def _sweep_family(name: str) -> str:
    """Check one tower: the family it decomposes exactly as, or its refusal message."""
    try:
        visual = tiny_tower(name, patches=2, dtype=torch.float32)
    except TypeError:  # a non-ViT builder takes no depth: the full-size structure, no memory
        embed_dim, vision = _timm_vision_cfg(name)
        with torch.device("meta"):
            visual = open_clip.model._build_vision_tower(embed_dim, vision)
    try:
        hooked = cs.HookedViT(visual)
    except UnsupportedTowerError as error:
        return "refused: " + str(error).split(" captum_clipspan supports")[0]
    images = images_of(hooked, batch=1)
    check_decomposition(hooked, visual, images, atol=1e-5)
    return hooked.family


REFUSAL = {"ConvNeXt": "timm ConvNeXt", "FastViT": "timm FastVit", "Swin": "timm SwinTransformer"}


def test_every_open_clip_timm_tower_is_exact_or_refused_by_name():
    counts, families = collections.Counter(), {}
    for name in _timm_configs():
        key = _tower_key(name)
        family = families[key] = families.get(key) or _sweep_family(name)
        if family.startswith("refused"):
            label = next((k for k, text in REFUSAL.items() if text in family), None)
            assert label is not None, f"{name}: unexpected refusal ({family})"
            counts[f"refused ({label})"] += 1
            continue
        counts[family] += 1
    print(dict(sorted(counts.items())))
    assert counts["timm-vit"] and counts["timm-eva"] and counts["timm-relpos"]


@pytest.mark.parametrize("family", ["siglip", "pe-core"])
def test_head_terms_through_an_attention_pool_follow_in_place_weight_edits(family):
    """Head granularity folds each layer's out-projection with the pool's values once per weight
    version (and keeps the readout's map); the terms equal token granularity's heads, and an
    in-place edit is seen."""
    visual = tiny_tower(FAMILIES[family])
    hooked = cs.HookedViT(visual)
    images = images_of(hooked)
    # Each next round reads one weight edited in place: W_O of the last layer, then the
    # readout's norm.
    edits = [hooked.blocks[hooked.n_layers - 1].attn.W_O, hooked.ln_final.w, None]
    for edit in edits:
        with torch.no_grad():
            expected = F.normalize(visual(images), dim=-1)
        for convention in ("reference", "centered"):
            heads = cs.decompose(hooked, images, granularity="head", convention=convention)
            tokens = cs.decompose(hooked, images, granularity="token", convention=convention)
            torch.testing.assert_close(heads.heads, tokens.heads, rtol=0, atol=1e-10)
            torch.testing.assert_close(heads.total(), expected, rtol=0, atol=1e-10)
        if edit is not None:
            with torch.no_grad():
                edit.mul_(1.5)


@pytest.mark.parametrize("granularity", ["head", "token"])
def test_heads_norm_stays_fused_while_decomposing(granularity):
    """EVA02's norm over the heads' outputs runs as the tower's own (fused) module during the
    pass; its per-row scale is recomputed from the kept rows, and the terms stay exact."""
    visual = tiny_tower(FAMILIES["eva02"])
    hooked = cs.HookedViT(visual)
    images = images_of(hooked)
    calls = []
    handles = [block.attn.ln.norm.register_forward_hook(lambda *args: calls.append(1))
               for block in hooked.blocks]
    try:
        parts = cs.decompose(hooked, images, granularity=granularity, convention="centered")
    finally:
        for handle in handles:
            handle.remove()
    assert len(calls) == hooked.n_layers
    with torch.no_grad():
        expected = F.normalize(visual(images), dim=-1)
    torch.testing.assert_close(parts.total(), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(parts.heads.sum(2), parts.attns - parts.attn_biases, rtol=0,
                               atol=1e-10)


def test_an_edit_of_the_heads_norm_scale_is_followed():
    """A user's hook that rescales EVA02's norm over the heads' outputs is carried by the head
    terms (its scale is then read from the hook, not recomputed)."""
    hooked = cs.HookedViT(tiny_tower(FAMILIES["eva02"]))
    images = images_of(hooked)
    shrink = [("blocks.1.attn.ln.hook_scale", lambda scale, hook: scale * 0.01)]
    with hooked.hooks(fwd_hooks=shrink):
        with torch.no_grad():
            edited = F.normalize(hooked(images), dim=-1)
        parts = cs.decompose(hooked, images, granularity="head", convention="centered")
    with torch.no_grad():
        assert (F.normalize(hooked(images), dim=-1) - edited).abs().max() > 1e-6
    torch.testing.assert_close(parts.total(), edited, rtol=0, atol=1e-10)
