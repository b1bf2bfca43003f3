"""The hooked tower computes what open_clip computes, exposes TransformerLens hooks, and never
leaves hooks or attributes behind."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from conftest import NAMED_TOWERS, SMALL_VARIANTS, images_for, named_clip, small_clip

import captum_clipspan as cs
from captum_clipspan.hooked.backends.open_clip_text import OpenCLIPText


@pytest.mark.parametrize("name", NAMED_TOWERS)
def test_passthrough_is_bit_identical_to_open_clip(name):
    clip = named_clip(name)
    images = images_for(clip)
    with torch.no_grad():
        assert torch.equal(clip.visual(images), clip.model.encode_image(images))


@pytest.mark.parametrize("variant", SMALL_VARIANTS)
def test_split_attention_path_matches_open_clip_fp64(variant):
    clip = small_clip(variant)
    images = images_for(clip)
    expected = clip.model.encode_image(images)
    for block in clip.visual.blocks:
        block.attn.force_split = True
    assert torch.allclose(clip.visual(images), expected, rtol=0, atol=1e-12)


def test_expanded_layer_norms_and_per_head_results_match_fp64(clip64):
    images = images_for(clip64)
    expected = clip64.model.encode_image(images)
    names = lambda name: name.endswith(("hook_scale", "hook_result", "hook_pattern"))  # noqa: E731
    out, cache = clip64.visual.run_with_cache(images, names_filter=names)
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)
    n, h, d = clip64.visual.n_tokens, clip64.visual.n_heads, clip64.visual.d_model
    assert cache["blocks.0.attn.hook_result"].shape == (2, n, h, d)
    assert cache["blocks.2.attn.hook_pattern"].shape == (2, h, n, n)
    assert torch.allclose(cache["blocks.2.attn.hook_pattern"].sum(-1), torch.ones(2, h, n).double())
    assert cache["ln_final.hook_scale"].shape == (2, n, 1)


def test_cache_has_transformer_lens_names(clip32):
    _, cache = clip32.visual.run_with_cache(images_for(clip32))
    for name in ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale",
                 "blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_v",
                 "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z", "blocks.1.attn.hook_result",
                 "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.2.hook_resid_post",
                 "ln_final.hook_scale", "hook_pooled", "hook_image_embed"]:
        assert name in cache.keys() if hasattr(cache, "keys") else name in cache


def test_residual_stream_is_sum_of_its_terms(clip64):
    _, cache = clip64.visual.run_with_cache(images_for(clip64))
    total = cache["hook_embed"].clone()
    for layer in range(clip64.visual.n_layers):
        total += cache[f"blocks.{layer}.hook_attn_out"] + cache[f"blocks.{layer}.hook_mlp_out"]
    assert torch.allclose(total, cache["blocks.2.hook_resid_post"], atol=1e-12)


def test_intervention_on_split_path_propagates(clip64):
    images = images_for(clip64)
    clean = clip64.visual(images)

    def zero_head(z, hook):
        z[:, :, 1] = 0.0
        return z

    patched = clip64.visual.run_with_hooks(images, fwd_hooks=[("blocks.2.attn.hook_z", zero_head)])
    assert not torch.allclose(clean, patched)
    assert torch.equal(clip64.visual(images), clean)


def test_hooks_are_removed_after_an_exception(clip64):
    def broken(tensor, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        clip64.visual.run_with_hooks(images_for(clip64),
                                     fwd_hooks=[("blocks.1.attn.hook_pattern", broken)])
    assert clip64.visual.list_hooks() == {}
    assert not any(m._forward_hooks for m in clip64.modules())


def test_decompose_leaves_no_hooks_when_it_raises(clip64, monkeypatch):
    decompose_module = importlib.import_module("captum_clipspan.decomposition.capture")

    def broken(*args, **kwargs):
        raise RuntimeError("inside a hook")

    monkeypatch.setattr(decompose_module, "token_terms", broken)
    with pytest.raises(RuntimeError, match="inside a hook"):
        cs.decompose(clip64, images_for(clip64), granularity="token")
    assert clip64.visual.list_hooks() == {}
    assert not any(m._forward_hooks for m in clip64.modules())


def test_wrapping_and_decomposing_leave_the_open_clip_model_unchanged():
    clip = small_clip("tok")
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    attributes = {id(m): set(vars(m)) for m in clip.model.modules()}
    cs.decompose(clip, images_for(clip), granularity="token", text_embeddings=torch.randn(3, 24))
    assert all(torch.equal(v, clip.model.state_dict()[k]) for k, v in before.items())
    assert {id(m): set(vars(m)) for m in clip.model.modules()} == attributes
    assert not clip.model.training
    assert not any(m._forward_hooks for m in clip.modules())


def test_training_mode_model_is_switched_to_eval_with_a_warning():
    clip = small_clip("tok")
    clip.model.train()
    with pytest.warns(UserWarning, match="training mode"):
        rewrapped = cs.HookedCLIP.from_open_clip(clip.model)
    assert not rewrapped.model.training


def test_encode_text_gives_unit_rows(clip32):
    texts = clip32.encode_text(["a photo of a dog", "a cat"])
    assert texts.shape == (2, 24)
    assert torch.allclose(texts.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_text_backend_encodes_unnormalized_texts_from_strings_or_tokens(clip64):
    texts = ["a photo of a dog", "a cat"]
    assert isinstance(clip64.text, OpenCLIPText)
    tokens = clip64.text.tokenize(texts)
    expected = clip64.model.encode_text(tokens)
    assert torch.equal(clip64.text.encode_text(texts), expected)
    assert torch.equal(clip64.text.encode_text(tokens), expected)
    assert torch.equal(clip64.encode_text(texts), F.normalize(expected, dim=-1))
    assert torch.equal(clip64.encode_text(texts, normalize=False, batch_size=1), expected)


def test_text_parameters_are_everything_outside_the_image_tower(clip32):
    names = set(clip32.text.text_parameters())
    state = clip32.model.state_dict()
    assert names == {name for name in state if not name.startswith("visual.")}
    assert "token_embedding.weight" in names and "ln_final.weight" in names


def test_logit_scale_is_the_learned_temperature_as_a_multiplier(clip32):
    assert torch.equal(clip32.logit_scale, clip32.model.logit_scale.exp())
    assert not clip32.logit_scale.requires_grad and clip32.text.logit_bias is None


def test_hooked_clip_is_one_hooked_vit_beside_one_text_backend(clip32):
    rebuilt = cs.HookedCLIP(clip32.text, clip32.visual)
    assert rebuilt.visual is clip32.visual and rebuilt.model is clip32.model
    assert cs.HookedCLIP(clip32.text).visual.model is clip32.model.visual
    with pytest.raises(TypeError, match="TextBackend"):
        cs.HookedCLIP(clip32.model)


def test_preprocess_and_name_are_the_text_backends(clip32):
    from torchvision.transforms import v2

    def transform(image):
        return image

    clip32.preprocess = transform
    assert clip32.text.preprocess is transform and clip32.preprocess is transform
    module_transform = v2.Compose([v2.ToDtype(torch.float32)])  # an nn.Module
    clip32.preprocess = module_transform
    assert clip32.preprocess is module_transform and "preprocess" not in clip32._modules
    assert clip32.model_name is None
    assert cs.HookedCLIP.from_pretrained("toy").model_name == "toy"

