"""TransformerLens users' cache calls on the hooked ViT, checked against our own decomposition."""

from __future__ import annotations

import pytest
import torch
from conftest import images_for, small_clip
from transformer_lens import ActivationCache

import captum_clipspan as cs
from captum_clipspan.hooked.activation_cache import ViTActivationCache, run_with_cache


@pytest.fixture(scope="module")
def clip():
    return small_clip("tok")


def _centered(clip, images):
    return cs.decompose(clip, images, granularity="head", convention="centered", normalize=False)


def test_cache_is_a_transformer_lens_activation_cache_with_shorthand_indexing(clip):
    images = images_for(clip)
    out, cache = run_with_cache(clip.visual, images)
    assert isinstance(cache, ActivationCache)
    assert torch.allclose(out, clip.visual(images), atol=1e-12)
    n, h = clip.visual.n_tokens, clip.visual.n_heads
    assert cache["pattern", -1].shape == (2, h, n, n)
    assert torch.equal(cache["resid_pre", 1], cache["blocks.1.hook_resid_pre"])
    assert torch.equal(cache["scale", 0, "ln1"], cache["blocks.0.ln1.hook_scale"])
    assert "hook_embed" in cache and cache.get("no such hook") is None
    assert len(cache.stack_activation("attn_out")) == clip.visual.n_layers


def test_plain_dict_when_asked(clip):
    _, cache = run_with_cache(clip.visual, images_for(clip), return_cache_object=False)
    assert type(cache) is dict


def test_stack_head_results_equal_the_decomposition_heads_fp64(clip):
    images = images_for(clip)
    _, cache = run_with_cache(clip.visual, images)
    heads, labels = cache.stack_head_results(pos_slice=0, apply_ln=True, return_labels=True)
    vit = clip.visual
    assert labels[:2] == ["L0H0", "L0H1"] and len(labels) == vit.n_layers * vit.n_heads
    terms = cache.to_image_embed(heads)  # [L*H, B, E]
    expected = _centered(clip, images).heads  # [B, L, H, E]
    got = terms.reshape(vit.n_layers, vit.n_heads, *terms.shape[1:]).permute(2, 0, 1, 3)
    assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("variant", ["tok", "tok-ln-after-pool"])
def test_decompose_resid_sums_to_the_image_embedding_fp64(variant):
    clip = small_clip(variant)
    images = images_for(clip)
    _, cache = run_with_cache(clip.visual, images)
    stack, labels = cache.decompose_resid(pos_slice=0, apply_ln=True, return_labels=True)
    assert labels[0] == "embed" and labels[-1] == f"{clip.visual.n_layers - 1}_mlp_out"
    terms = cache.to_image_embed(stack)  # [2L + 1, B, E]
    parts = _centered(clip, images)
    assert torch.allclose(terms[0], parts.embed, atol=1e-12)
    assert torch.allclose(terms[1::2].transpose(0, 1), parts.attns, atol=1e-12)
    assert torch.allclose(terms[2::2].transpose(0, 1), parts.mlps, atol=1e-12)
    assert torch.allclose(terms.sum(0) + parts.ln_bias, clip.model.encode_image(images),
                          atol=1e-12)


def test_mean_pooled_stack_matches_the_decomposition_fp64():
    clip = small_clip("avg")
    images = images_for(clip)
    _, cache = run_with_cache(clip.visual, images)
    patches = slice(clip.visual.n_prefix_tokens, None)
    stack = cache.decompose_resid(pos_slice=patches, apply_ln=True)  # [2L + 1, B, P, D]
    terms = cache.to_image_embed(stack.mean(dim=-2))
    parts = _centered(clip, images)
    assert torch.allclose(terms[1::2].transpose(0, 1), parts.attns, atol=1e-12)


def test_accumulated_resid_ends_at_the_image_embedding_fp64(clip):
    images = images_for(clip)
    _, cache = run_with_cache(clip.visual, images)
    resid, labels = cache.accumulated_resid(apply_ln=True, pos_slice=0, return_labels=True)
    assert labels == [f"{layer}_pre" for layer in range(clip.visual.n_layers)] + ["final_post"]
    assert torch.allclose(resid[-1] @ clip.visual.proj, clip.model.encode_image(images),
                          atol=1e-12)


def test_unpooled_stack_on_a_norm_after_pool_tower_is_refused():
    clip = small_clip("tok-ln-after-pool")
    _, cache = run_with_cache(clip.visual, images_for(clip))
    with pytest.raises(ValueError, match="pos_slice=0"):
        cache.decompose_resid(apply_ln=True)


def test_head_results_missing_from_the_cache_are_named_not_rebuilt_wrongly(clip):
    _, cache = run_with_cache(clip.visual, images_for(clip),
                              names_filter=lambda name: name.endswith("hook_z"))
    with pytest.raises(KeyError, match="hook_result"):
        cache.stack_head_results()


def test_logit_attrs_points_to_the_image_embedding(clip):
    _, cache = run_with_cache(clip.visual, images_for(clip))
    with pytest.raises(NotImplementedError, match="to_image_embed"):
        cache.logit_attrs(torch.zeros(1, 2, 3), tokens=torch.zeros(2, dtype=torch.long))


def test_hooked_vit_run_with_cache_returns_the_activation_cache(clip):
    """Needs the one-line ``HookedViT.run_with_cache`` that delegates to this module."""
    _, cache = clip.visual.run_with_cache(images_for(clip))
    assert isinstance(cache, ViTActivationCache)
    assert "blocks.0.hook_resid_pre" in cache
