"""MLP neurons' second- and first-order effects are exact on every tower family: checked against a
brute-force computation that pushes the MLP's output through the real modules with the later
layers' patterns and norm scales frozen, against the decomposition's MLP terms, and against a
re-implementation of the authors' ``SecondOrderPrsNeurons`` (``second_order_lens``)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel
from conftest import images_for, randomize_, small_clip
from open_clip.model import _build_vision_tower
from test_timm_towers import VARIANTS, tiny_tower
from test_transformers_towers import model_for

import captum_clipspan as cs
from captum_clipspan.decomposition.neuron_maps import neuron_effects


def _coca() -> torch.nn.Module:
    torch.manual_seed(0)
    vision = dict(image_size=32, patch_size=8, width=64, layers=2, head_width=16,
                  attentional_pool=True, attn_pooler_heads=4, attn_pooler_queries=6,
                  output_tokens=True, ls_init_value=0.5)
    return randomize_(_build_vision_tower(24, vision).eval()).double()


def _timm_variant(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_(VARIANTS[name]().eval()).double()


# Every tower family the repository's tests build, in fp64 (open_clip: three pooling variants).
TOWERS = {
    "open_clip-tok": lambda: small_clip("tok").visual,
    "open_clip-avg": lambda: small_clip("avg").visual,
    "open_clip-clipa": lambda: small_clip("clipa").visual,
    "coca": lambda: cs.HookedViT(_coca()),
    "timm-siglip-map": lambda: cs.HookedViT(tiny_tower("ViT-B-16-SigLIP")),
    "timm-pe-core": lambda: cs.HookedViT(tiny_tower("PE-Core-B-16")),
    "timm-eva02-rope-sub-ln-swiglu": lambda: cs.HookedViT(tiny_tower("EVA02-B-16")),
    "timm-eva02-e-post-norm": lambda: cs.HookedViT(tiny_tower("EVA02-E-14")),
    "timm-eva-packed-swiglu-map": lambda: cs.HookedViT(_timm_variant(
        "eva-rope-attention-unfused")),
    "timm-eva-post-norm-mean": lambda: cs.HookedViT(_timm_variant("eva-post-norm-sub-ln-mean")),
    "timm-vit-rmsnorm-mlp-norm": lambda: cs.HookedViT(_timm_variant(
        "vit-token-rmsnorm-patch-drop")),
    "timm-vit-map-three-latents": lambda: cs.HookedViT(_timm_variant("vit-map-three-latents")),
    "timm-vitamin-geglu": lambda: cs.HookedViT(tiny_tower("ViTamin-S")),
    "timm-relpos": lambda: cs.HookedViT(tiny_tower("vit_relpos_medium_patch16_cls_224")),
    "transformers-clip": lambda: cs.HookedViT(model_for("clip")),
    "transformers-siglip": lambda: cs.HookedViT(model_for("siglip")),
}


def images_of(vit: cs.HookedViT, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, *vit.image_size, generator=generator).to(vit.dtype)


def no_hooks_left(vit: cs.HookedViT) -> bool:
    return vit.list_hooks() == {} and not any(m._forward_hooks for m in vit.modules())


# Brute force: the real modules, with the forward pass's patterns and norm scales frozen -------

STRETCH = 2.0 ** 20  # an affine f has f(t x) - f(0) = t * linear(x): no cancellation at x's scale


def _frozen(cache: dict, names: list[str]) -> list:
    return [(name, lambda tensor, hook, value=cache[name]: value) for name in names
            if name in cache]


def _linear_part(function, x: torch.Tensor) -> torch.Tensor:
    return (function(x * STRETCH) - function(torch.zeros_like(x))) / STRETCH


def frozen_readout(vit: cs.HookedViT, cache: dict, residual: torch.Tensor) -> torch.Tensor:
    """The readout's linear part (final norm, pool, projection) at the pass's scales and pool
    pattern, without the attention pool's own MLP (a term of its own): ``[B, N, D] -> [B, E]``."""
    hooks = _frozen(cache, ["ln_final.hook_scale", "pool.hook_pattern", "pool.ln_k.hook_scale"])
    if vit.pool is not None:
        hooks.append(("pool.hook_mlp_out", lambda tensor, hook: torch.zeros_like(tensor)))
    with vit.hooks(fwd_hooks=hooks):
        return _linear_part(lambda x: vit.spec.readout.project(vit.pool_tokens(x)), residual)


