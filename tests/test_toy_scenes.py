"""Tests of the synthetic scene generator."""

from __future__ import annotations

import csv
import hashlib
import time

import numpy as np
import pytest
import torch

from captum_clipspan.toy.scenes import (
    ATTRIBUTES,
    BACKGROUND_RGB,
    COLOR_RGB,
    FAMILIES,
    HELD_OUT_SPLITS,
    SpuriousCue,
    SyntheticScenes,
    caption,
    caption_vocabulary,
    held_out,
    make_scenes,
    sample_families,
    scene_ids,
    write_image_folder,
    zero_shot_prompts,
)


def test_shapes_and_types():
    s = make_scenes(12, seed=0)
    assert s.images.shape == (12, 64, 64, 3) and s.images.dtype == np.uint8
    assert s.masks.shape == (12, 64, 64) and s.masks.dtype == bool
    assert s.object_masks.shape == (12, 3, 64, 64) and s.object_masks.dtype == bool
    assert len(s) == len(s.attributes) == len(s.captions) == 12
    assert all(set(a) == set(FAMILIES) for a in s.attributes)
    t = s.tensors()
    assert t.shape == (12, 3, 64, 64) and t.dtype == torch.float32
    assert 0.0 <= t.min() and t.max() <= 1.0
    assert make_scenes(3, size=32).images.shape == (3, 32, 32, 3)


def test_determinism_and_prefix_stability():
    a, b = make_scenes(20, seed=5), make_scenes(20, seed=5)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.object_masks, b.object_masks)
    assert a.attributes == b.attributes and a.captions == b.captions
    c = make_scenes(20, seed=6)
    assert not np.array_equal(a.images, c.images)
    longer = make_scenes(40, seed=5)
    np.testing.assert_array_equal(longer.images[:20], a.images)
    chunk = make_scenes(10, seed=5, start=10)
    np.testing.assert_array_equal(chunk.images, a.images[10:])


def test_masks_match_pixels():
    s = make_scenes(200, seed=1)
    for i, attrs in enumerate(s.attributes):
        img, mask = s.images[i], s.masks[i]
        color = np.array(COLOR_RGB[attrs["color"]], dtype=np.uint8)
        assert mask.any()
        assert (img[mask] == color).all()
        assert not (img[~mask] == color).all(-1).any()
        base, pattern = (np.array(c, dtype=np.uint8) for c in BACKGROUND_RGB[attrs["background"]])
        bg = img[~mask]
        assert ((bg == base).all(-1) | (bg == pattern).all(-1)).all()
        # objects: disjoint, as many as the count says, union equals the mask
        n_obj = ATTRIBUTES["count"].index(attrs["count"]) + 1
        per = s.object_masks[i]
        assert per.any((1, 2)).sum() == n_obj
        assert per.sum(0).max() == 1
        np.testing.assert_array_equal(per.any(0), mask)
        # all objects lie in the named third of the image
        cols = np.nonzero(mask.any(0))[0]
        third = ATTRIBUTES["position"].index(attrs["position"])
        assert cols.min() >= third * 64 / 3 - 1 and cols.max() <= (third + 1) * 64 / 3 + 1
        if attrs["texture"] == "plain":
            assert (bg == base).all()
        else:
            assert (bg == pattern).all(-1).any()


def test_large_objects_are_larger():
    small = make_scenes(100, seed=2, size="small", count="one")
    large = make_scenes(100, seed=2, size="large", count="one")
    assert small.images.shape[1] == 64
    assert small.masks.sum((1, 2)).max() < large.masks.sum((1, 2)).min()


def test_fixed_pins_attributes_and_keeps_other_draws():
    s = make_scenes(30, seed=3, shape="ring", background="white")
    assert {a["shape"] for a in s.attributes} == {"ring"}
    assert {a["background"] for a in s.attributes} == {"white"}
    free = make_scenes(30, seed=3)
    assert [a["color"] for a in s.attributes] == [a["color"] for a in free.attributes]
    assert len({a["color"] for a in s.attributes}) > 1


def test_labels_indices():
    s = make_scenes(50, seed=4)
    for family in FAMILIES:
        idx = s.labels(family)
        assert idx.dtype == np.int64 and idx.shape == (50,)
        assert [ATTRIBUTES[family][i] for i in idx] == [a[family] for a in s.attributes]
    # every value shows up in a modest sample
    big = make_scenes(500, seed=4)
    for family, values in ATTRIBUTES.items():
        assert set(np.unique(big.labels(family))) == set(range(len(values)))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"shape": "hexagon"}, "circle"), ({"colour": "red"}, "shape"), ({"size": "huge"}, "small")],
)
def test_bad_family_or_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_scenes(2, **kwargs)
    with pytest.raises(ValueError):
        make_scenes(2).labels("colour")


