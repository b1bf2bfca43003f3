"""TextSpan over a model's heads, its report and evaluation, and head-specific retrieval."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import images_for, small_clip

import captum_clipspan as cs
from captum_clipspan.attr.textspan import random_bank

BANK = ["a red circle", "a blue square", "a dog", "a cat", "a striped background", "a car",
        "a photo taken at night", "a green triangle", "a tree", "a boat"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    clip = small_clip("tok", torch.float32)
    images = images_for(clip, batch=24)
    labels = torch.arange(24) % 3
    data = torch.utils.data.TensorDataset(images, labels)
    cache = cs.cache_decomposition(clip, data, tmp_path_factory.mktemp("c") / "cache",
                                   layers=[1, 2], dtype="float32", show_progress=False)
    return clip, data, cache


def test_report_runs_the_core_on_every_cached_head(cached):
    clip, _, cache = cached
    report = cs.TextSpan(clip, bank=BANK).fit(cache, m=3, show_progress=False)
    assert len(report) == 2 * 4
    embeddings = clip.encode_text(BANK).float()
    direct = cs.textspan(torch.from_numpy(cache.head(2, 1).copy()), embeddings, BANK, 3)
    assert report[(2, 1)].texts == direct.texts
    assert torch.allclose(report[(2, 1)].basis, direct.basis, atol=1e-5)
    assert "layer 2, head 1" in report.describe(2, 1)
    frame = report.to_frame()
    assert len(frame) == 8 * 3 and set(frame.columns) >= {"layer", "head", "text"}
    outputs = torch.from_numpy(cache.head(2, 1).copy())
    assert torch.allclose(report.reconstruct(outputs, 2, 1), direct.reconstruction, atol=1e-5)


def test_report_save_load_round_trip(cached, tmp_path):
    clip, _, cache = cached
    report = cs.TextSpan(clip, bank=BANK).fit(cache, layers=[-1], heads=[0], m=2,
                                                     show_progress=False)
    report.save(tmp_path / "report.pt")
    loaded = cs.TextSpanReport.load(tmp_path / "report.pt")
    assert loaded[(2, 0)].texts == report[(2, 0)].texts
    assert torch.equal(loaded[(2, 0)].basis, report[(2, 0)].basis)


def test_textspan_from_images_caches_on_the_fly(cached):
    clip, data, cache = cached
    from_images = cs.TextSpan(clip, bank=BANK).fit(data, layers=[2], m=2,
                                                          show_progress=False)
    from_cache = cs.TextSpan(clip, bank=BANK).fit(cache, layers=[2], m=2,
                                                         show_progress=False)
    for key in from_cache.results:
        assert from_images[key].texts == from_cache[key].texts


def test_accuracy_with_full_span_equals_heads_kept_whole(cached):
    """With as many basis texts as the head's rank, the projection is the head itself."""
    clip, _, cache = cached
    classifier = cs.ZeroShotClassifier(clip, ["a", "b", "c"], templates=["{}"])
    embeddings = torch.eye(24)  # a bank spanning the whole joint space
    span = cs.TextSpan(clip, bank=[f"axis {i}" for i in range(24)], text_embeddings=embeddings)
    report = span.fit(cache, m=24, show_progress=False)  # rank min(80, K, E) = 24
    m_full = min(len(r.texts) for r in report.results.values())
    accuracy = report.accuracy(cache, classifier, m_values=[1, m_full])
    assert accuracy[f"m={m_full}"] == accuracy["heads, no projection"]
    baseline = (classifier.logits(torch.from_numpy(cache.image_embed[:].copy())).argmax(-1)
                == torch.from_numpy(cache.labels[:].copy())).double().mean().item()
    assert accuracy["baseline"] == pytest.approx(baseline)
    # labels= overrides the cache's labels (here: every image is class 0)
    zeros = torch.zeros(len(cache), dtype=torch.long)
    relabelled = report.accuracy(cache, classifier, m_values=[1], labels=zeros)
    by_hand = (classifier.predict(torch.from_numpy(cache.image_embed[:].copy())) == 0)
    assert relabelled["baseline"] == pytest.approx(by_hand.double().mean().item())
    with pytest.raises(ValueError, match="class indices in 0..2"):
        report.accuracy(cache, classifier, labels=zeros + 3)


def test_random_bank_is_seeded_unit_vectors():
    bank = random_bank(5, 8, seed=3)
    assert torch.allclose(bank.norm(dim=-1), torch.ones(5))
    assert torch.equal(bank, random_bank(5, 8, seed=3))


def test_textspan_is_fit_to_data_and_its_report_is_a_mapping(cached):
    from collections.abc import Mapping

    from captum.attr import Attribution

    clip, _, cache = cached
    span = cs.TextSpan(clip, bank=BANK)
    assert not isinstance(span, Attribution)  # it reads a dataset, not one input's attribution
    report = span.fit(cache, layers=[2], m=2, show_progress=False)
    assert isinstance(report, Mapping)
    assert list(report) == [(2, h) for h in range(4)] and len(report) == 4
    assert (2, 1) in report and (1, 1) not in report
    assert dict(report.items()) == report.results
    with pytest.raises(KeyError, match=r"\(layer, head\) = \(1, 1\)"):
        report[(1, 1)]
    assert cs.TextSpan(clip, bank="toy").texts == cs.text_bank("toy")


def test_bad_textspan_arguments(cached):
    clip, _, cache = cached
    with pytest.raises(ValueError, match="m must be"):
        cs.TextSpan(clip, bank=BANK).fit(cache, m=11)
    with pytest.raises(ValueError, match="not in the cache"):
        cs.TextSpan(clip, bank=BANK).fit(cache, layers=[0], m=1)
    with pytest.raises(ValueError, match="empty"):
        cs.TextSpan(clip, bank=[])
    with pytest.raises(ValueError, match=r"\[T, 24\]"):
        cs.TextSpan(clip, bank=["a", "b"], text_embeddings=torch.randn(2, 7))


def test_retrieval_by_text_ranks_the_heads_dot_products(cached):
    clip, _, cache = cached
    top = cs.retrieve(cache, layer=2, head=1, query="a red circle", k=5, clip=clip)
    text = clip.encode_text("a red circle")[0]
    scores = torch.from_numpy(cache.head(2, 1).copy()) @ text
    assert torch.equal(top.indices, scores.topk(5).indices)
    bottom = cs.retrieve(cache, layer=2, head=1, query=text, k=3, lowest=True)
    assert torch.equal(bottom.indices, scores.topk(3, largest=False).indices)


def test_retrieval_by_image_uses_the_heads_cosine(cached):
    clip, data, cache = cached
    by_index = cs.retrieve(cache, layer=-1, head=0, query=4, k=3)
    assert by_index.indices[0] == 4 and by_index.metric == "cosine"
    by_image = cs.retrieve(cache, layer=-1, head=0, query=data[4][0], k=3, clip=clip)
    assert torch.equal(by_image.indices, by_index.indices)
    assert np.isclose(by_image.scores[0].item(), 1.0, atol=1e-4)


def test_bad_retrieval_queries(cached):
    clip, _, cache = cached
    with pytest.raises(ValueError, match="clip="):
        cs.retrieve(cache, 2, 1, "a dog")
    with pytest.raises(ValueError, match="not cached"):
        cs.retrieve(cache, 0, 1, 3)
    with pytest.raises(TypeError, match="query must be"):
        cs.retrieve(cache, 2, 1, torch.randn(5))
    with pytest.raises(ValueError, match="k must be"):
        cs.retrieve(cache, 2, 1, 0, k=100)
