"""The baseline heat-map attributions (raw attention, rollout, Grad-CAM, Chefer et al.) and the
class-contrastive patch map: Captum's conventions, the texts/target contract and the math."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Attribution, GradientAttribution, LayerAttribution, NoiseTunnel
from conftest import images_for, small_clip

import captum_clipspan as cs
from captum_clipspan.attr.base import patch_grid
from captum_clipspan.attr.baselines import (
    AttentionRollout,
    CheferRelevance,
    ContrastivePatchContribution,
    GradCAM,
    RawAttention,
    relevancy,
    rollout,
)

TEXTS = ["a dog", "a cat", "a car"]
TEXT_FREE = (RawAttention, AttentionRollout)
TEXT_READING = (GradCAM, CheferRelevance, ContrastivePatchContribution)
ALL = TEXT_FREE + TEXT_READING


@pytest.fixture(scope="module")
def clip64() -> cs.HookedCLIP:
    return small_clip("tok", torch.float64)


def untouched(clip: cs.HookedCLIP) -> bool:
    return clip.visual.list_hooks() == {} and not any(m._forward_hooks for m in clip.modules())


def patterns(clip: cs.HookedCLIP, images: torch.Tensor) -> list[torch.Tensor]:
    _, cache = clip.visual.run_with_cache(images, names_filter=lambda n: "hook_pattern" in n)
    return [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(clip.visual.n_layers)]


# --------------------------------------------------------------------------- Captum conventions


@pytest.mark.parametrize("cls", ALL)
def test_maps_follow_the_texts_and_target_contract(cls, clip64):
    images, grid = images_for(clip64, 2), clip64.visual.grid_size
    attribution = cls(clip64)
    every = attribution.attribute(images, texts=TEXTS)
    own = attribution.attribute(images, texts=TEXTS, target=[2, 0])
    assert every.shape == (2, 3, *grid) and own.shape == (2, 1, *grid)
    assert torch.isfinite(every).all() and not every.requires_grad
    torch.testing.assert_close(own[:, 0], every[[0, 1], [2, 0]])
    shared = attribution.attribute(images, texts=clip64.encode_text(TEXTS), target=1)
    torch.testing.assert_close(shared[:, 0], every[:, 1])
    assert untouched(clip64)


@pytest.mark.parametrize("cls", ALL)
def test_interpolate_upsamples_with_captum_to_the_input_size(cls, clip64):
    images = images_for(clip64, 2)
    attribution = cls(clip64)
    grid = attribution.attribute(images, texts=TEXTS[:2])
    upsampled = attribution.attribute(images, texts=TEXTS[:2], interpolate=True)
    assert upsampled.shape == (2, 2, *clip64.visual.image_size)
    torch.testing.assert_close(upsampled, LayerAttribution.interpolate(
        grid, tuple(clip64.visual.image_size), "bilinear"))


@pytest.mark.parametrize("cls", ALL)
def test_attributions_subclass_captum_and_log_usage(cls, clip64):
    attribution = cls(clip64)
    # maps over input patches: input attributions, not a layer's (interpolate is only borrowed)
    assert isinstance(attribution, Attribution) and not isinstance(attribution, LayerAttribution)
    assert hasattr(cls.attribute, "__wrapped__")
    assert not attribution.multiplies_by_inputs
    if cls in (GradCAM, CheferRelevance):
        assert isinstance(attribution, GradientAttribution)
        assert not attribution.has_convergence_delta()


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("target", [None, [1, 0]])
def test_noise_tunnel_averages_the_unwrapped_call_over_the_same_noise(cls, target):
    clip = small_clip("tok", torch.float32)  # NoiseTunnel draws float32 noise
    images = images_for(clip, 2)
    attribution = cls(clip)
    n_samples, stdev = 3, 0.1
    torch.manual_seed(0)
    smoothed = NoiseTunnel(attribution).attribute(images, nt_samples=n_samples, stdevs=stdev,
                                                  texts=TEXTS[:2], target=target)
    torch.manual_seed(0)
    repeated = images.repeat_interleave(n_samples, dim=0)
    noisy = repeated + torch.normal(0, torch.full_like(repeated, stdev))
    expanded = None if target is None else [t for t in target for _ in range(n_samples)]
    plain = attribution.attribute(noisy, texts=TEXTS[:2], target=expanded)
    expected = plain.reshape(2, n_samples, *plain.shape[1:]).mean(dim=1)
    assert smoothed.shape == (2, 2 if target is None else 1, *clip.visual.grid_size)
    torch.testing.assert_close(smoothed, expected, atol=1e-5, rtol=1e-4)
    assert untouched(clip)


# --------------------------------------------------------------------------- the maps


@pytest.mark.parametrize("cls", TEXT_FREE)
def test_attention_maps_do_not_read_the_text(cls, clip64):
    images = images_for(clip64, 2)
    alone = cls(clip64).attribute(images)
    assert alone.shape == (2, 1, *clip64.visual.grid_size)
    torch.testing.assert_close(cls(clip64).attribute(images, texts=TEXTS),
                               alone.expand(-1, 3, -1, -1))


@pytest.mark.parametrize("variant", ["tok", "avg"])
def test_raw_attention_is_the_pooled_row_of_the_last_pattern(variant):
    clip = small_clip(variant, torch.float64)
    images = images_for(clip, 2)

    def pooled_patches(pattern):  # the class row, or the mean of every patch row
        mixed = pattern.mean(dim=1)
        rows = mixed[:, :1] if variant == "tok" else mixed[:, 1:]
        return rows.mean(dim=1)[:, 1:].reshape(2, 1, *clip.visual.grid_size)

    every = patterns(clip, images)
    torch.testing.assert_close(RawAttention(clip).attribute(images), pooled_patches(every[-1]))
    torch.testing.assert_close(RawAttention(clip, layer=0).attribute(images),
                               pooled_patches(every[0]))


def test_rollout_multiplies_the_residual_mixed_layers_last_leftmost():
    generator = torch.Generator().manual_seed(0)
    layers = [torch.rand(2, 3, 5, 5, generator=generator, dtype=torch.float64).softmax(-1)
              for _ in range(3)]
    mixed = [(a.mean(dim=1) + torch.eye(5, dtype=torch.float64)) / 2 for a in layers]
    torch.testing.assert_close(rollout(layers), mixed[2] @ mixed[1] @ mixed[0])
    torch.testing.assert_close(rollout(layers).sum(-1), torch.ones(2, 5, dtype=torch.float64))


def test_rollout_map_is_the_class_row_of_the_rollout(clip64):
    images = images_for(clip64, 2)
    every = patterns(clip64, images)
    expected = rollout(every[1:])[:, 0, 1:].reshape(2, 1, *clip64.visual.grid_size)
    torch.testing.assert_close(AttentionRollout(clip64, start_layer=1).attribute(images),
                               expected)


def test_relevancy_adds_the_positive_gradient_weighted_attention():
    generator = torch.Generator().manual_seed(1)
    attention = [torch.rand(1, 2, 4, 4, generator=generator, dtype=torch.float64)]
    grads = [torch.randn(1, 2, 4, 4, generator=generator, dtype=torch.float64)]
    cam = (attention[0] * grads[0]).clamp(min=0).mean(dim=1)
    torch.testing.assert_close(relevancy(attention, grads), torch.eye(4, dtype=torch.float64) + cam)
    zero = [torch.zeros_like(grads[0])]
    torch.testing.assert_close(relevancy(attention * 2, zero * 2),
                               torch.eye(4, dtype=torch.float64).expand(1, 4, 4))


def test_chefer_on_the_last_layer_is_its_positive_gradient_weighted_class_row(clip64):
    images, texts = images_for(clip64, 2), clip64.encode_text(TEXTS)
    name = f"blocks.{clip64.visual.n_layers - 1}.attn.hook_pattern"
    saved = {}

    def keep(pattern, hook):
        saved["A"] = pattern

    with clip64.visual.hooks(fwd_hooks=[(name, keep)]):
        score = clip64(images.requires_grad_(), texts)[[0, 1], [2, 1]].sum()
        grad = torch.autograd.grad(score, saved["A"])[0]
    cam = (grad * saved["A"]).clamp(min=0).mean(dim=1)  # R = I + cam; the class row's patches
    expected = cam[:, 0, 1:].reshape(2, 1, *clip64.visual.grid_size)
    maps = CheferRelevance(clip64, start_layer=-1).attribute(images.detach(), texts=texts,
                                                            target=[2, 1])
    torch.testing.assert_close(maps, expected)


def test_gradcam_per_text_is_grad_cam_of_that_text(clip64):
    images, texts = images_for(clip64, 2), clip64.encode_text(TEXTS)
    maps = GradCAM(clip64, hook_name="blocks.1.hook_resid_post").attribute(images, texts=texts)
    name, saved = "blocks.1.hook_resid_post", {}

    def keep(tokens, hook):
        saved["x"] = tokens

    for column in range(3):
        with clip64.visual.hooks(fwd_hooks=[(name, keep)]):
            score = clip64(images, texts)[:, column].sum()
            grads = torch.autograd.grad(score, saved["x"])[0][:, 1:]
        weights = grads.mean(dim=1, keepdim=True)
        expected = (weights * saved["x"][:, 1:]).sum(-1).clamp(min=0)
        torch.testing.assert_close(maps[:, column], expected.reshape(2, 4, 4).detach())


def test_contrastive_map_is_each_text_minus_the_mean_over_texts(clip64):
    images = images_for(clip64, 2)
    every = cs.PatchContribution(clip64, layers=[-1]).attribute(images, texts=TEXTS)
    contrast = ContrastivePatchContribution(clip64, layers=[-1])
    torch.testing.assert_close(contrast.attribute(images, texts=TEXTS),
                               every - every.mean(dim=1, keepdim=True))
    maps, delta = contrast.attribute(images, texts=TEXTS, target=[0, 2],
                                     return_convergence_delta=True)
    assert maps.shape == (2, 1, 4, 4) and delta.shape == (2,)
    assert delta.abs().max() < 1e-10


def test_patch_grid_drops_the_prefix_tokens_in_the_towers_layout(clip64):
    per_token = torch.arange(2 * 3 * 17, dtype=torch.float64).reshape(2, 3, 17)
    grid = patch_grid(per_token, clip64.visual)
    assert grid.shape == (2, 3, 4, 4)
    assert grid[1, 2, 0, 1] == per_token[1, 2, 2] and grid[0, 0, 3, 3] == per_token[0, 0, 16]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", TEXT_READING)
def test_text_reading_maps_refuse_missing_texts(cls, clip64):
    with pytest.raises(ValueError, match="texts="):
        cls(clip64).attribute(images_for(clip64, 2))


@pytest.mark.parametrize("cls", ALL)
def test_maps_refuse_bad_input(cls, clip64):
    attribution = cls(clip64)
    images = images_for(clip64, 2)
    with pytest.raises(TypeError, match="texts="):
        attribution.attribute(images, texts=TEXTS, target="a dog")
    with pytest.raises(ValueError, match="one text index per example"):
        attribution.attribute(images, texts=TEXTS, target=[0, 1, 2])
    with pytest.raises(ValueError, match="shape"):
        attribution.attribute(images[:, :, :8], texts=TEXTS)
    with pytest.raises(TypeError, match="HookedCLIP"):
        cls(clip64.model)
    assert untouched(clip64)


def test_constructors_refuse_unknown_layers_and_hook_points(clip64):
    with pytest.raises(ValueError, match="unknown hook point"):
        GradCAM(clip64, hook_name="blocks.9.nothing")
    with pytest.raises(ValueError, match="start_layer 3 is out of range"):
        AttentionRollout(clip64, start_layer=3)
    with pytest.raises(ValueError, match="out of range"):
        CheferRelevance(clip64, start_layer=-4)
    with pytest.raises(TypeError, match="layer"):
        RawAttention(clip64, layer="last")
