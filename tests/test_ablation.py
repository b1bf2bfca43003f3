"""Mean-ablation: direct mode is the decomposition re-summed; total mode re-runs the network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import images_for, small_clip

import captum_clipspan as cs


@pytest.fixture(scope="module")
def setting():
    clip = small_clip("tok", torch.float64)
    reference = images_for(clip, batch=6, seed=1)
    means = cs.component_means(clip, reference, batch_size=4, show_progress=False)
    classifier = cs.ZeroShotClassifier(clip, ["dog", "cat", "bird"], templates=["a {}"])
    return clip, reference, means, classifier


def test_direct_ablation_equals_re_summing_the_decomposition_by_hand(setting):
    clip, reference, means, _ = setting
    images = images_for(clip, batch=3)
    texts = clip.encode_text(["a dog", "a cat"])
    ablation = cs.MeanAblation(clip, means)
    changes = ablation.attribute(images, texts=texts,
                                 components={"late": ["attn.2", "head.1.0"], "mlp": ["mlp.0"]})
    parts = cs.decompose(clip, images, granularity="head")
    reference_parts = cs.decompose(clip, reference, granularity="head")
    mean_attn = reference_parts.attns[:, 2].mean(0)
    mean_head = reference_parts.heads[:, 1, 0].mean(0)
    ablated = parts.total() - parts.attns[:, 2] + mean_attn - parts.heads[:, 1, 0] + mean_head
    expected = ablated @ texts.T - parts.total() @ texts.T
    assert torch.allclose(changes[:, 0], expected, atol=1e-12)
    by_hand = (reference_parts.mlps[:, 0].mean(0) - parts.mlps[:, 0]) @ texts.T
    assert torch.allclose(changes[:, 1], by_hand, atol=1e-12)


def test_direct_means_agree_with_a_cache_of_the_same_images(setting, tmp_path):
    clip, reference, means, _ = setting
    cache = cs.cache_decomposition(clip, reference, tmp_path / "c", dtype="float32",
                                   show_progress=False)
    from_cache = cs.ComponentMeans.from_cache(cache)
    for name in ["embed", "attns", "mlps", "heads"]:
        assert torch.allclose(from_cache.direct[name].double(), means.direct[name], atol=1e-6)


def test_total_ablation_of_a_component_already_at_its_mean_changes_nothing():
    clip = small_clip("tok", torch.float64)
    image = images_for(clip, batch=1)
    means = cs.component_means(clip, image, show_progress=False)  # the mean is its own output
    ablation = cs.MeanAblation(clip, means, mode="total")
    changes = ablation.attribute(image, texts="a dog",
                                 components=["embed", "attn.1", "mlp.2", "head.0.3"])
    assert changes.abs().max() < 1e-12
    other = images_for(clip, batch=1, seed=5)
    assert ablation.attribute(other, texts="a dog", components=["attn.1"]).abs().max() > 1e-6


def test_total_ablation_of_the_last_mlp_re_runs_ln_post_on_the_patched_stream(setting):
    """Computed by hand: swap the last MLP's output for its mean in the final residual stream,
    then apply ln_post and proj (the non-linear LayerNorm makes this differ from direct mode)."""
    clip, _, means, _ = setting
    images = images_for(clip, batch=2)
    total = cs.MeanAblation(clip, means, mode="total").attribute(images, texts="a cat",
                                                                 components=["mlp.2"])
    _, cache = clip.visual.run_with_cache(images)
    stream = cache["blocks.2.hook_resid_post"] - cache["blocks.2.hook_mlp_out"]
    stream = stream + means.residual["mlp_out"][2]
    visual = clip.model.visual
    ablated = visual.ln_post(stream[:, 0]) @ visual.proj
    text = clip.encode_text("a cat")
    clean = clip.model.encode_image(images)
    expected = F.normalize(ablated, dim=-1) @ text.T - F.normalize(clean, dim=-1) @ text.T
    assert torch.allclose(total[:, 0].double(), expected, atol=1e-12)
    direct = cs.MeanAblation(clip, means).attribute(images, texts="a cat", components=["mlp.2"])
    assert not torch.allclose(direct, total, atol=1e-6)


def test_head_preset_keeps_layer_and_head_axes(setting):
    clip, _, means, classifier = setting
    images = images_for(clip, batch=2)
    changes = cs.MeanAblation(clip, means).attribute(images, texts=classifier, target=[0, 2])
    assert changes.shape == (2, 3, 4)
    every = cs.MeanAblation(clip, means).attribute(images, texts=classifier)
    assert every.shape == (2, 3, 4, len(classifier))
    assert torch.allclose(changes, torch.stack([every[0, ..., 0], every[1, ..., 2]]))
    rows = cs.MeanAblation(clip, means).attribute(images, texts="a dog", components="layers")
    assert rows.shape == (2, 7, 1)


def test_study_accuracy_table_and_curve(setting, tmp_path):
    clip, _, means, classifier = setting
    images = images_for(clip, batch=6, seed=3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    data = torch.utils.data.TensorDataset(images, labels)
    with torch.no_grad():
        predicted = classifier.predict(images, clip)
    direct = cs.MeanAblation(clip, means).study(data, classifier, show_progress=False)
    assert direct.baseline == pytest.approx((predicted == labels).double().mean().item())
    assert len(direct.accumulated) == 3
    assert direct.accumulated[-1] == direct.msa_ablated
    total = cs.MeanAblation(clip, means, mode="total").study(data, classifier,
                                                            show_progress=False)
    assert total.baseline == direct.baseline
    assert total.accumulated[-1] == total.msa_ablated
    frame = direct.to_frame()
    assert list(frame.index[:3]) == ["baseline", "MLPs ablated", "MSAs ablated"]
    cache = cs.cache_decomposition(clip, data, tmp_path / "c", dtype="float32",
                                   show_progress=False)
    from_cache = cs.MeanAblation(clip, means).study(cache, classifier, show_progress=False)
    assert from_cache.table() == pytest.approx(direct.table())


def test_bad_ablation_arguments(setting, tmp_path):
    clip, reference, means, _ = setting
    images = images_for(clip, batch=1)
    with pytest.raises(ValueError, match="unknown component"):
        cs.MeanAblation(clip, means).attribute(images, components=["attn.9"])
    with pytest.raises(ValueError, match="mode"):
        cs.MeanAblation(clip, means, mode="indirect")
    cache = cs.cache_decomposition(clip, reference, tmp_path / "c", show_progress=False)
    with pytest.raises(ValueError, match="component_means"):
        cs.MeanAblation(clip, cs.ComponentMeans.from_cache(cache), mode="total")
    with pytest.raises(ValueError, match="labels"):
        cs.MeanAblation(clip, means).study(reference, cs.ZeroShotClassifier(clip, ["a", "b"]),
                                           show_progress=False)


@pytest.mark.parametrize("convention", ["reference", "centered"])
def test_layer_contribution_rows_are_the_components_mean_ablation_takes(convention, tmp_path):
    """One vocabulary: every LayerContribution row name is a MeanAblation component, the
    "layers" preset gives the same rows in the same order, and the cache reads each by name."""
    clip = small_clip("tok", torch.float64)
    reference = images_for(clip, batch=4, seed=2)
    images = images_for(clip, batch=2)
    means = cs.component_means(clip, reference, convention=convention, show_progress=False)
    rows = cs.LayerContribution(clip, convention=convention).row_names()
    assert (convention == "centered") == ("ln_post.bias" in rows)
    ablation = cs.MeanAblation(clip, means)
    by_name = ablation.attribute(images, texts="a dog", components=rows)
    preset = ablation.attribute(images, texts="a dog", components="layers")
    assert by_name.shape == (2, len(rows), 1) and torch.equal(by_name, preset)
    # ablating a row changes the score by (its mean - its term) . text, row by row
    terms = cs.LayerContribution(clip, convention=convention).attribute(images, texts="a dog")
    text = clip.encode_text("a dog")[0]
    for index, name in enumerate(rows):
        mean = cs.components.direct_term(means.direct, name, means.layers) @ text
        assert torch.allclose(by_name[:, index, 0], mean - terms[:, index, 0], atol=1e-10)
    cache = cs.cache_decomposition(clip, images, tmp_path / "cache", convention=convention,
                                   dtype="float32", show_progress=False)
    parts = cs.decompose(clip, images, granularity="head", convention=convention)
    for name in [*rows, "head.2.1"]:
        assert torch.allclose(cache.term(name).double(),
                              cs.components.direct_term(parts, name, parts.layers), atol=1e-5)
    with pytest.raises(ValueError, match="not cached"):
        cache.term("head.2.9")
    with pytest.raises(ValueError, match="unknown component"):
        cache.term("attention.1")


def test_unknown_component_names_are_refused(setting):
    clip, _, means, _ = setting
    ablation = cs.MeanAblation(clip, means)
    images = images_for(clip, batch=2)
    with pytest.raises(ValueError, match="unknown component 'msa.1'"):
        ablation.attribute(images, texts="a dog", components=["msa.1"])
    with pytest.raises(ValueError, match="pool_mlp"):
        ablation.attribute(images, texts="a dog", components=["pool_mlp"])  # no pool MLP here
