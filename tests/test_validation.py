"""Arguments that used to be read silently wrong now mean one thing everywhere, or are refused.

The small tower has 3 layers and 4 heads; its cache holds layers 1 and 2.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import images_for, small_clip

import captum_clipspan as cs
from captum_clipspan.attr.ablation import head_accuracy
from captum_clipspan.validation import (
    check_labels,
    check_text_embeddings,
    resolve_heads,
    resolve_layers,
    resolve_texts,
)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    clip = small_clip("tok", torch.float32)
    images = images_for(clip, batch=12)
    data = torch.utils.data.TensorDataset(images, torch.arange(12) % 2)
    cache = cs.cache_decomposition(clip, data, tmp_path_factory.mktemp("c") / "cache",
                                   layers=[1, 2], dtype="float32", show_progress=False)
    return clip, data, cache


@pytest.mark.parametrize("texts", [["a dog", "a cat"], "a dog", torch.randn(2, 24),
                                   torch.randn(24)])
def test_texts_passed_as_target_are_refused_naming_texts(clip32, texts):
    with pytest.raises(TypeError, match="texts="):
        cs.HeadContribution(clip32).attribute(images_for(clip32), target=texts)


@pytest.mark.parametrize("target", [[0.0, 1.0], 1.0, torch.tensor([0.0, 1.0]), True])
def test_float_and_bool_targets_are_refused_not_truncated(clip32, target):
    with pytest.raises(TypeError, match="target"):
        cs.HeadContribution(clip32).attribute(images_for(clip32), texts=["a", "b"],
                                              target=target)


def test_a_bare_pair_of_heads_is_refused_with_both_spellings(clip32):
    with pytest.raises(ValueError, match=r"heads=\[2, 1\].*heads=\[\(2, 1\)\]"):
        cs.PatchContribution(clip32, heads=(2, 1))
    per_layer = cs.PatchContribution(clip32, heads=[2, 1])
    assert per_layer.layers == (0, 1, 2) and per_layer.head_mask.sum() == 3 * 2
    one = cs.PatchContribution(clip32, heads=[(2, 1)])
    assert one.layers == (2,) and one.head_mask.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_layers_with_head_pairs_are_refused_not_ignored(clip32):
    with pytest.raises(ValueError, match="not both"):
        cs.PatchContribution(clip32, layers=[0], heads=[(2, 1)])
    with pytest.raises(TypeError, match="all ints .* or all"):
        cs.PatchContribution(clip32, heads=[1, (2, 1)])


@pytest.mark.parametrize("layers", ["12", [1.7], True, [True], 1.0])
def test_layers_that_are_not_ints_are_refused(clip32, layers):
    with pytest.raises(TypeError, match="layers"):
        cs.HeadContribution(clip32, layers=layers)
    with pytest.raises(TypeError, match="layers"):
        cs.decompose(clip32, images_for(clip32), layers=layers)
    with pytest.raises(TypeError, match="layers"):
        resolve_layers(layers, 3)


def test_layer_and_head_indices_never_wrap():
    assert resolve_layers([-1, 0], 3) == (0, 2)
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers([3], 3)
    with pytest.raises(ValueError, match="out of range"):
        resolve_heads([(0, 4)], None, 3, 4)
    with pytest.raises(ValueError, match="out of range"):
        resolve_heads([(-4, 0)], None, 3, 4)


def test_out_of_range_layers_are_refused_in_textspan_retrieval_and_the_cache(cached):
    clip, _, cache = cached
    with pytest.raises(ValueError, match="out of range"):  # 4 % 3 = 1 is cached
        cs.TextSpan(clip, bank=["a", "b", "c"]).fit(cache, layers=[4], m=1,
                                                           show_progress=False)
    with pytest.raises(ValueError, match="out of range"):
        cs.retrieve(cache, layer=4, head=0, query=0, k=2)
    with pytest.raises(ValueError, match="out of range"):  # -4 % 3 = 2 is cached
        cache.head(-4, 0)
    with pytest.raises(ValueError, match="out of range"):
        cache.head(2, 4)
    assert (cache.head(-1, 0) == cache.head(2, 0)).all()


def test_labels_beyond_the_classes_are_refused_by_every_accuracy(cached):
    clip, data, cache = cached
    classifier = cs.ZeroShotClassifier(clip, ["dog", "cat"], templates=["{}"])
    too_big = torch.arange(12) % 3  # class 2 does not exist
    with pytest.raises(ValueError, match=r"0\.\.1"):
        head_accuracy(cache, classifier, too_big)
    with pytest.raises(TypeError, match="integer"):
        head_accuracy(cache, classifier, too_big.float())
    means = cs.ComponentMeans.from_cache(cache)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        cs.MeanAblation(clip, means).study(cache, classifier, labels=too_big,
                                           show_progress=False)
    three = cs.ZeroShotClassifier(clip, ["dog", "cat", "bird"], templates=["{}"])
    report = cs.TextSpan(clip, bank=["a", "b", "c"]).fit(cache, m=1,
                                                                show_progress=False)
    assert set(report.accuracy(cache, three)) >= {"baseline", "m=1"}
    one = cs.ZeroShotClassifier(clip, ["dog"], templates=["{}"])  # cache labels are 0 and 1
    with pytest.raises(ValueError, match=r"0\.\.0"):
        report.accuracy(cache, one)
    assert check_labels([1, 0], 2, 2).tolist() == [1, 0]


def test_text_embeddings_are_one_or_more_finite_rows_of_the_joint_width():
    assert check_text_embeddings(torch.ones(24), 24).shape == (1, 24)
    with pytest.raises(TypeError, match=r"torch.Tensor \[T, 24\]"):
        check_text_embeddings([[0.0] * 24], 24)
    with pytest.raises(ValueError, match=r"\[24\] or \[T, 24\].*got \[2, 3\]"):
        check_text_embeddings(torch.ones(2, 3), 24)
    with pytest.raises(ValueError, match="empty"):
        check_text_embeddings(torch.ones(0, 24), 24)
    with pytest.raises(ValueError, match="NaN"):
        check_text_embeddings(torch.full((1, 24), float("nan")), 24)
    assert cs.decomposition.check_text_embeddings is check_text_embeddings  # the old import path


def test_a_classifier_is_read_as_its_class_embeddings():
    clip = SimpleNamespace(embed_dim=24)
    classes = torch.randn(3, 24)
    assert torch.equal(resolve_texts(clip, SimpleNamespace(class_embeddings=classes)), classes)
    with pytest.raises(ValueError, match=r"\[T, 24\]"):
        resolve_texts(clip, SimpleNamespace(class_embeddings=torch.randn(3, 8)))
    with pytest.raises(TypeError, match="ZeroShotClassifier"):
        resolve_texts(clip, SimpleNamespace(class_embeddings=[[0.0] * 24]))
