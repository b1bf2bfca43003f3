"""The Captum attribution classes report the decomposition's numbers in Captum's conventions."""

from __future__ import annotations

import inspect
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerIntegratedGradients, NoiseTunnel
from captum.attr import visualization as viz
from conftest import images_for

import captum_clipspan as cs

TEXTS = ["a photo of a dog", "a red circle", "a striped background"]


def test_head_scores_equal_brute_force_dot_products(clip64):
    images = images_for(clip64)
    texts = clip64.encode_text(TEXTS)
    scores, delta = cs.HeadContribution(clip64).attribute(images, texts=texts,
                                                          return_convergence_delta=True)
    vectors = cs.decompose(clip64, images, granularity="head").heads
    assert scores.shape == (2, 3, 4, 3)
    assert torch.allclose(scores, vectors @ texts.T, atol=1e-12)
    assert delta.shape == (2, 3) and delta.abs().max() < 1e-12


def test_string_targets_are_encoded_with_the_tokenizer(clip64):
    images = images_for(clip64)
    heads = cs.HeadContribution(clip64, layers=[-1])
    by_string = heads.attribute(images, texts=TEXTS)
    by_embedding = heads.attribute(images, texts=clip64.encode_text(TEXTS))
    assert by_string.shape == (2, 1, 4, 3)
    assert torch.allclose(by_string, by_embedding)
    single = heads.attribute(images, texts="a red circle")
    assert torch.allclose(single[..., 0], by_string[..., 1])


def test_target_picks_each_examples_text_among_texts(clip64):
    images = images_for(clip64, batch=3)
    classifier = cs.ZeroShotClassifier(clip64, ["dog", "cat", "bird"], templates=["a {}."])
    heads = cs.HeadContribution(clip64)
    everything = heads.attribute(images, texts=classifier.class_embeddings)
    for labels in ([2, 0, 2], torch.tensor([2, 0, 2])):
        scores, delta = heads.attribute(images, texts=classifier, target=labels,
                                        return_convergence_delta=True)
        assert scores.shape == (3, 3, 4) and delta.shape == (3,)
        for example, label in enumerate([2, 0, 2]):
            assert torch.allclose(scores[example], everything[example, ..., label])
    same = heads.attribute(images, texts=["a dog", "a cat"], target=1)
    assert torch.allclose(same, heads.attribute(images, texts="a cat")[..., 0])


def test_layer_rows_sum_to_the_cosine_in_both_conventions(clip64):
    images = images_for(clip64)
    texts = clip64.encode_text(TEXTS)
    cosine = F.normalize(clip64.model.encode_image(images), dim=-1) @ texts.T
    for convention, n_rows in [("reference", 7), ("centered", 8)]:
        layers = cs.LayerContribution(clip64, convention=convention)
        rows = layers.attribute(images, texts=texts)
        assert rows.shape == (2, n_rows, 3) and len(layers.row_names()) == n_rows
        assert torch.allclose(rows.sum(dim=1), cosine, atol=1e-12)
    parts = cs.decompose(clip64, images, granularity="layer", text_embeddings=texts)
    rows = cs.LayerContribution(clip64).attribute(images, texts=texts)
    assert torch.allclose(rows[:, 3], parts.attns[:, 1])
    assert torch.allclose(rows[:, 6], parts.mlps[:, 2])


def test_patch_maps_are_token_terms_on_the_grid(clip64):
    images = images_for(clip64)
    texts = clip64.encode_text(TEXTS[:2])
    maps = cs.PatchContribution(clip64, layers=[1, 2], heads=[0, 3]).attribute(images,
                                                                               texts=texts)
    tokens = cs.decompose(clip64, images, granularity="token", text_embeddings=texts).tokens
    expected = tokens[:, 1:, 1:][:, :, :, [0, 3]].sum(dim=(1, 3))  # drop the class token
    assert maps.shape == (2, 2, 4, 4)
    assert torch.allclose(maps.flatten(2), expected.permute(0, 2, 1), atol=1e-12)
    pairs = cs.PatchContribution(clip64, heads=[(2, 1)]).attribute(images, texts=texts)
    assert torch.allclose(pairs.flatten(2), tokens[:, 2, 1:, 1].permute(0, 2, 1), atol=1e-12)
    own = cs.PatchContribution(clip64, heads=[(2, 1)]).attribute(images, texts=texts,
                                                                 target=[1, 0])
    assert own.shape == (2, 1, 4, 4)
    assert torch.allclose(own[:, 0], torch.stack([pairs[0, 1], pairs[1, 0]]))


def test_patch_map_of_all_heads_and_layers_plus_class_token_is_the_attention_total(clip64):
    images = images_for(clip64)
    text = clip64.encode_text("a dog")
    maps = cs.PatchContribution(clip64).attribute(images, texts=text)
    parts = cs.decompose(clip64, images, granularity="token", text_embeddings=text)
    class_token = parts.tokens[:, :, 0].sum(dim=(1, 2))
    assert torch.allclose(maps.sum(dim=(2, 3)) + class_token, parts.attns.sum(1), atol=1e-12)


def test_interpolated_maps_have_input_size_and_feed_captum_visualization(clip32):
    images = images_for(clip32)
    maps = cs.PatchContribution(clip32).attribute(images, texts="a dog", interpolate=True)
    assert maps.shape == (2, 1, 32, 32)
    image = np.random.default_rng(0).random((32, 32, 3))
    fig, _ = viz.visualize_image_attr(maps[0].permute(1, 2, 0).numpy(), image,
                                      "blended_heat_map", sign="all", use_pyplot=False)
    assert fig is not None


