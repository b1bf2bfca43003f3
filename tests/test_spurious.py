"""Spurious-cue removal: worst-group accuracy, the Waterbirds layout, head selection, ablation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import captum_clipspan as cs
from captum_clipspan.toy import toy_bank
from captum_clipspan.toy.probes import family_classifier
from captum_clipspan.toy.scenes import ATTRIBUTES, SyntheticScenes, zero_shot_prompts

N_SCENES = 64
N_GROUPS = len(ATTRIBUTES["shape"]) * len(ATTRIBUTES["background"])  # shape x background


# worst_group_accuracy -------------------------------------------------------------------------

def test_worst_group_accuracy_equals_a_brute_force_count():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 3, 200))
    groups = rng.integers(0, 5, 200)
    groups[groups == 3] = 4  # group 3 is empty
    result = cs.worst_group_accuracy(predictions, labels, groups, n_groups=6)
    by_hand = {g: float(np.mean(predictions[groups == g] == labels[groups == g]))
               for g in (0, 1, 2, 4)}
    assert result["per_group"] == pytest.approx(by_hand)
    assert result["counts"] == {g: int((groups == g).sum()) for g in (0, 1, 2, 4)}
    assert result["empty"] == [3, 5]
    assert result["worst_group"] == pytest.approx(min(by_hand.values()))
    assert result["worst_group_id"] == min(by_hand, key=by_hand.get)
    assert result["average"] == pytest.approx(np.mean(predictions == labels))
    assert result["count"] == 200
    scores = torch.nn.functional.one_hot(torch.from_numpy(predictions), 3).float()
    assert cs.worst_group_accuracy(scores, labels, groups, n_groups=6) == result
    assert cs.worst_group_accuracy(predictions, labels, groups)["empty"] == [3]


def test_worst_group_accuracy_refuses_bad_input():
    good = torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        cs.worst_group_accuracy(good, torch.tensor([0, 1]), good)
    with pytest.raises(ValueError, match="groups must have shape"):
        cs.worst_group_accuracy(good, good, good[:, None])
    with pytest.raises(TypeError, match="labels must be integer"):
        cs.worst_group_accuracy(good, good.float(), good)
    with pytest.raises(TypeError, match="groups must be integer"):
        cs.worst_group_accuracy(good, good, ["a", "b", "c"])
    with pytest.raises(ValueError, match="scores"):
        cs.worst_group_accuracy(good.float(), good, good)
    with pytest.raises(ValueError, match="non-negative"):
        cs.worst_group_accuracy(good, good, torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="n_groups=2"):
        cs.worst_group_accuracy(good, good, torch.tensor([0, 2, 1]), n_groups=2)
    with pytest.raises(ValueError, match="no examples"):
        cs.worst_group_accuracy(torch.tensor([], dtype=torch.long), [], [])


# WaterbirdsDataset ----------------------------------------------------------------------------

ROWS = [  # img_id, img_filename, y, split, place, place_filename
    (1, "001.Black_footed_Albatross/a.jpg", 1, 0, 1, "/o/ocean/x.jpg"),
    (2, "001.Black_footed_Albatross/b.jpg", 1, 2, 0, "/b/bamboo/x.jpg"),
    (3, "002.Laysan_Albatross/c.jpg", 0, 2, 1, "/l/lake/x.jpg"),
    (4, "002.Laysan_Albatross/d.jpg", 0, 2, 0, "/f/forest/x.jpg"),
    (5, "002.Laysan_Albatross/e.jpg", 1, 1, 1, "/o/ocean/y.jpg"),
]


@pytest.fixture
def waterbirds(tmp_path):
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for index, row in enumerate(ROWS):
        lines.append(",".join(map(str, row)))
        path = tmp_path / row[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 6, 3), 40 * index, dtype=np.uint8)).save(path)
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_waterbirds_reads_a_split_with_groups(waterbirds):
    data = cs.WaterbirdsDataset(waterbirds, "test")
    assert len(data) == 3
    assert data.labels.tolist() == [1, 0, 0] and data.places.tolist() == [0, 1, 0]
    assert data.groups.tolist() == [2, 1, 0]
    image, label = data[0]
    assert image.shape == (3, 8, 6) and label == 1
    assert image.max().item() == pytest.approx(40 / 255)
    assert len(cs.WaterbirdsDataset(waterbirds, None)) == 5
    assert cs.WaterbirdsDataset(waterbirds, 0).groups.tolist() == [3]
    halves = cs.WaterbirdsDataset(waterbirds, "val", transform=lambda im: torch.zeros(1))
    assert halves[0] == (torch.zeros(1), 1)


def test_waterbirds_refuses_bad_folders(waterbirds, tmp_path_factory):
    with pytest.raises(ValueError, match="no metadata.csv"):
        cs.WaterbirdsDataset(tmp_path_factory.mktemp("empty"))
    with pytest.raises(ValueError, match="split must be"):
        cs.WaterbirdsDataset(waterbirds, "holdout")
    (waterbirds / "metadata.csv").write_text("img_filename,y,split\na.jpg,1,0\n")
    with pytest.raises(ValueError, match=r"lacks the columns \['place'\]"):
        cs.WaterbirdsDataset(waterbirds)
    (waterbirds / "metadata.csv").write_text("img_filename,y,split,place\na.jpg,2,0,0\n")
    with pytest.raises(ValueError, match="0 or 1"):
        cs.WaterbirdsDataset(waterbirds, None)
    (waterbirds / "metadata.csv").write_text("img_filename,y,split,place\na.jpg,1,0,0\n")
    with pytest.raises(ValueError, match="no rows in split"):
        cs.WaterbirdsDataset(waterbirds, "test")


# Head selection on a planted report -----------------------------------------------------------

def planted_report(width: int = 16, m: int = 3) -> tuple[cs.TextSpanReport, torch.Tensor]:
    """Four heads with orthonormal bases from one frame ``Q`` whose row 0 is the concept: head
    (1, 0) holds the concept as its 2nd basis row, head (0, 1) at 45 degrees in its 1st row, the
    other two are orthogonal to it."""
    generator = torch.Generator().manual_seed(0)
    frame = torch.linalg.qr(torch.randn(width, width, generator=generator)).Q.T  # rows
    concept = frame[0]
    bases = {(0, 0): frame[[6, 7, 8]], (0, 1): torch.stack([(frame[0] + frame[3]) / 2 ** 0.5,
                                                           frame[4], frame[5]]),
             (1, 0): frame[[1, 0, 2]], (1, 1): frame[[9, 10, 11]]}
    results = {key: cs.TextSpanResult(
        texts=[f"text {i}" for i in range(m)], indices=torch.arange(m), basis=basis[:m],
        variance_explained=torch.linspace(0.3, 0.9, m), reconstruction=None,
        mean=torch.zeros(width), rank=m, scores=torch.ones(m)) for key, basis in bases.items()}
    return cs.TextSpanReport(results), concept


def test_heads_matching_finds_the_planted_heads():
    report, concept = planted_report()
    scores = cs.head_concept_scores(report, concept)
    assert scores[(1, 0)] == pytest.approx(1.0, abs=1e-5)
    assert scores[(0, 1)] == pytest.approx(0.5, abs=1e-5)  # cos^2 45 degrees
    assert scores[(0, 0)] == pytest.approx(0.0, abs=1e-5)
    assert cs.heads_matching(report, concept, k=2) == [(1, 0), (0, 1)]
    assert cs.heads_matching(report, 3 * concept[None], k=1) == [(1, 0)]
    # with only the first basis row, head (1, 0) no longer holds the concept
    assert cs.heads_matching(report, concept, k=1, m=1) == [(0, 1)]
    # several texts: the score is the mean over them
    other = torch.nn.functional.normalize(torch.randn(16), dim=0)
    two = cs.head_concept_scores(report, torch.stack([concept, other]))
    one = cs.head_concept_scores(report, other)
    assert two[(1, 0)] == pytest.approx((1.0 + one[(1, 0)]) / 2, abs=1e-5)


def test_heads_matching_refuses_bad_input():
    report, concept = planted_report()
    with pytest.raises(ValueError, match="needs clip="):
        cs.heads_matching(report, "a photo of a place")
    with pytest.raises(ValueError, match=r"\[16\] or \[T, 16\]"):
        cs.heads_matching(report, torch.ones(8))
    with pytest.raises(ValueError, match="non-zero"):
        cs.heads_matching(report, torch.zeros(16))
    with pytest.raises(TypeError, match="concept must be"):
        cs.heads_matching(report, 3)
    with pytest.raises(ValueError, match=r"k must be an int in 1\.\.4"):
        cs.heads_matching(report, concept, k=5)
    with pytest.raises(ValueError, match=r"m must be an int in 1\.\.3"):
        cs.heads_matching(report, concept, m=4)
    with pytest.raises(TypeError, match="TextSpanReport"):
        cs.heads_matching({}, concept)


# End to end on the toy and synthetic scenes ---------------------------------------------------

@pytest.fixture(scope="module")
def study(tmp_path_factory):
    toy = cs.HookedCLIP.from_pretrained("toy")
    scenes = SyntheticScenes(N_SCENES, seed=11, label="shape", transform=toy.preprocess,
                             split="test")
    cache = cs.cache_decomposition(toy, scenes, tmp_path_factory.mktemp("spurious") / "cache",
                                   show_progress=False)
    attributes = [scenes.attributes(i) for i in range(N_SCENES)]
    shape = np.array([ATTRIBUTES["shape"].index(a["shape"]) for a in attributes])
    background = np.array([ATTRIBUTES["background"].index(a["background"]) for a in attributes])
    groups = shape * len(ATTRIBUTES["background"]) + background
    classifier = family_classifier(toy, "shape")
    report = cs.TextSpan(toy, bank=toy_bank()[0]).fit(cache, m=3, show_progress=False)
    return toy, scenes, cache, torch.from_numpy(shape), groups, classifier, report


def test_ablating_background_heads_end_to_end(study):
    toy, scenes, cache, labels, groups, classifier, report = study
    concept = [p for value in ATTRIBUTES["background"]
               for p in zero_shot_prompts("background", value)]
    heads = cs.heads_matching(report, concept, clip=toy, k=2)
    assert len(heads) == 2 and all(key in report.results for key in heads)
    means = cs.ComponentMeans.from_cache(cache)
    from_cache = cs.ablate_heads(toy, means, heads, cache, classifier, labels, groups,
                                 n_groups=N_GROUPS)
    from_images = cs.ablate_heads(toy, means, heads, scenes, classifier, None, groups,
                                  n_groups=N_GROUPS, batch_size=16)
    assert from_cache["heads"] == heads
    for result in (from_cache, from_images):
        for key in ("before", "after"):
            assert result[key]["count"] == N_SCENES
            assert sum(result[key]["counts"].values()) == N_SCENES
            assert set(result[key]["per_group"]) | set(result[key]["empty"]) == set(
                range(N_GROUPS))
    # the cache path and the image path (MeanAblation on the images) agree
    assert from_cache["before"] == from_images["before"]
    assert from_cache["after"]["per_group"] == pytest.approx(from_images["after"]["per_group"])
    with torch.no_grad():
        predicted = classifier.predict(scenes_tensor(toy, scenes), toy)
    assert from_cache["before"] == cs.worst_group_accuracy(predicted, labels, groups, N_GROUPS)


def scenes_tensor(toy, scenes):
    return torch.stack([scenes[i][0] for i in range(len(scenes))]).to(toy.dtype)


def test_ablating_nothing_changes_nothing(study):
    toy, scenes, cache, labels, groups, classifier, _ = study
    means = cs.ComponentMeans.from_cache(cache)
    for data in (cache, scenes):
        result = cs.ablate_heads(toy, means, [], data, classifier, labels, groups)
        assert result["heads"] == [] and result["before"] == result["after"]


def test_ablating_every_head_moves_the_scores(study):
    """Mean-ablating all cached heads leaves only the MLPs and embeddings: accuracy must drop."""
    toy, _, cache, labels, groups, classifier, _ = study
    means = cs.ComponentMeans.from_cache(cache)
    every = [(layer, head) for layer in cache.layers for head in range(cache.n_heads)]
    result = cs.ablate_heads(toy, means, every, cache, classifier, labels, groups)
    assert result["after"]["average"] < result["before"]["average"]


def test_random_heads_baseline_keeps_the_best_draw(study):
    toy, scenes, cache, labels, groups, classifier, _ = study
    means = cs.ComponentMeans.from_cache(cache)
    result = cs.random_heads_baseline(toy, means, cache, classifier, labels, groups, k=3,
                                      draws=4, seed=1, n_groups=N_GROUPS)
    assert len(result["draws"]) == 4
    assert all(len(draw["heads"]) == 3 and len(set(draw["heads"])) == 3
               for draw in result["draws"])
    assert result["after"]["worst_group"] == max(d["after"]["worst_group"]
                                                 for d in result["draws"])
    assert result["after"] in [d["after"] for d in result["draws"]]
    # each draw scores like ablate_heads with its heads, and the draws repeat with the seed
    first = result["draws"][0]
    alone = cs.ablate_heads(toy, means, first["heads"], cache, classifier, labels, groups,
                            n_groups=N_GROUPS)
    assert alone["after"] == first["after"] and alone["before"] == result["before"]
    again = cs.random_heads_baseline(toy, means, scenes, classifier, labels, groups, k=3,
                                     draws=4, seed=1, n_groups=N_GROUPS)
    assert [d["heads"] for d in again["draws"]] == [d["heads"] for d in result["draws"]]


def test_ablation_refuses_bad_input(study, tmp_path):
    toy, _, cache, labels, groups, classifier, _ = study
    means = cs.ComponentMeans.from_cache(cache)
    with pytest.raises(ValueError, match="pairs"):
        cs.ablate_heads(toy, means, [(1, 2, 3)], cache, classifier, labels, groups)
    with pytest.raises(TypeError, match="list of"):
        cs.ablate_heads(toy, means, "head.1.1", cache, classifier, labels, groups)
    with pytest.raises(ValueError, match="out of range"):
        cs.ablate_heads(toy, means, [(9, 0)], cache, classifier, labels, groups)
    with pytest.raises(ValueError, match="labels must be"):
        cs.ablate_heads(toy, means, [(1, 1)], cache, classifier, labels[:5], groups)
    with pytest.raises(ValueError, match="groups must have shape"):
        cs.ablate_heads(toy, means, [(1, 1)], cache, classifier, labels, groups[:5])
    partial = cs.cache_decomposition(toy, scenes_tensor(toy, study[1])[:4], tmp_path / "c",
                                     layers=[3], show_progress=False)
    with pytest.raises(ValueError, match="not in the cache"):
        cs.ablate_heads(toy, means, [(1, 1)], partial, classifier, labels[:4], groups[:4])
    with pytest.raises(ValueError, match=r"k must be an int in 1\.\.16"):
        cs.random_heads_baseline(toy, means, cache, classifier, labels, groups, k=17)
    with pytest.raises(ValueError, match="draws"):
        cs.random_heads_baseline(toy, means, cache, classifier, labels, groups, k=2, draws=0)


def test_expected_best_of_equals_enumerating_every_draw():
    from itertools import product

    from captum_clipspan.spurious import expected_best_of

    values = [0.2, 0.5, 0.5, 0.9]
    for draws in (1, 2, 3):
        every = [max(values[i] for i in pick) for pick in product(range(4), repeat=draws)]
        assert expected_best_of(values, draws) == pytest.approx(np.mean(every))
    with pytest.raises(ValueError, match="positive int"):
        expected_best_of(values, 0)


def test_random_heads_expectation_scores_every_set_and_the_oracle_is_its_best(study):
    from math import comb

    from captum_clipspan.spurious import oracle_heads, random_heads_expectation

    toy, _, cache, labels, groups, classifier, _ = study
    means = cs.ComponentMeans.from_cache(cache)
    n_heads = len(cache.layers) * cache.n_heads
    result = random_heads_expectation(toy, means, cache, classifier, labels, groups, k=2,
                                      best_of=(1, 5), n_groups=N_GROUPS)
    assert result["exhaustive"] and len(result["sets"]) == comb(n_heads, 2)
    assert len({tuple(s) for s in result["sets"]}) == len(result["sets"])
    worst = result["worst_group"]
    assert result["mean"]["worst_group"] == pytest.approx(worst.mean())
    assert result["best_of"][1]["worst_group"] == pytest.approx(worst.mean())
    assert worst.mean() <= result["best_of"][5]["worst_group"] <= worst.max()
    # a set scores as ablate_heads scores it alone
    alone = cs.ablate_heads(toy, means, result["sets"][7], cache, classifier, labels, groups,
                            n_groups=N_GROUPS)
    assert alone["after"] == result["after"][7]
    best = oracle_heads(result)
    assert result["worst_group"][result["sets"].index(best)] == worst.max()
    sampled = random_heads_expectation(toy, means, cache, classifier, labels, groups, k=3,
                                       max_sets=10, seed=2, n_groups=N_GROUPS)
    assert not sampled["exhaustive"] and len(sampled["sets"]) == 10
