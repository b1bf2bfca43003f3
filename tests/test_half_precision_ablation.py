"""Mean-ablation beyond the forward pass in half precision: component means and total-mode ablation
run on bf16 and fp16 models and agree with fp32, while an edit no term carries is still refused
(the consistency check's tolerance follows the model's dtype)."""

from __future__ import annotations

import pytest
import torch
from conftest import images_for, small_clip

import captum_clipspan as cs

HALF = [torch.bfloat16, torch.float16]
AGREE = {torch.bfloat16: 5e-2, torch.float16: 1e-2}  # relative to the fp32 values


def relative(value, reference):
    return float((value.double() - reference.double()).abs().max()
                 / reference.double().abs().max())


@pytest.fixture(scope="module")
def fp32():
    return small_clip("tok", torch.float32)


@pytest.mark.parametrize("dtype", HALF)
def test_component_means_in_half_precision_agree_with_fp32(fp32, dtype):
    images = images_for(fp32, 8)
    clip = small_clip("tok", dtype)
    means = cs.component_means(clip, images.to(dtype), batch_size=4, show_progress=False)
    reference = cs.component_means(fp32, images, batch_size=4, show_progress=False)
    assert means.count == 8
    for name, value in reference.direct.items():
        assert relative(means.direct[name], value) < AGREE[dtype], name
    for name, value in reference.residual.items():
        assert means.residual[name].dtype == dtype
        assert relative(means.residual[name], value) < AGREE[dtype], name


@pytest.mark.parametrize("dtype", HALF)
def test_total_ablation_in_half_precision_agrees_with_fp32(fp32, dtype):
    images, texts = images_for(fp32, 6), torch.randn(3, fp32.embed_dim)
    clip = small_clip("tok", dtype)
    drops = {}
    for model in (fp32, clip):
        means = cs.component_means(model, images.to(model.dtype), batch_size=3,
                                   show_progress=False)
        ablation = cs.MeanAblation(model, means, mode="total")
        drops[model.dtype] = ablation.attribute(images.to(model.dtype), texts=texts.to(
            model.dtype), components=["attn.0", "mlp.1", "head.2.1"])
    assert drops[dtype].shape == (6, 3, 3)
    assert (drops[dtype].double() - drops[torch.float32].double()).abs().max() < 0.1


@pytest.mark.parametrize("dtype", HALF)
def test_the_total_ablation_study_runs_in_half_precision(tmp_path, dtype):
    clip = small_clip("tok", dtype)
    images = images_for(clip, 6)
    data = torch.utils.data.TensorDataset(images, torch.arange(6) % 2)
    classifier = cs.ZeroShotClassifier(clip, ["a", "b"])
    means = cs.component_means(clip, images, batch_size=3, show_progress=False)
    study = cs.MeanAblation(clip, means, mode="total").study(data, classifier, batch_size=3,
                                                            show_progress=False)
    assert study.count == 6 and len(study.accumulated) == clip.visual.n_layers
    assert 0 <= study.baseline <= 1


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_an_edit_no_term_carries_is_still_refused(dtype):
    clip = small_clip("tok", dtype)
    edit = [("blocks.1.hook_resid_post", lambda tensor, hook: tensor * 1.5)]
    with clip.visual.hooks(fwd_hooks=edit), pytest.raises(ValueError, match="no term carries"):
        cs.decompose(clip, images_for(clip, 2))


def test_the_tolerance_follows_the_model_dtype():
    from captum_clipspan.decomposition.consistency import TOLERANCES

    assert TOLERANCES[torch.float32] == 1e-3 and TOLERANCES[torch.float64] == 1e-8
    assert TOLERANCES[torch.float32] < TOLERANCES[torch.float16] < TOLERANCES[torch.bfloat16]
