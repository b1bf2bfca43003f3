"""Hooks that users and Captum add: the decomposition follows them or refuses them, plain PyTorch
hooks see hook points' values, and one model serves several threads."""

from __future__ import annotations

import threading

import pytest
import torch
from captum.attr import LayerActivation
from conftest import images_for, small_clip

import captum_clipspan as cs


def _sharpen(pattern, hook):
    sharp = pattern.pow(2)
    return sharp / sharp.sum(dim=-1, keepdim=True)


def test_an_edited_pattern_is_decomposed_consistently(clip64):
    images = images_for(clip64)
    vit = clip64.visual
    with vit.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", _sharpen)]):
        edited = torch.nn.functional.normalize(vit(images), dim=-1)
        parts = cs.decompose(clip64, images, granularity="token")
    clean = torch.nn.functional.normalize(vit(images), dim=-1)
    assert (edited - clean).abs().max() > 1e-3  # the edit matters
    assert (parts.total() - edited).abs().max() < 1e-10
    assert (parts.tokens.sum(dim=2) - parts.heads).abs().max() < 1e-10


def test_an_edited_value_is_decomposed_consistently(clip64):
    images = images_for(clip64)

    def double_head(v, hook):
        v = v.clone()
        v[:, :, 0] *= 2.0
        return v

    with clip64.visual.hooks(fwd_hooks=[("blocks.2.attn.hook_v", double_head)]):
        edited = torch.nn.functional.normalize(clip64.visual(images), dim=-1)
        parts = cs.decompose(clip64, images, granularity="token")
    assert (parts.total() - edited).abs().max() < 1e-10
    assert (parts.tokens.sum(dim=2) - parts.heads).abs().max() < 1e-10


def _shift(x, hook):
    return x + 0.5 * torch.ones_like(x)


@pytest.mark.parametrize("name, granularity", [
    ("blocks.1.hook_resid_post", "layer"),
    ("blocks.1.hook_resid_mid", "layer"),
    ("hook_pooled", "layer"),
    ("blocks.1.attn.hook_result", "head"),
    ("blocks.1.hook_attn_out", "head"),
    ("blocks.1.attn.hook_z", "token"),
])
def test_edits_that_no_term_carries_are_refused(clip64, name, granularity):
    with clip64.visual.hooks(fwd_hooks=[(name, _shift)]):
        with pytest.raises(ValueError, match="no term carries"):
            cs.decompose(clip64, images_for(clip64), granularity=granularity)


def test_hooks_that_only_read_are_fine(clip64):
    seen = []
    names = ["blocks.1.hook_resid_post", "blocks.1.attn.hook_result", "blocks.1.hook_attn_out",
             "blocks.1.attn.hook_z", "hook_pooled"]
    hooks = [(name, lambda x, hook: seen.append(hook.name)) for name in names]
    with clip64.visual.hooks(fwd_hooks=hooks):
        parts = cs.decompose(clip64, images_for(clip64), granularity="token")
    assert sorted(set(seen)) == sorted(names)
    assert parts.tokens is not None


def test_a_z_edit_is_followed_by_head_terms(clip64):
    images = images_for(clip64)

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, 1] = 0.0
        return z

    with clip64.visual.hooks(fwd_hooks=[("blocks.2.attn.hook_z", zero_head)]):
        edited = torch.nn.functional.normalize(clip64.visual(images), dim=-1)
        parts = cs.decompose(clip64, images, granularity="head", convention="centered")
    assert (parts.total() - edited).abs().max() < 1e-10
    assert parts.heads[:, 2, 1].abs().max() < 1e-12


def test_captum_layer_activation_sees_the_attention_pattern(clip64):
    images = images_for(clip64)
    vit = clip64.visual
    pattern = LayerActivation(clip64, vit.mod_dict["blocks.0.attn.hook_pattern"]).attribute(images)
    scale = LayerActivation(clip64, vit.mod_dict["blocks.1.ln1.hook_scale"]).attribute(images)
    _, cache = vit.run_with_cache(images, names_filter=lambda n: n in (
        "blocks.0.attn.hook_pattern", "blocks.1.ln1.hook_scale"))
    assert pattern.shape == (2, vit.n_heads, vit.n_tokens, vit.n_tokens)
    assert torch.allclose(pattern, cache["blocks.0.attn.hook_pattern"], atol=1e-12)
    assert torch.allclose(scale, cache["blocks.1.ln1.hook_scale"], atol=1e-12)
    assert not any(m._forward_hooks for m in clip64.modules())


def test_a_plain_pytorch_hook_can_edit_the_pattern(clip64):
    images = images_for(clip64)
    clean = clip64.visual(images)
    handle = clip64.visual.mod_dict["blocks.1.attn.hook_pattern"].register_forward_hook(
        lambda module, args, output: _sharpen(output, None))
    try:
        edited = clip64.visual(images)
    finally:
        handle.remove()
    assert (edited - clean).abs().max() > 1e-4
    assert torch.equal(clip64.visual(images), clean)


def test_one_model_serves_two_threads():
    clip = small_clip("avg", torch.float64)
    batches = [images_for(clip, batch=2, seed=seed) for seed in range(2)]
    expected = [cs.decompose(clip, batch, granularity="token").tokens for batch in batches]
    failures = []

    def work(index: int) -> None:
        for _ in range(10):
            try:
                tokens = cs.decompose(clip, batches[index], granularity="token").tokens
            except Exception as error:  # a thread's exception would not fail the test
                failures.append(repr(error))
                continue
            if not torch.allclose(tokens, expected[index], atol=1e-12):
                failures.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert not any(m._forward_hooks for m in clip.modules())
