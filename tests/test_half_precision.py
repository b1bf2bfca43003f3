"""Half-precision towers of every family: the terms are accumulated in fp32 and sum to the tower's
own bf16/fp16 output to that precision's tolerance. The towers are the small randomized ones of
the other tower tests (every 1-D parameter randomized), cast to the half dtype."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import small_clip
from test_decompose import _coca_tower
from test_timm_towers import FAMILIES as TIMM_FAMILIES
from test_timm_towers import tiny_tower
from test_transformers_towers import model_for, own_features

import captum_clipspan as cs

# Largest error of the unit-norm embedding's terms' sum, per element. The tower's own output is
# rounded to the half dtype at every layer (bf16 keeps 8 bits, fp16 11); the largest errors
# measured over the towers below are 4.3e-3 (bf16, CoCa) and 3.5e-4 (fp16), about a fifth of these.
TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 2e-3}
TIMM = ("siglip", "siglip2", "pe-core", "eva02", "mobileclip-b")
TOWERS = ("open_clip-tok", "open_clip-avg", "coca", *TIMM, "hf-clip", "hf-siglip")


def tower(name: str, dtype: torch.dtype):
    """``(hooked, own)``: the hooked tower and the tower's own forward."""
    if name.startswith("open_clip"):
        clip = small_clip(name.split("-")[1], dtype)
        return clip, clip.model.encode_image
    if name == "coca":
        visual = _coca_tower(dtype)
        return cs.HookedViT(visual), lambda images: visual(images)[0]
    if name in TIMM:
        visual = tiny_tower(TIMM_FAMILIES[name], dtype=dtype)
        return cs.HookedViT(visual), visual
    model = model_for(name.removeprefix("hf-"), dtype)
    return cs.HookedViT(model), lambda images: own_features(model, images)


def images_for(vit: cs.HookedViT, dtype: torch.dtype, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, *vit.image_size, generator=generator).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", TOWERS)
def test_half_precision_terms_sum_to_the_towers_own_output(name, dtype):
    hooked, own = tower(name, dtype)
    vit = getattr(hooked, "visual", hooked)
    images = images_for(vit, dtype)
    with torch.no_grad():
        expected = F.normalize(own(images).float(), dim=-1)
    tolerance = TOLERANCE[dtype]
    for convention in ("reference", "centered"):
        parts = cs.decompose(hooked, images, granularity="token", convention=convention)
        assert parts.tokens.dtype == parts.heads.dtype == torch.float32  # accumulated in fp32
        torch.testing.assert_close(parts.total(), expected, rtol=0, atol=tolerance)
        attns = parts.attns if parts.attn_biases is None else parts.attns - parts.attn_biases
        torch.testing.assert_close(parts.heads.sum(2), attns, rtol=0, atol=tolerance)
        torch.testing.assert_close(parts.tokens.sum(2), parts.heads, rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_text_scores_sum_to_the_cosines(dtype):
    clip = small_clip("tok", dtype)
    images = images_for(clip.visual, dtype)
    texts = F.normalize(torch.randn(3, clip.embed_dim), dim=-1)
    parts = cs.decompose(clip, images, granularity="token", text_embeddings=texts)
    with torch.no_grad():
        cosines = F.normalize(clip.model.encode_image(images).float(), dim=-1) @ texts.T
    torch.testing.assert_close(parts.total(), cosines, rtol=0, atol=TOLERANCE[dtype])


def test_half_precision_model_accumulates_in_fp32():
    clip = small_clip("tok", torch.bfloat16)
    images = images_for(clip.visual, torch.bfloat16)
    parts = cs.decompose(clip, images, granularity="head")
    assert parts.heads.dtype == torch.float32
    with torch.no_grad():
        expected = F.normalize(clip.model.encode_image(images).float(), dim=-1)
    assert (parts.total() - expected).abs().max() < 5e-2