def frozen_value_path(vit: cs.HookedViT, cache: dict, layer: int, residual: torch.Tensor,
                      context: dict) -> torch.Tensor:
    """Layer ``layer``'s attention output (all heads, LayerScale and norms) as a linear map of
    its input stream, at the pass's patterns and norm scales: ``[B, N, D] -> [B, N, D]``."""
    block, prefix = vit.blocks[layer], f"blocks.{layer}."
    hooks = _frozen(cache, [prefix + name for name in (
        "attn.hook_pattern", "ln1.hook_scale", "attn.ln.hook_scale", "attn.ln_out.hook_scale")])
    with vit.hooks(fwd_hooks=hooks):
        return _linear_part(lambda x: block.attn(block.ln1(x), context), residual)


def brute_force_second_order(vit: cs.HookedViT, images: torch.Tensor, layer: int) -> torch.Tensor:
    """``[B, E]`` the part of the later heads' direct terms that flows from MLP ``layer``'s output
    (``hook_mlp_out``: every neuron, its bias, LayerScale and norms), divided by the embedding's
    norm."""
    keep = ("hook_scale", "hook_pattern", "hook_mlp_out", "hook_image_embed")
    with torch.no_grad():
        _, cache = vit.run_with_cache(images, names_filter=lambda name: name.endswith(keep))
        context = vit.embed(images)[1]
        mlp_out = cache[f"blocks.{layer}.hook_mlp_out"]
        total = sum(frozen_readout(vit, cache, frozen_value_path(vit, cache, later, mlp_out,
                                                                  context))
                    for later in range(layer + 1, vit.n_layers))
    return total / cache["hook_image_embed"].norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("family", TOWERS)
def test_second_order_centered_sums_to_brute_force_fp64(family):
    vit = TOWERS[family]()
    images = images_of(vit)
    for layer in range(vit.n_layers - 1):
        effects = neuron_effects(vit, images, layer, "second", convention="centered")
        expected = brute_force_second_order(vit, images, layer)
        assert effects.neurons.shape == (2, vit.blocks[layer].mlp.d_mlp, vit.output_dim)
        scale = expected.abs().max()
        error = ((effects.total() - expected).abs().max() / scale).item()
        assert scale > 0 and error <= 1e-10, (family, layer, error)
    assert no_hooks_left(vit)


@pytest.mark.parametrize("family", TOWERS)
@pytest.mark.parametrize("convention", ["centered", "reference"])
def test_first_order_sums_to_the_mlp_term_fp64(family, convention):
    vit = TOWERS[family]()
    images = images_of(vit)
    parts = cs.decompose(vit, images, granularity="layer", convention=convention)
    for layer in range(vit.n_layers):
        effects = neuron_effects(vit, images, layer, "first", convention=convention)
        assert (effects.bias is None) == (convention == "reference")
        expected = parts.mlps[:, layer]
        assert (effects.total() - expected).abs().max() <= 1e-10 * expected.abs().max()


def test_second_order_is_exact_in_fp32():
    vit = small_clip("tok", torch.float32).visual
    images = images_of(vit)
    effects = neuron_effects(vit, images, 0, "second", convention="centered")
    assert effects.neurons.dtype == torch.float32
    expected = brute_force_second_order(vit, images, 0)
    assert (effects.total() - expected).abs().max() <= 1e-5 * expected.abs().max()


# The authors' code: SecondOrderPrsNeurons, re-implemented ------------------------------------

