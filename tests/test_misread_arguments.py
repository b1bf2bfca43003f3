"""Arguments are never misread: refused, or converted and said so (issue 20, class 4).

Labels named by class sub-folders are matched to class names by name, never by position; layer
indices never wrap; a string is never split into characters; masks are never stretched and
alpha is never foreground; a precision is honoured or refused; float labels are converted with
a warning, never stored as -1; a figure name is reported with the extension it was written with.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import captum_clipspan as cs
from captum_clipspan.attr.baselines import AttentionRollout, CheferRelevance
from captum_clipspan.cli import main
from captum_clipspan.evaluation import head_accuracy
from captum_clipspan.segmentation import MaskFolder
from captum_clipspan.sources import iterate_batches
from captum_clipspan.text_cache import encode_texts_cached
from captum_clipspan.toy.scenes import make_scenes
from captum_clipspan.validation import resolve_dtype, resolve_precision

SHAPES = ("circle", "square")




@pytest.fixture(scope="module")
def toy():
    return cs.HookedCLIP.from_pretrained("toy")


def _write(root: Path, images: np.ndarray, start: int = 0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(root / f"{start + i:03d}.png")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """``images/circle`` and ``images/square``: sub-folders sorted circle, square."""
    root = tmp_path_factory.mktemp("shapes") / "images"
    for index, shape in enumerate(SHAPES):
        _write(root / shape, make_scenes(6, seed=index, shape=shape).images)
    return root


def _study(toy, data, classnames, **kwargs):
    classifier = cs.ZeroShotClassifier(toy, classnames, templates=["a {}"])
    means = cs.component_means(toy, data, show_progress=False)
    return cs.MeanAblation(toy, means).study(data, classifier, show_progress=False, **kwargs)


def test_folder_labels_are_matched_to_class_names_by_name_not_position(toy, shapes):
    in_order = _study(toy, str(shapes), ["circle", "square"])
    reversed_ = _study(toy, str(shapes), ["square", "circle"])  # the README's order trap
    assert in_order.baseline >= 0.9
    assert reversed_.baseline == in_order.baseline


def test_a_cache_of_a_folder_matches_its_labels_by_name(toy, shapes, tmp_path):
    cache = cs.cache_decomposition(toy, str(shapes), tmp_path / "cache", layers=[-1],
                                   show_progress=False)
    means = cs.ComponentMeans.from_cache(cache)
    accuracies = []
    for names in (["circle", "square"], ["square", "circle"]):
        classifier = cs.ZeroShotClassifier(toy, names, templates=["a {}"])
        study = cs.MeanAblation(toy, means).study(cache, classifier, show_progress=False)
        heads = head_accuracy(cache, classifier)
        accuracies.append((study.baseline, sorted(heads.flatten().tolist())))
    assert accuracies[0] == accuracies[1] and accuracies[0][0] >= 0.9


def test_folders_that_are_not_class_names_are_refused(toy, shapes):
    with pytest.raises(ValueError, match="matched by name"):
        _study(toy, str(shapes), ["a round thing", "a boxy thing"])


def test_explicit_labels_index_the_classifier_and_skip_matching(toy, shapes):
    data = cs.ImageFolder(shapes, toy.preprocess)
    labels = torch.tensor([data.label(i) for i in range(len(data))])
    study = _study(toy, data, ["a round thing", "a boxy thing"], labels=labels)
    assert 0 <= study.baseline <= 1


def test_a_mapping_names_folders_differently_in_the_prompts(toy, shapes):
    mapped = _study(toy, str(shapes), {"square": "square", "circle": "circle"})
    plain = _study(toy, str(shapes), ["circle", "square"])
    assert mapped.baseline == plain.baseline
    classifier = cs.ZeroShotClassifier(toy, {"n001": "circle"}, templates=["a {}"])
    expected = cs.ZeroShotClassifier(toy, ["circle"], templates=["a {}"]).class_embeddings
    assert classifier.classnames == ["n001"]
    assert torch.allclose(classifier.class_embeddings, expected)


def test_nested_folders_take_their_top_level_class(toy, shapes, tmp_path):
    root = tmp_path / "images"
    for shape in SHAPES:
        _write(root / shape / "more", np.asarray([np.asarray(Image.open(p)) for p in
                                                  sorted((shapes / shape).iterdir())[:2]]))
    folder = cs.ImageFolder(root, toy.preprocess)
    assert folder.classes == list(SHAPES)
    assert [folder.label(i) for i in range(len(folder))] == [0, 0, 1, 1]


def test_cli_ablate_reads_classes_by_name_in_any_order(shapes, tmp_path):
    results = []
    for order in (["square", "circle"], ["circle", "square"], ["square=square", "circle"]):
        out = tmp_path / "_".join(order).replace("=", "-")
        assert main(["ablate", str(shapes), "--classes", *order, "--out", str(out)]) == 0
        results.append(json.loads((out / "ablation.json").read_text())["baseline"])
    assert results[0] == results[1] == results[2] >= 0.9


def test_cli_ablate_refuses_classes_that_are_no_subfolder(shapes, tmp_path, capsys):
    assert main(["ablate", str(shapes), "--classes", "square", "disc",
                 "--out", str(tmp_path)]) == 2
    assert "no sub-folder disc" in capsys.readouterr().err


@pytest.mark.parametrize("method", [AttentionRollout, CheferRelevance])
def test_a_start_layer_beyond_the_model_is_refused_not_wrapped(toy, method):
    with pytest.raises(ValueError, match="start_layer 9 is out of range"):
        method(toy, start_layer=9)


def test_one_string_where_a_list_is_meant_is_never_split_into_characters(toy):
    with pytest.raises(TypeError, match=r"\['circle'\]"):
        cs.ZeroShotClassifier(toy, "circle")
    with pytest.raises(TypeError, match="templates"):
        cs.ZeroShotClassifier(toy, ["circle"], templates="a photo of a {}")
    with pytest.raises(TypeError, match="prompts of 'circle'"):
        cs.ZeroShotClassifier.from_prompts(toy, {"circle": "a circle"})
    with pytest.raises(TypeError, match="list of strings"):
        encode_texts_cached(toy, "a circle", use_cache=False, show_progress=False)
    with pytest.raises(ValueError, match="distinct"):
        cs.ZeroShotClassifier(toy, ["circle", "circle"])


def _mask_folder(root: Path, image_size: int, mask: Image.Image) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.new("RGB", (image_size, image_size), "white").save(root / "images" / "a.png")
    mask.save(root / "masks" / "a.png")
    return root


@pytest.mark.parametrize("size", [(32, 32), (64, 32)])
def test_masks_of_another_size_or_aspect_are_refused_not_stretched(tmp_path, size):
    root = _mask_folder(tmp_path, 64, Image.new("L", size, 255))
    with pytest.raises(ValueError, match="must have its image's size"):
        MaskFolder(root)[0]


def test_alpha_is_not_foreground(tmp_path):
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))  # opaque black: background
    mask.paste((255, 255, 255, 255), (0, 0, 16, 64))
    mask.paste((255, 0, 0, 0), (16, 0, 32, 64))  # transparent: background whatever its color
    _, foreground = MaskFolder(_mask_folder(tmp_path, 64, mask))[0]
    assert foreground[:, :16].all() and not foreground[:, 16:].any()


def test_a_precision_is_honoured_or_refused(toy):
    assert cs.HookedCLIP.from_pretrained("toy", precision="bf16").dtype == torch.bfloat16
    assert cs.HookedCLIP.from_pretrained("toy", precision=torch.float16).dtype == torch.float16
    for bad in ["fp33", "int8", 16]:
        with pytest.raises(ValueError, match="precision must be one of"):
            cs.HookedCLIP.from_pretrained("toy", precision=bad)
    assert resolve_precision("pure_bf16") == ("pure_bf16", torch.bfloat16)
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(TypeError, match="dtype"):
        resolve_dtype("float17")


def _labels_of(toy, labels):
    images = torch.zeros(len(labels), 3, *toy.visual.image_size)
    data = torch.utils.data.TensorDataset(images, labels)
    return torch.cat([batch for _, batch in iterate_batches(toy, data, batch_size=2)])


def test_float_labels_are_converted_and_said_not_stored_as_minus_one(toy):
    with pytest.warns(UserWarning, match="float labels converted"):
        assert _labels_of(toy, torch.tensor([0.0, 1.0, 2.0])).tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="fractional"):
        _labels_of(toy, torch.tensor([0.5, 1.0]))
    with pytest.warns(UserWarning, match="unlabeled"):
        assert _labels_of(toy, torch.zeros(2, 4, dtype=torch.long)).tolist() == [-1, -1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _labels_of(toy, torch.tensor([2, 0])).tolist() == [2, 0]


def test_a_figure_name_is_reported_with_the_extension_it_was_written_with(shapes, tmp_path,
                                                                           capsys):
    image = next((shapes / "circle").iterdir())
    argv = ["heatmap", str(image), "--text", "a circle", "--out", str(tmp_path)]
    assert main([*argv, "--name", "map"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'map.png'}"
    assert (tmp_path / "map.png").stat().st_size > 0 and not (tmp_path / "map").exists()
    assert main([*argv, "--name", "map.bmp"]) == 2
    assert "--name 'map.bmp' has the extension '.bmp'" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("batch_size", 0, "batch_size must be at least 1, got 0"),
    ("num_workers", -1, "num_workers must be at least 0, got -1"),
])
def test_a_cache_pass_refuses_bad_sizes_before_any_work(option, value, message, tmp_path):
    clip = cs.HookedCLIP.from_pretrained("toy")
    images = torch.zeros(2, 3, *clip.visual.image_size)
    with pytest.raises(ValueError, match=message):
        cs.cache_decomposition(clip, images, tmp_path / "cache", show_progress=False,
                               **{option: value})
    assert not (tmp_path / "cache").exists()
