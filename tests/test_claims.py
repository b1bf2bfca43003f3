"""The README's application claims on held-out (test-split) scenes, at small sizes.

``scripts/evaluate_claims.py`` measures them over several seeds with their spread; these tests
assert each claim with a margin below that spread, so they fail when a claim stops holding.
"""

from __future__ import annotations

import pytest
import torch

import captum_clipspan as cs
from captum_clipspan import segmentation as seg
from captum_clipspan.evaluation import paired_bootstrap
from captum_clipspan.segmentation.benchmarking import benchmark_terms, summarize_terms
from captum_clipspan.toy import SceneSegmentation, toy_bank
from captum_clipspan.toy.probes import head_roles, probe_heads, read_labels
from captum_clipspan.toy.scenes import write_image_folder

# --------------------------------------------------------------------------- the bootstrap


def test_paired_bootstrap_interval_holds_the_difference_and_cancels_shared_noise():
    generator = torch.Generator().manual_seed(0)
    shared = torch.rand(400, generator=generator)
    result = paired_bootstrap(shared + 0.05, shared, n_resamples=500)
    assert result["difference"] == pytest.approx(0.05)
    assert result["low"] == pytest.approx(0.05) and result["high"] == pytest.approx(0.05)
    noisy = paired_bootstrap(shared + 0.02 * torch.randn(400, generator=generator), shared,
                             n_resamples=500)
    assert noisy["low"] < noisy["difference"] < noisy["high"] and noisy["n"] == 400
    assert paired_bootstrap(shared, shared * 0.5, seed=3) == paired_bootstrap(
        shared, shared * 0.5, seed=3)


def test_paired_bootstrap_with_a_pooled_statistic_and_strata():
    rows_a = torch.tensor([[1.0, 2.0], [1.0, 4.0], [3.0, 4.0]])
    rows_b = torch.tensor([[0.0, 2.0], [1.0, 4.0], [1.0, 4.0]])
    ratio = paired_bootstrap(rows_a, rows_b, lambda t: t[:, 0].sum() / t[:, 1].sum(),
                             n_resamples=200)
    assert ratio["difference"] == pytest.approx(5 / 10 - 2 / 10)
    # one item per stratum: every resample is the data itself
    fixed = paired_bootstrap(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 1.0]),
                             strata=[0, 1, 2], n_resamples=50)
    assert fixed["low"] == fixed["high"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(torch.zeros(3), torch.zeros(3), confidence=1.0)


# --------------------------------------------------------------------------- segmentation


@pytest.fixture(scope="module")
def segmentation_terms():
    toy = cs.HookedCLIP.from_pretrained("toy")
    data = SceneSegmentation(60, seed=0, split="test", **seg.for_model(toy))
    classes = cs.ZeroShotClassifier.from_prompts(toy, SceneSegmentation.class_prompts())
    terms = benchmark_terms(toy, data, classes, batch_size=30)
    return terms, {method: summarize_terms(t) for method, t in terms.items()}


def test_the_decomposition_leads_the_attention_baselines_by_far(segmentation_terms):
    # measured (3 seeds x 300): decomposition 89 / 67, rollout 74 / 48, Grad-CAM 73 / 42
    _, scores = segmentation_terms
    lead = scores["decomposition"]
    for baseline in ("rollout", "gradcam", "raw_attention"):
        assert lead["pixel_accuracy"] >= scores[baseline]["pixel_accuracy"] + 0.08
        assert lead["miou"] >= scores[baseline]["miou"] + 0.08


def test_a_model_free_color_map_reaches_the_model_based_maps(segmentation_terms):
    """The toy cannot separate the decomposition from pixel color on threshold-free measures:
    objects are the only pixels of a rare color (measured AUROC 98.3 vs 95.9)."""
    _, scores = segmentation_terms
    assert scores["color_rarity"]["pixel_accuracy"] >= 0.80
    assert scores["color_rarity"]["auroc"] >= scores["decomposition"]["auroc"] - 0.005
    assert scores["color_rarity"]["top_iou"] >= scores["chefer"]["top_iou"]
    assert scores["center_prior"]["pixel_accuracy"] <= 0.65  # the weak control stays weak


def test_decomposition_minus_chefer_on_the_protocol(segmentation_terms):
    """The protocol's lead over Chefer et al. (measured +1.6 pixel accuracy, interval above 0
    at 900 images) is small; at 60 images only its sign is asserted, the interval may hold 0."""
    terms, scores = segmentation_terms
    assert scores["decomposition"]["pixel_accuracy"] >= scores["chefer"]["pixel_accuracy"] - 0.005
    correct = {m: terms[m]["correct"].double() / terms[m]["labeled"] for m in terms}
    result = paired_bootstrap(correct["decomposition"], correct["chefer"], n_resamples=300)
    assert result["low"] <= result["difference"] <= result["high"]


# --------------------------------------------------------------------------- TextSpan vs truth


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    toy = cs.HookedCLIP.from_pretrained("toy")
    folder = write_image_folder(tmp_path_factory.mktemp("claims") / "scenes", 200, seed=0,
                                split="test")
    labels = read_labels(folder)
    cache = cs.cache_decomposition(toy, folder, folder.parent / "cache", show_progress=False)
    texts, families = toy_bank()
    report = cs.TextSpan(toy, bank=texts).fit(cache, m=3, show_progress=False)
    return {row["head"]: row for row in head_roles(cache, labels, probe_heads(toy, cache, labels),
                                                   report, families)}


def test_textspan_names_the_planted_family_of_most_heads(roles):
    # measured 0.81 of the 16 heads (3 seeds); the probe 0.72
    agree = [row["textspan"] == row["planted"] for row in roles.values()]
    assert sum(agree) / len(agree) >= 0.7
    assert roles["L2.H1"]["planted"] == roles["L2.H1"]["textspan"] == "position"
    assert roles["L3.H3"]["planted"] == roles["L3.H3"]["textspan"] == "texture"
    assert all(0 < row["variance_explained"] <= 1 for row in roles.values())


def test_l3h1_carries_size_and_textspan_calls_it_count(roles):
    """Ground truth and the probe say size (R^2 0.58 vs 0.18); TextSpan says count, because
    the bank's count texts lie along the head's variation (the text side, not the algorithm:
    normalized scoring agrees)."""
    head = roles["L3.H1"]
    assert head["planted"] == "size" and head["probe"] == "size"
    assert head["shares"]["size"] >= head["shares"]["count"] + 0.2
    assert head["textspan"] == "count"