def _mean_and_sqrt_var(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' LayerNorm hooks ``mean`` and ``sqrt_var`` (their ``utils/transformer.py``)."""
    mean = x.mean(dim=-1, keepdim=True)
    return mean, torch.sqrt((x ** 2).mean(dim=-1, keepdim=True) - mean ** 2 + eps)


def authors_second_order(model: torch.nn.Module, cache: dict, mlp_layer: int,
                         representation: torch.Tensor) -> torch.Tensor:
    """``compute_second_order_neuron_prs.py``: ``apply_attention_head_and_project_layer_neurons``
    summed over every later layer and head, with the full ``[b, tokens, neurons, d]`` tensors."""
    visual = model.visual
    blocks = visual.transformer.resblocks
    n_blocks = len(blocks)
    post_gelu = cache[f"blocks.{mlp_layer}.mlp.hook_post"]
    n = post_gelu.shape[-1]
    c_proj = blocks[mlp_layer].mlp.c_proj  # apply_mlp_post
    mlp_outputs = torch.einsum("btn,nm->btnm", post_gelu, c_proj.weight.T) + c_proj.bias / n
    post_mean, post_std = _mean_and_sqrt_var(cache[f"blocks.{n_blocks - 1}.hook_resid_post"][:, 0],
                                             visual.ln_post.eps)
    total = 0
    for layer in range(mlp_layer + 1, n_blocks):
        block, term = blocks[layer], (1 + 2 * layer) * n
        mean, std = _mean_and_sqrt_var(cache[f"blocks.{layer}.hook_resid_pre"], block.ln_1.eps)
        normalized = block.ln_1.weight * (mlp_outputs - mean[:, :, None] / term)
        normalized = normalized / std[:, :, None] + block.ln_1.bias / term
        attn = block.attn
        heads, width = attn.num_heads, attn.embed_dim
        v_weight = attn.in_proj_weight[2 * width:].reshape(heads, width // heads, -1)
        v_bias = attn.in_proj_bias[2 * width:].reshape(1, heads, 1, width // heads)
        out_weight = attn.out_proj.weight.reshape(width, heads, width // heads)
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        share = (1 + 2 * layer) * (1 + 2 * n_blocks) * heads * n
        for head in range(heads):
            v = torch.einsum("bnxc,dc->bnxd", normalized, v_weight[head]) + v_bias[:, head] / term
            x = torch.einsum("bnm,bmxc->bnxc", pattern[:, head], v)
            ret = torch.einsum("bnxc,dc->bnxd", x, out_weight[:, head])
            ret = ret + attn.out_proj.bias / (term * heads)
            centered = ret[:, 0] - post_mean[:, None] / share
            post_ln = visual.ln_post.weight * centered / post_std[:, None]
            total = total + 100.0 * ((post_ln + visual.ln_post.bias / share) @ visual.proj)
    return total / representation.norm(dim=-1)[:, None, None]


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_reference_convention_is_the_authors_second_order(dtype, tolerance):
    clip = small_clip("quickgelu-no-ls", dtype)  # their model: class token, no LayerScale
    images = images_for(clip, batch=3)
    keep = ("hook_pattern", "hook_resid_pre", "hook_resid_post", "mlp.hook_post")
    with torch.no_grad():
        representation, cache = clip.visual.run_with_cache(
            images, names_filter=lambda name: name.endswith(keep))
        for layer in range(clip.visual.n_layers - 1):
            theirs = authors_second_order(clip.model, cache, layer, representation)
            ours = 100 * cs.second_order(clip, images, layer)
            assert ours.shape == theirs.shape == (3, 256, clip.embed_dim)
            assert (ours - theirs).abs().max() <= tolerance


def test_neurons_and_texts_select_from_the_full_effects(clip64):
    images = images_for(clip64)
    texts = F.normalize(torch.randn(4, clip64.embed_dim, dtype=torch.float64), dim=-1)
    full = cs.second_order(clip64, images, 1)
    picked = cs.second_order(clip64, images, 1, neurons=[7, 0, 255], texts=texts)
    assert picked.shape == (2, 3, 4)
    torch.testing.assert_close(picked, full[:, [7, 0, 255]] @ texts.T, rtol=0, atol=1e-13)
    direct = cs.first_order(clip64, images, -1, neurons=torch.tensor([3]), texts=texts[0])
    torch.testing.assert_close(direct, cs.first_order(clip64, images, 2)[:, [3]] @ texts[:1].T,
                               rtol=0, atol=1e-13)
    words = cs.second_order(clip64, images, 0, neurons=5, texts=["a dog", "a cat"])
    assert words.shape == (2, 1, 2)


def test_effects_are_split_into_bounded_batches(clip64, monkeypatch):
    from captum_clipspan.decomposition import neuron_maps as module
    images = images_for(clip64, batch=3)
    whole = module.neuron_effects(clip64, images, 0, convention="centered")
    monkeypatch.setattr(module, "CAPTURE_BUDGET", 1)
    parts = module.neuron_effects(clip64, images, 0, convention="centered")
    torch.testing.assert_close(parts.neurons, whole.neurons, rtol=0, atol=1e-14)
    torch.testing.assert_close(parts.bias, whole.bias, rtol=0, atol=1e-14)


def test_kept_maps_follow_in_place_weight_edits(clip64):
    images = images_for(clip64)
    before = cs.second_order(clip64, images, 0, convention="centered")
    with torch.no_grad():
        clip64.model.visual.transformer.resblocks[0].mlp.c_proj.weight.mul_(2)
    after = cs.second_order(clip64, images, 0, convention="centered")
    fresh = cs.second_order(cs.HookedViT(clip64.model.visual), images, 0, convention="centered")
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, fresh, rtol=0, atol=1e-15)


# The hooked MLPs ----------------------------------------------------------------------------

@pytest.mark.parametrize("family", TOWERS)
def test_hook_post_fires_with_the_hidden_units_and_interventions_propagate(family):
    vit = TOWERS[family]()
    images = images_of(vit)
    mlp = vit.blocks[0].mlp
    assert mlp.has_neurons and mlp.W_out.shape == (mlp.d_mlp, vit.d_model)
    assert mlp.b_out.shape == (vit.d_model,)
    names = ["blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out"]
    with torch.no_grad():
        expected = vit(images)
        out, cache = vit.run_with_cache(images, names_filter=names)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
        assert cache[names[0]].shape == (2, vit.n_tokens, mlp.d_mlp)

        def silence(post, hook):
            post[..., :3] = 0
            return post

        with vit.hooks(fwd_hooks=[(names[0], silence)]):
            edited, edited_cache = vit.run_with_cache(images, names_filter=names[1])
    assert not torch.allclose(edited_cache[names[1]], cache[names[1]])
    assert not torch.equal(edited, expected)
    assert no_hooks_left(vit)


# The Captum attribution -----------------------------------------------------------------------

def test_neuron_contribution_shapes_target_and_first_order_delta(clip64):
    images = images_for(clip64)
    texts = clip64.encode_text(["a photo of a dog", "a red circle", "stripes"])
    second = cs.NeuronContribution(clip64, layer=1)
    scores = second.attribute(images, texts=texts)
    assert scores.shape == (2, 256, 3) and not second.has_convergence_delta()
    torch.testing.assert_close(scores, cs.second_order(clip64, images, 1, texts=texts))
    own = second.attribute(images, texts=texts, target=[2, 0], neurons=[4, 9])
    torch.testing.assert_close(own, torch.stack([scores[0, [4, 9], 2], scores[1, [4, 9], 0]]))
    assert second.attribute(images, neurons=[1]).shape == (2, 1, clip64.embed_dim)
    for convention in ("reference", "centered"):
        first = cs.NeuronContribution(clip64, layer=-1, order="first", convention=convention)
        assert first.has_convergence_delta()
        scores, delta = first.attribute(images, texts=texts, target=1,
                                        return_convergence_delta=True)
        assert scores.shape == (2, 256) and delta.shape == (2,)
        assert delta.abs().max() < 1e-12
        assert first.compute_convergence_delta(images, texts=texts).abs().max() < 1e-12


def test_neuron_contribution_under_noise_tunnel(clip32):
    images = images_for(clip32)
    texts = clip32.encode_text(["a photo of a dog", "a red circle"])
    neurons = cs.NeuronContribution(clip32, layer=0)
    n_samples, stdev, target = 3, 0.1, [1, 0]
    torch.manual_seed(0)
    smoothed = NoiseTunnel(neurons).attribute(images, nt_samples=n_samples, stdevs=stdev,
                                              texts=texts, target=target, neurons=[2, 5, 11])
    torch.manual_seed(0)  # NoiseTunnel draws torch.normal noise for the repeated batch
    repeated = images.repeat_interleave(n_samples, dim=0)
    noisy = repeated + torch.normal(0, torch.full_like(repeated, stdev))
    plain = neurons.attribute(noisy, texts=texts, target=[t for t in target
                                                          for _ in range(n_samples)],
                              neurons=[2, 5, 11])
    assert smoothed.shape == (2, 3)
    torch.testing.assert_close(smoothed, plain.reshape(2, n_samples, 3).mean(dim=1), atol=1e-5,
                               rtol=0)
    assert no_hooks_left(clip32.visual)


# Bad input ------------------------------------------------------------------------------------

def test_bad_input_gets_a_clear_error_and_leaves_no_hook(clip64):
    images = images_for(clip64)
    with pytest.raises(ValueError, match=r"layer 2 is the last layer.*accepted: layers 0\.\.1"):
        cs.second_order(clip64, images, -1)
    with pytest.raises(ValueError, match="last layer"):
        cs.NeuronContribution(clip64, layer=2)
    with pytest.raises(ValueError, match=r"neurons index 256 is out of range.*256 hidden units"):
        cs.second_order(clip64, images, 0, neurons=[0, 256])
    with pytest.raises(ValueError, match="non-negative"):
        cs.first_order(clip64, images, 0, neurons=[-1])
    with pytest.raises(ValueError, match=r"shape \[24\] or \[T, 24\].*got \[2, 7\]"):
        cs.second_order(clip64, images, 0, texts=torch.randn(2, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="out of range"):
        cs.first_order(clip64, images, 3)
    with pytest.raises(ValueError, match="order must be one of"):
        cs.NeuronContribution(clip64, layer=0, order="third")
    with pytest.raises(ValueError, match="no convergence delta"):
        cs.NeuronContribution(clip64, layer=0).attribute(images, return_convergence_delta=True)
    with pytest.raises(ValueError, match="every neuron"):
        cs.NeuronContribution(clip64, 0, order="first").attribute(
            images, neurons=[1], return_convergence_delta=True)
    with pytest.raises(ValueError, match="images must have shape"):
        cs.second_order(clip64, images[:, :, :16], 0)
    assert no_hooks_left(clip64.visual)


def test_edits_on_the_value_path_are_refused_and_pattern_edits_followed(clip64):
    images = images_for(clip64)
    vit = clip64.visual
    for name in ("blocks.1.attn.hook_v", "blocks.1.attn.hook_z", "blocks.2.hook_resid_pre",
                 "blocks.0.hook_mlp_out"):
        with vit.hooks(fwd_hooks=[(name, lambda tensor, hook: tensor * 2)]), pytest.raises(
                ValueError, match=rf"hooks on \['{re.escape(name)}'\].*do not carry"):
            cs.second_order(clip64, images, 0)
    # an edited pattern is read from the run: the same as the unedited effects when the edit is
    # the identity, and different when it changes the pattern
    plain = cs.second_order(clip64, images, 0)
    with vit.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", lambda tensor, hook: tensor)]):
        same = cs.second_order(clip64, images, 0)
    with vit.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern",
                               lambda tensor, hook: torch.ones_like(tensor) / tensor.shape[-1])]):
        uniform = cs.second_order(clip64, images, 0)
    torch.testing.assert_close(same, plain, rtol=0, atol=1e-12)
    assert not torch.allclose(uniform, plain)
    assert no_hooks_left(vit)


def test_an_mlp_without_exposed_hidden_units_is_refused_by_name(clip64):
    from captum_clipspan.hooked.spec import MLPSpec

    mlp = clip64.visual.blocks[0].mlp
    mlp.__dict__["spec"] = MLPSpec(run=mlp.spec.run)
    with pytest.raises(ValueError, match="MLP layer 0 .* does not expose its hidden units"):
        cs.second_order(clip64, images_for(clip64), 0)