def _texts_forms(clip):
    """Every accepted ``texts=`` form, each with its number of texts."""
    classifier = cs.ZeroShotClassifier(clip, ["dog", "cat", "bird"], templates=["a {}."])
    embeddings = clip.encode_text(TEXTS)
    return {"strings": (TEXTS, 3), "one string": ("a dog", 1), "[T, E]": (embeddings, 3),
            "[E]": (embeddings[1], 1), "classifier": (classifier, 3)}


@pytest.mark.parametrize("texts_form", ["strings", "one string", "[T, E]", "[E]", "classifier"])
@pytest.mark.parametrize("target", [None, 0, "list", "tensor"])
def test_noise_tunnel_averages_the_unwrapped_call_over_the_same_noise(clip32, texts_form,
                                                                      target):
    images = images_for(clip32)
    texts, n_texts = _texts_forms(clip32)[texts_form]
    if target == "list":
        target = [n_texts - 1, 0]
    elif target == "tensor":
        target = torch.tensor([0, n_texts - 1])
    heads = cs.HeadContribution(clip32, layers=[-2, -1])
    n_samples, stdev = 3, 0.1
    torch.manual_seed(0)
    smoothed, delta = NoiseTunnel(heads).attribute(
        images, nt_samples=n_samples, stdevs=stdev, texts=texts, target=target,
        return_convergence_delta=True)
    torch.manual_seed(0)  # NoiseTunnel draws torch.normal noise for the repeated batch
    repeated = images.repeat_interleave(n_samples, dim=0)
    noisy = repeated + torch.normal(0, torch.full_like(repeated, stdev))
    expanded = target
    if isinstance(target, list):
        expanded = [t for t in target for _ in range(n_samples)]
    elif isinstance(target, torch.Tensor):
        expanded = target.repeat_interleave(n_samples)
    plain = heads.attribute(noisy, texts=texts, target=expanded)
    expected = plain.reshape(2, n_samples, *plain.shape[1:]).mean(dim=1)
    shape = (2, 2, 4) if target is not None else (2, 2, 4, n_texts)
    assert smoothed.shape == shape and expected.shape == shape
    assert torch.allclose(smoothed, expected, atol=1e-5)
    assert delta.shape == ((2 * n_samples,) if target is not None else (2 * n_samples, n_texts))


def test_layer_integrated_gradients_on_a_hook_point(clip32):
    images = images_for(clip32)
    texts = clip32.encode_text(TEXTS)
    layer = clip32.visual.mod_dict["blocks.1.hook_resid_post"]
    lig = LayerIntegratedGradients(clip32, layer)
    attributions, delta = lig.attribute(images, baselines=torch.zeros_like(images), target=1,
                                        additional_forward_args=(texts,), n_steps=8,
                                        return_convergence_delta=True)
    assert attributions.shape == (2, clip32.visual.n_tokens, clip32.visual.d_model)
    assert torch.isfinite(attributions).all() and delta.shape == (2,)
    assert clip32.visual.list_hooks() == {} and not any(m._forward_hooks for m in clip32.modules())


def test_attributions_subclass_captum_and_report_properties(clip32):
    from captum.attr import Attribution, LayerAttribution

    heads = cs.HeadContribution(clip32)
    assert isinstance(heads, Attribution) and heads.has_convergence_delta()
    assert not heads.multiplies_by_inputs
    patches = cs.PatchContribution(clip32)  # input attributions: interpolate is only borrowed
    assert isinstance(patches, Attribution) and not isinstance(patches, LayerAttribution)
    for cls in (cs.HeadContribution, cs.LayerContribution, cs.PatchContribution,
                cs.MeanAblation):
        assert hasattr(cls.attribute, "__wrapped__")
        assert "part_of_slo" not in inspect.getsource(cls)
    for cls in (cs.HeadContribution, cs.LayerContribution, cs.PatchContribution):
        overloads = typing.get_overloads(cls.attribute)
        returns = sorted(str(inspect.signature(o).return_annotation) for o in overloads)
        assert returns == ["Tensor", "tuple[Tensor, Tensor]"], cls


def test_compute_convergence_delta_is_the_completeness_error_of_a_forward_pass(clip64):
    images = images_for(clip64)
    texts = clip64.encode_text(TEXTS)
    for attribution in (cs.HeadContribution(clip64), cs.LayerContribution(clip64),
                        cs.PatchContribution(clip64, layers=[-1])):
        delta = attribution.compute_convergence_delta(images, texts=texts)
        _, returned = attribution.attribute(images, texts=texts, return_convergence_delta=True)
        assert delta.shape == (2, 3) and torch.allclose(delta, returned)
        assert delta.abs().max() < 1e-12
        own = attribution.compute_convergence_delta(images, texts=texts, target=[2, 0])
        assert torch.allclose(own, torch.stack([delta[0, 2], delta[1, 0]]))
    rows = cs.LayerContribution(clip64).attribute(images, texts=texts)
    cosine = F.normalize(clip64.model.encode_image(images), dim=-1) @ texts.T
    delta = cs.LayerContribution(clip64).compute_convergence_delta(images, texts=texts)
    assert torch.allclose(delta, rows.sum(dim=1) - cosine, atol=1e-12)


def test_joint_space_vectors_without_target(clip64):
    images = images_for(clip64)
    vectors, delta = cs.HeadContribution(clip64).attribute(images, return_convergence_delta=True)
    assert vectors.shape == (2, 3, 4, 24) and delta.shape == (2, 24)
    maps = cs.PatchContribution(clip64).attribute(images)
    assert maps.shape == (2, 24, 4, 4)
