"""Plain mistakes get one line naming the argument or file, what was given and what is accepted;
the CLI never prints a traceback for them (issue 20, class 6)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import small_clip
from PIL import Image

import captum_clipspan as cs
from captum_clipspan.cli import main
from captum_clipspan.segmentation import ImagenetSegmentation
from captum_clipspan.sources import iterate_batches
from captum_clipspan.toy.scenes import write_image_folder


@pytest.fixture(scope="module")
def toy():
    return cs.HookedCLIP.from_pretrained("toy")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Scenes, and files that are not what an option wants."""
    root = tmp_path_factory.mktemp("files")
    write_image_folder(root / "scenes", 4, seed=3, split="test")
    (root / "scenes" / "labels.csv").unlink()
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (root / "latin1.txt").write_bytes("caf\xe9\nna\xefve\n".encode("latin-1"))
    (root / "not_a_checkpoint.pt").write_bytes(b"hello")
    (root / "not_hdf5.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    (root / "waterbirds").mkdir()
    (root / "waterbirds" / "metadata.csv").write_bytes(bytes(range(256)))
    masks = root / "masks_data"
    (masks / "images").mkdir(parents=True)
    (masks / "masks").mkdir()
    shutil.copy(root / "scenes" / "00000.png", masks / "images" / "a.png")
    Image.new("L", (64, 64), 255).save(masks / "masks" / "a.png")
    return root


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("argv, message", [
    (["quickstart", "--n", "0"], "--n must be at least 1, got 0"),
    (["quickstart", "--n", "-3"], "--n must be at least 1, got -3"),
    (["demo", "--n", "0"], "--n must be at least 1, got 0"),
    (["heads", "{scenes}", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["heads", "{scenes}", "--num-workers", "-1"], "--num-workers must be at least 0, got -1"),
    (["heads", "{scenes}", "--m", "0"], "--m must be at least 1, got 0"),
    (["retrieve", "{scenes}", "--head", "1.1", "--query", "a", "--k", "0"],
     "--k must be at least 1, got 0"),
    (["cache", "{scenes}", "--nproc", "0"], "--nproc must be at least 1, got 0"),
    (["segment-benchmark", "synthetic", "--n", "0"], "--n must be at least 1, got 0"),
    (["heads", "{scenes}", "--bank", "{root}/binary.txt"], "binary.txt is a binary file"),
    (["heads", "{scenes}", "--bank", "{root}/latin1.txt"], "latin1.txt is not UTF-8 text"),
    (["segment-benchmark", "{root}/masks_data", "--classes", "{root}/binary.txt"],
     "--classes file {root}/binary.txt is a binary file"),
    (["spurious", "{root}/waterbirds", "--concept", "water"],
     "metadata.csv is a binary file"),
    (["segment-benchmark", "{root}/not_hdf5.mat"], "not_hdf5.mat is not an HDF5 file"),
    (["quickstart", "--model", "ViT-B-32", "--pretrained", "{root}/not_a_checkpoint.pt"],
     "not_a_checkpoint.pt is not an open_clip checkpoint of ViT-B-32"),
    (["quickstart", "--model", "ViT-B-32", "--pretrained", "no_such_tag"],
     "'no_such_tag' is neither a tag of ViT-B-32"),
    (["heads", "{scenes}", "--out", "{root}/binary.txt"], "is a file; give a folder"),
])
def test_plain_mistakes_are_one_line_without_traceback(argv, message, files, tmp_path,
                                                       monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fill = {"root": str(files), "scenes": str(files / "scenes")}
    assert main([arg.format(**fill) for arg in argv]) == 2
    assert message.format(**fill) in error_line(capsys)


@pytest.fixture
def damaged(files, tmp_path) -> Path:
    """Two readable scenes, a truncated PNG and one over PIL's pixel limit (lowered here)."""
    folder = tmp_path / "damaged"
    folder.mkdir()
    for name in ["00000.png", "00001.png"]:
        shutil.copy(files / "scenes" / name, folder / name)
    data = (files / "scenes" / "00002.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[:len(data) // 2])
    Image.new("RGB", (300, 300)).save(folder / "huge.png")
    return folder


@pytest.fixture
def small_pixel_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 300x300 > twice this: a bomb


@pytest.mark.parametrize("victim, message", [
    ("truncated.png", "truncated.png cannot be read"),
    ("huge.png", "huge.png is larger than PIL's decompression-bomb limit"),
])
def test_a_truncated_or_oversized_image_is_one_line_or_skipped(damaged, small_pixel_limit,
                                                               tmp_path, capsys, victim,
                                                               message):
    other = {"truncated.png": "huge.png", "huge.png": "truncated.png"}[victim]
    (damaged / other).unlink()
    argv = ["cache", str(damaged), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    line = error_line(capsys)
    assert message in line and "--skip-unreadable" in line
    assert main([*argv, "--skip-unreadable"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"skipping 1 unreadable image(s): {damaged / victim}" in err


def test_an_unreadable_heatmap_image_names_the_file(damaged, small_pixel_limit, tmp_path,
                                                    capsys):
    assert main(["heatmap", str(damaged / "huge.png"), "--text", "a",
                 "--out", str(tmp_path)]) == 2
    assert "huge.png is larger than PIL's decompression-bomb limit" in error_line(capsys)


def test_an_empty_batch_is_refused_naming_it(toy):
    with pytest.raises(ValueError, match=r"empty batch \[0, 3, 64, 64\]"):
        toy.encode_image(torch.zeros(0, 3, 64, 64))
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        next(iterate_batches(toy, torch.zeros(2, 3, 64, 64), batch_size=0))
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        toy.encode_text(["a"], batch_size=0)


def test_non_utf8_text_banks_and_a_non_hdf5_mat_name_the_file(files):
    with pytest.raises(ValueError, match="binary.txt is a binary file"):
        cs.text_bank(files / "binary.txt")
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text \(byte 0xe9"):
        cs.text_bank(str(files / "latin1.txt"))
    with pytest.raises(ValueError, match="metadata.csv is a binary file"):
        cs.WaterbirdsDataset(files / "waterbirds")
    pytest.importorskip("h5py")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        ImagenetSegmentation(files / "not_hdf5.mat")


def test_from_transformers_refuses_odd_inputs_in_one_sentence(tmp_path):
    with pytest.raises(TypeError, match="model_or_repo_id must be .* got None"):
        cs.HookedCLIP.from_transformers(None)
    with pytest.raises(TypeError, match="processor must be a transformers processor"):
        cs.HookedCLIP.from_transformers("openai/clip-vit-base-patch32", processor="openai")
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        cs.HookedCLIP.from_transformers("openai/clip-vit-base-patch32", dtype="float17")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="holds no loadable transformers model") as error:
        cs.HookedCLIP.from_transformers(str(broken))
    assert "Hub" not in str(error.value)


def test_a_dtype_name_is_read_as_the_dtype():
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=2,
                         num_hidden_layers=1, vocab_size=99, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=2,
                           num_hidden_layers=1, image_size=32, patch_size=8),
        projection_dim=16)
    model = transformers.CLIPModel(config).eval()
    assert cs.HookedCLIP.from_transformers(model, dtype="float64").dtype == torch.float64


def test_means_of_another_model_are_refused_in_both_modes(toy):
    other = small_clip("tok", torch.float32)
    means = cs.component_means(other, torch.randn(2, 3, *other.visual.image_size),
                               show_progress=False)
    for mode in ("direct", "total"):
        with pytest.raises(ValueError, match="do not fit this model"):
            cs.MeanAblation(toy, means, mode=mode)