def test_caption_mentions_its_attributes():
    s = make_scenes(100, seed=5)
    rng = np.random.default_rng(0)
    for attrs in s.attributes:
        fams = sample_families(rng)
        text = caption(attrs, families=fams, rng=rng)
        words = set(text.split())
        for f in fams:
            value = attrs[f]
            if f == "shape":
                assert value in words or value + "s" in words or value + "es" in words
            else:
                assert value in words, (f, text)
        for f in set(FAMILIES) - set(fams):
            if f != "shape":  # e.g. "cross" never appears as a color word
                assert attrs[f] not in words, (f, text)
    full = make_scenes(
        1,
        seed=9,
        count="two",
        size="small",
        color="blue",
        shape="square",
        position="left",
        texture="striped",
        background="black",
    ).captions[0]
    assert full == "two small blue squares on the left on a black striped background"
    assert caption({"color": "orange", "shape": "ring"}, ["color", "shape"]) == "an orange ring"
    assert caption({"background": "gray"}, ["background"], prefix="a photo of ") == (
        "a photo of an object on a gray background"
    )
    with pytest.raises(ValueError):
        caption({"color": "red"}, ["shape"])


def test_sample_families_covers_single_families():
    rng = np.random.default_rng(1)
    singles = {tuple(f) for f in (sample_families(rng) for _ in range(2000)) if len(f) == 1}
    assert {s[0] for s in singles} == set(FAMILIES)


def test_vocabulary_covers_prompts():
    vocab = set(caption_vocabulary())
    for family, values in ATTRIBUTES.items():
        for v in values:
            for p in zero_shot_prompts(family, v):
                assert set(p.split()) <= vocab


def test_torch_dataset():
    ds = SyntheticScenes(300, seed=7, label="color")
    ref = make_scenes(300, seed=7)
    assert len(ds) == 300
    for i in (0, 255, 256, 299, -1):
        image, y = ds[i]
        j = i % 300
        assert image.shape == (3, 64, 64)
        torch.testing.assert_close(image, ref.tensors()[j])
        assert ATTRIBUTES["color"][y] == ref.attributes[j]["color"]
    plain = SyntheticScenes(5, seed=7, transform=lambda x: x * 2)
    assert plain[0].max() > 1.0
    with pytest.raises(IndexError):
        ds[300]
    with pytest.raises(ValueError):
        SyntheticScenes(5, label="colour")
    loader = torch.utils.data.DataLoader(ds, batch_size=64)
    x, y = next(iter(loader))
    assert x.shape == (64, 3, 64, 64) and y.shape == (64,)


