"""The spurious-cue toy: planted co-occurrence, balanced groups, its weights, the benchmark, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import captum_clipspan as cs
from captum_clipspan.cli import main
from captum_clipspan.toy import TOY_MODELS, toy_clip_info
from captum_clipspan.toy.scenes import ATTRIBUTES, SPURIOUS_PAIRS, SpuriousCue, make_scenes
from captum_clipspan.toy.spurious import (
    SHAPES,
    TEXTURES,
    balanced_groups,
    reference_scenes,
    spurious_benchmark,
    texture_concept,
)

needs_weights = pytest.mark.skipif(
    not (TOY_MODELS["toy-spurious"] / "toy_clip.safetensors").exists(),
    reason="spurious toy not trained")


# The planted cue ------------------------------------------------------------------------------

def paired(scenes) -> np.ndarray:
    return np.array([SPURIOUS_PAIRS[a["shape"]] == a["texture"] for a in scenes.attributes])


def test_spurious_cue_pairs_shape_and_texture_at_the_rate_asked():
    scenes = make_scenes(4000, seed=3, spurious=SpuriousCue(p=0.95))
    assert abs(paired(scenes).mean() - 0.95) < 0.015
    shapes = [a["shape"] for a in scenes.attributes]
    assert set(shapes) == set(SPURIOUS_PAIRS)  # "ring" is not a key: never drawn
    # the shapes stay balanced and, off the pairing, the other textures are uniform
    counts = np.unique(shapes, return_counts=True)[1]
    assert counts.min() > 0.9 * 1000
    off = [a["texture"] for a, same in zip(scenes.attributes, paired(scenes), strict=True)
           if not same and a["shape"] == "circle"]
    assert set(off) == set(TEXTURES) - {"striped"}
    # the other families are untouched: the same draws as without the cue
    plain = make_scenes(200, seed=3)
    cued = make_scenes(200, seed=3, spurious=SpuriousCue(p=0.95))
    for family in ("color", "size", "position", "count", "background"):
        assert plain.labels(family).tolist() == cued.labels(family).tolist()
    assert paired(make_scenes(300, seed=1, spurious=SpuriousCue(p=1.0))).all()
    assert not paired(make_scenes(300, seed=1, spurious=SpuriousCue(p=0.0))).any()


def test_pinned_families_win_over_the_cue():
    scenes = make_scenes(50, seed=0, spurious=SpuriousCue(p=1.0), shape="circle",
                         texture="dotted")
    assert {(a["shape"], a["texture"]) for a in scenes.attributes} == {("circle", "dotted")}


def test_spurious_cue_refuses_bad_settings():
    with pytest.raises(ValueError, match="two families"):
        SpuriousCue(target="shape", cue="shape")
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        SpuriousCue(p=1.5)
    with pytest.raises(ValueError, match="at least one"):
        SpuriousCue(pairs={})
    with pytest.raises(ValueError, match="hexagon"):
        SpuriousCue(pairs={"hexagon": "plain"})


def test_balanced_groups_hold_every_group_once_and_repeat():
    data = balanced_groups(3)
    assert len(data) == 3 * len(SHAPES) * len(TEXTURES) == 48
    assert torch.bincount(data.groups).tolist() == [3] * 16
    assert data.group_names[5] == f"{SHAPES[1]}/{TEXTURES[1]}"
    for index in range(len(data)):
        shape, texture = data.group_names[int(data.groups[index])].split("/")
        assert SHAPES[int(data.labels[index])] == shape
        assert bool(data.majority[index]) == (SPURIOUS_PAIRS[shape] == texture)
    assert int(data.majority.sum()) == 4 * 3
    assert torch.equal(balanced_groups(3).images, data.images)
    with pytest.raises(ValueError, match="positive int"):
        balanced_groups(0)
    # the reference set follows the training distribution but not its scenes
    assert reference_scenes(8).shape == (8, 3, 64, 64)
    validation = balanced_groups(3, split="validation")
    assert not torch.equal(validation.images, data.images)
    with pytest.raises(ValueError, match="trained on"):
        balanced_groups(3, split="train")
    with pytest.raises(ValueError, match="trained on"):
        reference_scenes(8, split="train")


# The shipped model ----------------------------------------------------------------------------

@needs_weights
def test_the_spurious_toy_loads_and_records_how_it_was_trained():
    clip = cs.HookedCLIP.from_pretrained("toy-spurious")
    assert clip.model_name == "toy-spurious" and clip.visual.n_layers == 4
    info = toy_clip_info("toy-spurious")
    assert info["training"]["spurious"] == 0.95
    assert "--spurious 0.95" in info["training"]["reproduce"]
    accuracy = info["zero_shot_accuracy"]
    # the shortcut: perfect where the pairing holds, worse where it breaks
    assert accuracy["shape_majority"] > 0.95
    assert accuracy["shape_minority"] < accuracy["shape_majority"] - 0.2
    assert accuracy["shape_worst_group"] < 0.6
    with pytest.raises(ValueError, match="ships its own weights"):
        cs.HookedCLIP.from_pretrained("toy-spurious", pretrained="laion2b_s34b_b88k")
    with pytest.raises(ValueError, match="unknown toy"):
        toy_clip_info("toy-large")


# The benchmark ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def benchmark():
    return spurious_benchmark(n_reference=1000, n_per_group=50, show_progress=False)


@needs_weights
def test_ablating_the_texture_heads_helps_the_worst_group_and_random_heads_do_not(benchmark):
    before, after, random = benchmark["before"], benchmark["after"], benchmark["random"]["after"]
    assert before["count"] == after["count"] == 16 * 50
    # measured at these sizes: worst group 0.46 -> 0.62 (random 0.46), minority 0.72 -> 0.85
    assert after["worst_group"] >= before["worst_group"] + 0.08
    assert benchmark["minority"]["after"] >= benchmark["minority"]["before"] + 0.06
    assert after["average"] >= before["average"] + 0.03
    assert after["worst_group"] >= random["worst_group"] + 0.08
    assert benchmark["minority"]["after"] >= benchmark["minority"]["random"] + 0.06
    # against every pair (held-out test groups): far above the expectation of a random pair,
    # among the best few of the 120; measured 0.50 vs mean 0.39, expected best of 20 0.53
    expectation = benchmark["random_expectation"]
    assert expectation["exhaustive"] and len(expectation["sets"]) == 120
    assert after["worst_group"] >= expectation["mean"]["worst_group"] + 0.06
    assert (expectation["worst_group"] > after["worst_group"]).mean() <= 0.1
    # the oracle is chosen on validation groups, so it need not be best on the test groups
    oracle = benchmark["oracle"]
    assert oracle["after"]["worst_group"] >= expectation["mean"]["worst_group"]
    # the price: the groups that follow the pairing lose a little, as in the paper
    assert benchmark["majority"]["after"] > 0.85
    # the chosen heads are the best-scored ones, and their TextSpan texts name textures
    scores = benchmark["concept_scores"]
    assert sorted(scores, key=lambda key: -scores[key])[:2] == benchmark["heads"]
    first = benchmark["report"][benchmark["heads"][0]]
    assert any(texture in text for text in first.texts[:3] for texture in TEXTURES)


@needs_weights
def test_spurious_table_lists_the_three_settings(benchmark):
    table = cs.spurious_table(benchmark)
    lines = table.splitlines()
    assert len(lines) == 9 and lines[2].startswith("| unmodified | - |")
    heads = ", ".join(f"{layer}.{head}" for layer, head in benchmark["heads"])
    assert f"| concept heads ablated | {heads} |" in lines[3]
    assert f"{benchmark['after']['worst_group']:.3f} |" in lines[3]
    assert "best of 5" in lines[4]
    assert "mean over all 120 sets" in lines[5] and "expected best of 5" in lines[6]
    assert "expected best of 20" in lines[7] and "oracle heads (chosen on validation)" in lines[8]


def test_centered_concept_scores_the_differences_among_its_texts():
    """Texts that share a template direction ``t`` and differ along ``a``/``b``: uncentered,
    the head holding ``t`` wins; centered, the head spanning ``a - b`` does."""
    frame = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1))).Q.T
    template, a, b = frame[0], frame[1], frame[2]
    texts = torch.stack([2 * template + a, 2 * template + b])
    results = {key: cs.TextSpanResult(
        texts=["x"], indices=torch.arange(1), basis=basis[None], variance_explained=torch.ones(1),
        reconstruction=None, mean=torch.zeros(16), rank=1, scores=torch.ones(1))
        for key, basis in {(0, 0): template, (0, 1): (a - b) / 2 ** 0.5, (1, 0): frame[5]}.items()}
    report = cs.TextSpanReport(results)
    assert cs.heads_matching(report, texts, k=1) == [(0, 0)]
    assert cs.heads_matching(report, texts, k=1, center=True) == [(0, 1)]
    centered = cs.head_concept_scores(report, texts, center=True)
    assert centered[(0, 1)] == pytest.approx(1.0, abs=1e-5)
    assert centered[(0, 0)] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="two or more texts"):
        cs.head_concept_scores(report, texts[0], center=True)
    with pytest.raises(ValueError, match="do not differ"):
        cs.head_concept_scores(report, torch.stack([texts[0], texts[0]]), center=True)


# The CLI --------------------------------------------------------------------------------------

@needs_weights
def test_cli_spurious_synthetic_writes_the_table(tmp_path, capsys):
    code = main(["spurious", "synthetic", "--n-per-group", "8", "--n-reference", "200",
                 "--k", "2", "--draws", "2", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| concept heads ablated |" in printed
    summary = json.loads((tmp_path / "spurious.json").read_text())
    assert len(summary["heads"]) == 2 and len(summary["random"]["draws"]) == 2
    assert summary["before"]["count"] == 16 * 8 and len(summary["groups"]) == 16
    assert summary["center"] is True  # several concept texts: scored on their differences
    assert main(["spurious", "synthetic", "--n-per-group", "2", "--n-reference", "50",
                 "--no-center", "--out", str(tmp_path / "raw")]) == 0
    assert json.loads((tmp_path / "raw" / "spurious.json").read_text())["center"] is False
    markdown = (tmp_path / "spurious.md").read_text()
    assert "| circle/dotted |" in markdown and "RANDOM" not in markdown
    assert (tmp_path / "textspan.csv").stat().st_size > 0


def test_cli_spurious_on_a_waterbirds_folder(tmp_path, capsys):
    from PIL import Image

    rows = ["img_id,img_filename,y,split,place,place_filename"]
    rng = np.random.default_rng(0)
    for index in range(24):
        name = f"birds/{index}.png"
        (tmp_path / "birds").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / name)
        rows.append(f"{index},{name},{index % 2},{1 if index < 8 else 2},{index // 2 % 2},x")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    code = main(["spurious", str(tmp_path), "--model", "toy", "--concept", "a striped object",
                 "--concept", "a dotted object", "--k", "2", "--draws", "2", "--m", "3",
                 "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "spurious.json").read_text())
    assert summary["before"]["count"] == 16  # the test split
    assert summary["groups"] == ["landbird on land", "landbird on water", "waterbird on land",
                                 "waterbird on water"]
    assert summary["concept"] == ["a striped object", "a dotted object"]
    capsys.readouterr()
    assert main(["spurious", str(tmp_path), "--model", "toy", "--out", str(out)]) == 2
    assert "needs --concept" in capsys.readouterr().err
    assert main(["spurious", "synthetic", "--model", "ViT-B-32", "--out", str(out)]) == 2
    assert "runs on a toy model" in capsys.readouterr().err
    assert main(["spurious", "synthetic", "--k", "0", "--out", str(out)]) == 2
    assert "--k must be at least 1" in capsys.readouterr().err


def test_attributes_of_the_spurious_toy_are_the_scene_families():
    assert set(SPURIOUS_PAIRS) <= set(ATTRIBUTES["shape"])
    assert set(SPURIOUS_PAIRS.values()) == set(TEXTURES)
    assert len(texture_concept()) % len(TEXTURES) == 0
