"""The embedded toy model's heads specialize in the attributes planted in the synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import captum_clipspan as cs
from captum_clipspan.segmentation import map_iou
from captum_clipspan.toy import toy_bank
from captum_clipspan.toy.probes import family_classifier, probe_heads
from captum_clipspan.toy.scenes import ATTRIBUTES, SyntheticScenes, make_scenes

N_SCENES = 600
SEED = 2024  # of the test split, held out from the toy's training by construction


@pytest.fixture(scope="module")
def toy():
    return cs.HookedCLIP.from_pretrained("toy")


@pytest.fixture(scope="module")
def probe(toy, tmp_path_factory):
    scenes = SyntheticScenes(N_SCENES, seed=SEED, transform=toy.preprocess, split="test")
    cache = cs.cache_decomposition(toy, scenes, tmp_path_factory.mktemp("toy") / "cache",
                                   show_progress=False)
    attributes = [scenes.attributes(i) for i in range(N_SCENES)]
    labels = {f: np.array([ATTRIBUTES[f].index(a[f]) for a in attributes]) for f in ATTRIBUTES}
    return cache, labels, probe_heads(toy, cache, labels)


def leaders(probes, layers):
    """family -> (layer, head, accuracy) of the head that classifies it best alone."""
    result = {}
    for family, probe in probes.items():
        row, head = np.unravel_index(probe["heads"].argmax().item(), probe["heads"].shape)
        result[family] = (layers[row], int(head), probe["heads"].max().item())
    return result


def test_two_families_are_each_led_by_a_different_specialized_head(probe):
    cache, _, probes = probe
    best = leaders(probes, cache.layers)
    specialized = {f: lead for f, lead in best.items()
                   if lead[2] >= 1 / len(ATTRIBUTES[f]) + 0.4}
    heads = {lead[:2] for lead in specialized.values()}
    print({f: f"L{l}.H{h} {a:.2f}" for f, (l, h, a) in best.items()})
    assert len(specialized) >= 2 and len(heads) >= 2, best


def test_textspan_names_an_attribute_that_each_leading_head_carries(toy, probe):
    """Two independent readings of a head agree: for every head that leads a family in the probe,
    TextSpan's first three texts include one of a family the head carries on its own (probe
    accuracy at least chance + 0.3). Most leading heads get it first; the background-color head
    gets background-texture phrases first ("an object on a striped background"), then colors."""
    cache, _, probes = probe
    texts, families = toy_bank()
    report = cs.TextSpan(toy, bank=texts).fit(cache, m=3, show_progress=False)
    leading = {(layer, head) for family, (layer, head, accuracy)
               in leaders(probes, cache.layers).items()
               if accuracy >= 1 / len(ATTRIBUTES[family]) + 0.4}
    for layer, head in sorted(leading):
        row = cache.layers.index(layer)
        carried = {f for f, p in probes.items()
                   if p["heads"][row, head] >= 1 / len(ATTRIBUTES[f]) + 0.3}
        chosen = {families[i] for i in report[(layer, head)].indices.tolist()}
        print(f"L{layer}.H{head} carries {sorted(carried)}: {report[(layer, head)].texts}")
        assert chosen & carried, (layer, head, carried, report[(layer, head)].texts)
    assert len(leading) >= 2


def test_patch_maps_cover_the_named_object_better_than_an_absent_one(toy):
    scenes = make_scenes(96, seed=SEED, split="test")
    images = torch.stack([toy.preprocess(image) for image in scenes.tensors()])
    shapes = ATTRIBUTES["shape"]
    present = [f"a {a['shape']}" for a in scenes.attributes]
    absent = [f"a {shapes[(shapes.index(a['shape']) + 2) % len(shapes)]}"
              for a in scenes.attributes]
    texts = sorted(set(present + absent))
    maps = cs.PatchContribution(toy).attribute(images, texts=texts, interpolate=True)
    index = torch.arange(len(images))
    masks = torch.from_numpy(scenes.masks)
    iou_present = map_iou(maps[index, [texts.index(t) for t in present]], masks)
    iou_absent = map_iou(maps[index, [texts.index(t) for t in absent]], masks)
    print(f"mean IoU: named object {iou_present.mean():.3f}, absent {iou_absent.mean():.3f}")
    assert iou_present.mean() > iou_absent.mean() + 0.05


def test_family_classifiers_use_the_scenes_prompts(toy):
    classifier = family_classifier(toy, "color")
    assert classifier.class_embeddings.shape == (len(ATTRIBUTES["color"]), toy.embed_dim)