def test_write_image_folder_round_trip(tmp_path):
    from PIL import Image

    folder = write_image_folder(tmp_path / "scenes", 6, seed=8)
    ref = make_scenes(6, seed=8)
    with open(folder / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == [f"{i:05d}.png" for i in range(6)]
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(np.asarray(Image.open(folder / row["file"])), ref.images[i])
        assert {f: row[f] for f in FAMILIES} == ref.attributes[i]
        assert row["caption"] == ref.captions[i]


def test_generation_is_fast():
    make_scenes(10)
    t = time.perf_counter()
    make_scenes(1000, seed=11)
    assert time.perf_counter() - t < 5.0


def test_family_prompts_are_the_zero_shot_prompts_of_each_value():
    from captum_clipspan.toy.scenes import ATTRIBUTES, family_prompts, zero_shot_prompts

    prompts = family_prompts("size")
    assert list(prompts) == list(ATTRIBUTES["size"])
    assert prompts["small"] == zero_shot_prompts("size", "small")
    assert list(family_prompts("shape", ["ring", "circle"])) == ["ring", "circle"]


# Splits: held out by construction -------------------------------------------------------------

def _digest(images: np.ndarray) -> str:
    return hashlib.sha256(images.tobytes()).hexdigest()[:16]


def test_train_split_is_the_stream_the_shipped_toys_were_trained_on():
    # Digests of make_scenes(64, seed=0, start=step * 64) before splits existed: the batches
    # of training steps 0 and 4799 of scripts/train_toy_clip.py (and the spurious toy's 100).
    assert _digest(make_scenes(64, seed=0, split="train").images) == "b146f09f9ae75ae4"
    assert _digest(make_scenes(64, seed=0, start=64 * 4799).images) == "bd9785a3dd640b3b"
    cued = make_scenes(64, seed=0, start=6400, split="train", spurious=SpuriousCue(p=0.95))
    assert _digest(cued.images) == "ab84db4aa151e374"


def test_held_out_scene_ids_never_meet_the_training_ids():
    train_stream, train = scene_ids(20000 * 64, seed=0, split="train")  # every step ever run
    for split in HELD_OUT_SPLITS:
        for seed in (0, 1, 2024, 2**29 - 1):
            stream, ids = scene_ids(1000, seed=seed, split=split)
            assert stream == train_stream  # one stream: equal random numbers need equal IDs
            assert ids.min() > train.max() and ids.min() >= 2**62
    _, validation = scene_ids(10, seed=2**29 - 1, start=2**32 - 10, split="validation")
    _, test = scene_ids(10, seed=0, split="test")
    assert validation.max() < test.min()
    _, last = scene_ids(1, seed=2**29 - 1, start=2**32 - 1, split="test")
    assert last[0] == 2**63 - 1  # the last int64: no wrap-around


def test_held_out_scenes_differ_from_training_scenes_and_repeat():
    train = make_scenes(200, seed=0)
    test = make_scenes(200, seed=0, split="test")
    validation = make_scenes(200, seed=0, split="validation")
    assert test.split == "test" and train.split == "train"
    assert np.array_equal(test.images, make_scenes(200, seed=0, split="test").images)
    digests = {_digest(image) for image in train.images}
    assert not digests & {_digest(image) for image in test.images}
    assert not digests & {_digest(image) for image in validation.images}
    assert np.array_equal(make_scenes(50, seed=3, start=50, split="test").images,
                          make_scenes(100, seed=3, split="test").images[50:])


def test_evaluations_refuse_the_training_split():
    with pytest.raises(ValueError, match="trained on"):
        held_out("train")
    with pytest.raises(ValueError, match="unknown split"):
        held_out("val")
    with pytest.raises(ValueError, match="unknown split"):
        make_scenes(2, split="dev")
    with pytest.raises(ValueError, match=r"2\*\*29"):
        make_scenes(2, seed=2**29, split="test")
    with pytest.raises(ValueError, match=r"2\*\*32"):
        make_scenes(2, start=2**32 - 1, split="validation")


def test_dataset_and_folder_carry_the_split(tmp_path):
    ds = SyntheticScenes(5, seed=2, label="shape", split="validation")
    ref = make_scenes(5, seed=2, split="validation")
    assert torch.equal(ds[4][0], ref.tensors()[4]) and ds.scene(4).split == "validation"
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticScenes(5, split="tset")
    folder = write_image_folder(tmp_path / "held", 3, seed=2, split="test")
    with open(folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["caption"] for row in rows] == make_scenes(3, seed=2, split="test").captions


def test_clutter_world_is_the_simple_scene_with_clutter_on_its_background():
    simple = make_scenes(64, seed=3, split="test")
    clutter = make_scenes(64, seed=3, split="test", world="clutter")
    assert clutter.world == "clutter" and simple.world == "simple" and simple.clutter is None
    assert clutter.attributes == simple.attributes and clutter.captions == simple.captions
    np.testing.assert_array_equal(clutter.masks, simple.masks)
    np.testing.assert_array_equal(clutter.object_masks, simple.object_masks)
    # the objects keep every pixel; distractors never touch them
    np.testing.assert_array_equal(clutter.images[clutter.masks], simple.images[simple.masks])
    assert not (clutter.clutter & clutter.masks).any()
    changed = (clutter.images != simple.images).any(-1)
    assert changed[clutter.clutter].all()
    assert not changed[clutter.masks].any()
    # every scene has at least one distractor, painted in an object color
    assert clutter.clutter.any((1, 2)).all()
    palette = {tuple(rgb) for rgb in COLOR_RGB.values()}
    assert {tuple(p) for p in clutter.images[clutter.clutter]} <= palette
    # distractors stay out of the objects' column
    columns = {"left": 0, "center": 1, "right": 2}
    for i, attrs in enumerate(clutter.attributes):
        column = columns[attrs["position"]]
        assert not clutter.clutter[i][:, column * 64 // 3 + 2:(column + 1) * 64 // 3 - 2].any()


def test_clutter_world_everywhere_scenes_are_drawn(tmp_path):
    ds = SyntheticScenes(5, seed=2, split="test", world="clutter")
    direct = make_scenes(5, seed=2, split="test", world="clutter")
    np.testing.assert_array_equal(ds.scene(3).images[0], direct.images[3])
    assert ds.scene(3).clutter.shape == (1, 64, 64)
    folder = write_image_folder(tmp_path / "f", 3, seed=2, split="test", world="clutter")
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(folder / "00001.png")), direct.images[1])
    with pytest.raises(ValueError, match=r"unknown world 'busy'.*'simple', 'clutter'"):
        make_scenes(2, world="busy")
    with pytest.raises(ValueError, match="unknown world"):
        SyntheticScenes(2, world="busy")


def test_colour_alone_cannot_find_the_objects_in_the_clutter_world():
    """The model-free colour-rarity map finds the simple world's objects, not the clutter's."""
    from captum_clipspan.segmentation.controls import color_rarity
    from captum_clipspan.segmentation.metrics import threshold_free_terms

    def colour_score(world: str) -> float:
        scenes = make_scenes(200, seed=5, split="test", world=world)
        maps = color_rarity(scenes.tensors())
        return float(threshold_free_terms(maps, torch.from_numpy(scenes.masks))["top_iou"].mean())

    simple, clutter = colour_score("simple"), colour_score("clutter")
    assert simple > 0.7, simple
    assert clutter < simple - 0.3, (simple, clutter)
