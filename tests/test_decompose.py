"""The decomposition is exact: every granularity and convention sums to the model's own output."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from conftest import NAMED_TOWERS, SMALL_VARIANTS, images_for, named_clip, small_clip

import captum_clipspan as cs


def check_complete(parts: cs.Decomposition, expected: torch.Tensor, atol: float) -> None:
    """Terms sum to the embedding; heads sum to their layers; tokens sum to their heads."""
    assert (parts.total() - expected).abs().max() <= atol
    assert (parts.image_embed - expected).abs().max() <= atol
    if parts.heads is not None:
        layers = list(parts.layers)
        per_layer = parts.heads.sum(dim=2)
        if parts.attn_biases is not None:
            per_layer = per_layer + parts.attn_biases[:, layers]
        assert (per_layer - parts.attns[:, layers]).abs().max() <= atol
    if parts.tokens is not None:
        assert (parts.tokens.sum(dim=2) - parts.heads).abs().max() <= atol


@pytest.mark.parametrize("name", NAMED_TOWERS)
def test_terms_sum_to_embedding_fp64(name):
    clip = named_clip(name, torch.float64)
    images = images_for(clip)
    expected = F.normalize(clip.model.encode_image(images), dim=-1)
    for convention in ["reference", "centered"]:
        parts = cs.decompose(clip, images, granularity="token", convention=convention,
                             layers=[0, -1])
        check_complete(parts, expected, atol=1e-10)


@pytest.mark.parametrize("name", NAMED_TOWERS)
def test_terms_sum_to_embedding_fp32(name):
    clip = named_clip(name, torch.float32)
    images = images_for(clip)
    with torch.no_grad():
        expected = F.normalize(clip.model.encode_image(images), dim=-1)
    parts = cs.decompose(clip, images, granularity="token", layers=[-1])
    check_complete(parts, expected, atol=1e-5)


@pytest.mark.parametrize("variant", SMALL_VARIANTS)
@pytest.mark.parametrize("convention", ["reference", "centered"])
@pytest.mark.parametrize("granularity", ["layer", "head", "token"])
def test_every_variant_granularity_and_convention_is_exact_fp64(variant, convention, granularity):
    clip = small_clip(variant)
    images = images_for(clip, batch=3)
    raw = clip.model.encode_image(images)
    parts = cs.decompose(clip, images, granularity=granularity, convention=convention)
    check_complete(parts, F.normalize(raw, dim=-1), atol=1e-12)
    unnormalized = cs.decompose(clip, images, granularity=granularity, convention=convention,
                                normalize=False)
    check_complete(unnormalized, raw, atol=1e-11)


def test_text_projection_equals_dot_products_of_vectors(clip64):
    images = images_for(clip64)
    texts = F.normalize(torch.randn(5, 24, dtype=torch.float64), dim=-1)
    vectors = cs.decompose(clip64, images, granularity="token", convention="centered")
    scores = cs.decompose(clip64, images, granularity="token", convention="centered",
                          text_embeddings=texts)
    for field in ["embed", "attns", "mlps", "heads", "tokens", "attn_biases", "ln_bias",
                  "image_embed"]:
        assert torch.allclose(getattr(vectors, field) @ texts.T, getattr(scores, field),
                              atol=1e-12), field
    cosine = F.normalize(clip64.model.encode_image(images), dim=-1) @ texts.T
    assert torch.allclose(scores.total(), cosine, atol=1e-12)


def test_layer_selection_reports_the_same_heads(clip64):
    images = images_for(clip64)
    full = cs.decompose(clip64, images, granularity="token")
    chosen = cs.decompose(clip64, images, granularity="token", layers=[-1, 1])
    assert chosen.layers == (1, 2)
    assert torch.allclose(chosen.heads, full.heads[:, 1:], atol=1e-14)
    assert torch.allclose(chosen.tokens, full.tokens[:, 1:], atol=1e-14)
    assert torch.allclose(chosen.total(), full.total(), atol=1e-14)


@pytest.mark.parametrize("variant", ["tok", "clipa", "avg"])
def test_reference_convention_matches_the_papers_formula(variant):
    """Brute force from the full attention pattern, with the paper's code's normalization."""
    clip = small_clip(variant)
    vit, visual = clip.visual, clip.model.visual
    images = images_for(clip)
    _, cache = vit.run_with_cache(images, names_filter=lambda n: n.endswith(
        ("hook_pattern", "hook_v", "hook_embed", "hook_mlp_out", "hook_resid_post")))
    n_layers, n_heads, d_head = vit.n_layers, vit.n_heads, vit.d_head
    final = cache[f"blocks.{n_layers - 1}.hook_resid_post"]
    rows = slice(0, 1) if vit.pool_type == "tok" else slice(1, None)
    if variant == "avg":  # LayerNorm on each token, then the mean
        scale = (final[:, rows].var(-1, unbiased=False) + visual.ln_post.eps).sqrt()
        weights = 1 / scale / final[:, rows].shape[1]
    else:
        pooled = final[:, rows].mean(1)
        weights = (1 / (pooled.var(-1, unbiased=False) + visual.ln_post.eps).sqrt())[:, None]
        weights = weights.expand(-1, final[:, rows].shape[1]) / final[:, rows].shape[1]
    z_hat = torch.einsum("br,brd->bd", weights, final[:, rows])
    n_terms = 2 * n_layers + 1
    gamma, beta, proj = visual.ln_post.weight, visual.ln_post.bias, visual.proj

    def to_joint(x, share):  # the paper's _normalize_*: x is already divided by the LN scale
        return (gamma * (x - z_hat.mean(-1).reshape(-1, *[1] * (x.dim() - 1)) * share)
                + beta * share) @ proj

    norm = clip.model.encode_image(images).norm(dim=-1)
    for layer in range(n_layers):
        block = visual.transformer.resblocks[layer]
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [B, H, Nq, Nk]
        values = cache[f"blocks.{layer}.attn.hook_v"]  # [B, N, H, d]
        w_o = block.attn.out_proj.weight.reshape(-1, n_heads, d_head)
        per_cell = torch.einsum("bhqk,bkhd,Dhd->bqkhD", pattern[:, :, rows], values, w_o)
        per_cell = torch.einsum("bq,bqkhD->bkhD", weights, per_cell) * block.ls_1.gamma
        n_cells = per_cell.shape[1] * n_heads
        bias = weights.sum(1)[:, None, None, None] * block.ls_1.gamma * block.attn.out_proj.bias
        expected = to_joint(per_cell + bias / n_cells, 1 / (n_terms * n_cells))
        parts = cs.decompose(clip, images, granularity="token", layers=[layer])
        assert torch.allclose(parts.tokens[:, 0] * norm[:, None, None, None], expected,
                              atol=1e-12)
    embed = to_joint(torch.einsum("br,brd->bd", weights, cache["hook_embed"][:, rows]),
                     1 / n_terms)
    assert torch.allclose(parts.embed * norm[:, None], embed, atol=1e-12)


def _coca_tower(dtype: torch.dtype) -> torch.nn.Module:
    from conftest import randomize_
    from open_clip.model import _build_vision_tower

    torch.manual_seed(0)
    vision = dict(image_size=32, patch_size=8, width=64, layers=2, head_width=16,
                  attentional_pool=True, attn_pooler_heads=4, attn_pooler_queries=6,
                  output_tokens=True, ls_init_value=0.5)
    return randomize_(_build_vision_tower(24, vision).eval()).to(dtype)


def test_coca_attentional_pool_passthrough_is_bit_identical():
    visual = _coca_tower(torch.float32)
    vit = cs.HookedViT(visual)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(vit(images), visual(images)[0])
    assert vit.pool_type == "attn" and vit.pool.n_queries == 6


@pytest.mark.parametrize("convention", ["reference", "centered"])
def test_coca_attentional_pool_terms_sum_to_embedding_fp64(convention):
    visual = _coca_tower(torch.float64)
    vit = cs.HookedViT(visual)
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    expected = F.normalize(visual(images)[0], dim=-1)
    parts = cs.decompose(vit, images, granularity="token", convention=convention)
    check_complete(parts, expected, atol=1e-10)
    assert parts.tokens.shape == (3, 2, 17, 4, 24)


def test_streamed_batches_equal_one_call(clip64):
    images = images_for(clip64, batch=5)
    whole = cs.decompose(clip64, images, granularity="token")
    chunks = list(cs.decompose_batches(clip64, images, 2, granularity="token"))
    assert [len(parts.tokens) for parts in chunks] == [2, 2, 1]
    assert torch.allclose(torch.cat([parts.tokens for parts in chunks]), whole.tokens, atol=1e-13)
    with pytest.raises(ValueError, match="batch_size"):
        next(cs.decompose_batches(clip64, images, 0))


@pytest.mark.parametrize("build", ["coca", "open_clip"])
def test_weights_are_read_live_after_the_model_moves_to_another_dtype(build):
    """``module.to()`` swaps parameters' storage; sliced weights must be read at use time."""
    visual = _coca_tower(torch.float32) if build == "coca" else small_clip("tok",
                                                                           torch.float32).model
    vit = cs.HookedViT(visual if build == "coca" else visual.visual)
    vit.model.to(torch.float64)
    with torch.no_grad():  # then fine-tune a little, in place
        for name, param in vit.model.named_parameters():
            if "in_proj" in name:
                param.mul_(1.1)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    out = visual(images)[0] if build == "coca" else visual.encode_image(images)
    parts = cs.decompose(vit, images, granularity="token")
    check_complete(parts, F.normalize(out, dim=-1), atol=1e-10)
    assert vit.blocks[0].attn.W_Q.dtype == torch.float64


def test_large_batches_are_split_to_bound_the_captured_rows(monkeypatch):
    """A per-token norm before a mean pool keeps every row: the batch is decomposed in chunks."""
    capture = importlib.import_module("captum_clipspan.decomposition.capture")
    clip = small_clip("avg")
    images = images_for(clip, batch=5)
    whole = cs.decompose(clip, images, granularity="token", convention="centered")
    per_image = capture.capture_bytes_per_image(clip.visual, "token", 3, torch.float64)
    monkeypatch.setattr(capture, "CAPTURE_BUDGET", 2 * per_image)
    calls = []
    original = capture._Capture.__init__

    def counting(self, *args, **kwargs):
        calls.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(capture._Capture, "__init__", counting)
    split = cs.decompose(clip, images, granularity="token", convention="centered")
    assert len(calls) == 3  # chunks of 2, 2, 1
    for name in ["embed", "attns", "mlps", "heads", "tokens", "attn_biases", "ln_bias",
                 "image_embed"]:
        assert torch.allclose(getattr(split, name), getattr(whole, name), atol=1e-13), name
