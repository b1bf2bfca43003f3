"""What a newcomer tripped on (issue 21, section 4), each checked as they met it."""

from __future__ import annotations

import argparse
import time
import warnings
from importlib import metadata

import numpy as np
import pytest
import torch
from conftest import small_clip

import captum_clipspan as cs
from captum_clipspan.attr.patches import contrast_maps
from captum_clipspan.cli import main
from captum_clipspan.toy.scenes import make_scenes, write_image_folder
from captum_clipspan.visualization import plot_head_grid, plot_patch_maps, plot_textspan


@pytest.fixture(scope="module")
def toy():
    return cs.HookedCLIP.from_pretrained("toy")


@pytest.fixture(scope="module")
def scene_images(toy):
    scenes = make_scenes(4, seed=1)
    return scenes, torch.stack([toy.preprocess(image) for image in scenes.tensors()])


# ------------------------------------------------------------ heat maps that look alike


def test_contrast_subtracts_the_texts_mean_or_a_reference_text():
    maps = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    mean = contrast_maps(maps)
    assert torch.allclose(mean.sum(dim=1), torch.zeros(2, 4, 4), atol=1e-6)
    assert torch.allclose(mean[:, 0] - mean[:, 1], maps[:, 0] - maps[:, 1], atol=1e-6)
    against_last = contrast_maps(maps, -1)
    assert torch.equal(against_last[:, 2], torch.zeros(2, 4, 4))
    assert torch.allclose(against_last[:, 0], maps[:, 0] - maps[:, 2])
    with pytest.raises(ValueError, match="at least two texts"):
        contrast_maps(maps[:, :1])
    with pytest.raises(ValueError, match="no text index"):
        contrast_maps(maps, 3)
    with pytest.raises(ValueError, match="'mean' or the index"):
        contrast_maps(maps, "median")


def test_raw_maps_of_different_texts_look_alike_and_the_contrast_separates_them(toy):
    """The newcomer's case: cyan squares, "a square" against "a circle"."""
    scenes = make_scenes(4, seed=0, shape="square", color="cyan")
    images = torch.stack([toy.preprocess(image) for image in scenes.tensors()])
    texts = ["a square", "a circle"]
    raw = cs.PatchContribution(toy).attribute(images, texts=texts)
    apart = cs.PatchContribution(toy).attribute(images, texts=texts, contrast="mean")
    assert torch.allclose(apart, contrast_maps(raw), atol=1e-6)

    def correlation(maps):  # of the two texts' maps, per image
        return torch.stack([torch.corrcoef(m.flatten(1))[0, 1] for m in maps])

    assert correlation(raw).mean() > 0.7  # what the newcomer saw: one map twice
    assert (correlation(apart) < 0).all()  # where one text wins, the other loses


def test_contrast_needs_several_texts_and_no_target(toy, scene_images):
    _, images = scene_images
    maps = cs.PatchContribution(toy)
    with pytest.raises(ValueError, match="several texts"):
        maps.attribute(images, texts=["a circle", "a square"], target=[0] * 4, contrast="mean")
    with pytest.raises(ValueError, match="at least two texts"):
        maps.attribute(images, texts="a circle", contrast="mean")


def test_patch_maps_share_one_colour_scale_and_say_so():
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    strong = torch.rand(4, 4, generator=torch.Generator().manual_seed(1)) + 0.5
    maps = torch.stack([strong, 0.1 * strong])
    fig, axes = plot_patch_maps(image, maps, titles=["strong", "weak"])
    peaks = [np.abs(np.asarray(ax.images[1].get_array())).max() for ax in axes]
    assert peaks[1] == pytest.approx(0.1 * peaks[0], rel=0.05)
    assert "one scale for all maps" in fig.axes[-1].get_ylabel()
    fig, axes = plot_patch_maps(image, maps, scale="map", colorbar_label="what is drawn")
    peaks = [np.abs(np.asarray(ax.images[1].get_array())).max() for ax in axes]
    assert peaks[1] == pytest.approx(peaks[0])  # Captum's own per-map scale: they look alike
    assert fig.axes[-1].get_ylabel().replace("\n", " ") == "what is drawn (scaled per map)"
    with pytest.raises(ValueError, match="scale must be one of"):
        plot_patch_maps(image, maps, scale="global")


@pytest.fixture()
def captured_figures(monkeypatch):
    from captum_clipspan.cli import heatmap

    figures = []
    monkeypatch.setattr(heatmap, "save_figure", lambda fig, path: figures.append(fig) or path)
    return figures


def test_heatmap_command_contrasts_several_texts_by_default_and_says_so(
        tmp_path, captured_figures):
    image = write_image_folder(tmp_path / "scenes", 1, seed=3) / "00000.png"
    base = ["heatmap", str(image), "--text", "a square", "--text", "a circle",
            "--out", str(tmp_path)]
    assert main(base) == 0
    assert "minus the mean over the texts" in captured_figures[-1].axes[-1].get_ylabel()
    assert main([*base, "--contrast", "none"]) == 0
    assert "minus" not in captured_figures[-1].axes[-1].get_ylabel()
    assert main([*base, "--contrast", "an object"]) == 0
    assert "minus that of 'an object'" in captured_figures[-1].axes[-1].get_ylabel().replace(
        "\n", " ")
    assert len(captured_figures[-1].axes) == 3  # two maps and the colorbar: no reference panel


def test_heatmap_contrast_of_one_text_fails_before_the_model_loads(tmp_path, capsys):
    image = write_image_folder(tmp_path / "scenes", 1, seed=3) / "00000.png"
    assert main(["heatmap", str(image), "--text", "a square", "--contrast", "mean",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--contrast mean compares several texts" in err and "loading" not in err


# ------------------------------------------------------------ progress and the text cache


def test_textspan_fit_shows_the_bank_encoding_and_reuses_the_cli_cache(
        toy, scene_images, tmp_path, capsys, monkeypatch):
    _, images = scene_images
    cache = cs.cache_decomposition(toy, images, tmp_path / "cache", layers=[-1],
                                   show_progress=False)
    bank = cs.text_bank("toy")
    cs.TextSpan(toy, bank=bank).fit(cache, m=2)
    err = capsys.readouterr().err
    assert err.index("encoding texts") < err.index("TextSpan")  # its own bar, before the heads
    monkeypatch.setattr(type(toy), "encode_text", lambda *args, **kwargs: pytest.fail(
        "the bank was encoded again"))
    report = cs.TextSpan(toy, bank=bank).fit(cache, m=2)
    assert len(report) == toy.visual.n_heads
    assert "encoding texts" not in capsys.readouterr().err


# ------------------------------------------------------------ tokenizers that wait on the Hub


@pytest.fixture()
def hub_down(monkeypatch):
    from captum_clipspan.hooked.backends import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_tokenizer_cached", lambda repo: False)


def test_a_hub_tokenizer_fails_at_once_offline_naming_what_to_pass(hub_down):
    from captum_clipspan.hooked.backends.hub import HubUnreachableError

    model = small_clip("tok").model  # open_clip's SigLIP names a Hugging Face tokenizer
    clip = cs.HookedCLIP.from_open_clip(model, model_name="ViT-B-16-SigLIP")
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match=r"timm/ViT-B-16-SigLIP.*tokenizer=") as error:
        clip.encode_text(["a dog"])
    assert time.monotonic() - start < 5 and "HF_HUB_OFFLINE" in str(error.value)


def test_quickstart_with_a_hub_tokenizer_fails_before_loading(hub_down, capsys):
    start = time.monotonic()
    assert main(["quickstart", "--model", "ViT-B-16-SigLIP"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - start < 10 and "loading" not in err
    assert "--model ViT-B-16-SigLIP reads texts with the tokenizer" in err


# ------------------------------------------------------------ figures for real models


class _Span:
    def __init__(self, seed: int) -> None:
        self.texts = [f"text {seed}.{i}" for i in range(10)]
        self.variance_explained = torch.linspace(0.05, 0.2 + seed / 1000, 10)


def test_textspan_figure_of_144_heads_stays_readable():
    spans = {(layer, head): _Span(12 * layer + head) for layer in range(12) for head in range(12)}
    fig, axes = plot_textspan(spans, max_texts=10)
    assert len(axes) == 12
    assert [ax.get_title() for ax in axes[:2]] == ["L11.H11", "L11.H10"]  # most variance first
    assert "12 of 144 heads" in fig.get_suptitle()
    width, height = fig.get_size_inches() * 120  # the CLI's dpi
    assert height < 3000 and width < 2500
    fig, axes = plot_textspan(spans, heads=[(0, 0), (3, 1)])
    assert [ax.get_title() for ax in axes] == ["L0.H0", "L3.H1"]
    with pytest.raises(KeyError, match=r"\(12, 0\)"):
        plot_textspan(spans, heads=[(12, 0)])


def _overlapping_texts(fig, ax) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in ax.texts]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_annotated_head_grid_of_144_heads_never_overprints():
    from matplotlib.figure import Figure

    scores = np.random.default_rng(0).uniform(size=(12, 12))
    fig, ax = plot_head_grid(scores, annotate=True)
    assert len(ax.texts) == 144 and not _overlapping_texts(fig, ax)
    panel = Figure(figsize=(3.4, 3), layout="constrained")  # the demo's probe panel
    _, ax = plot_head_grid(scores, annotate=True, ax=panel.subplots(), title="shape")
    assert not ax.texts or not _overlapping_texts(panel, ax)
    if not ax.texts:
        assert "read them on the colorbar" in ax.get_title()


# ------------------------------------------------------------ checks before expensive work


@pytest.fixture()
def no_cache_pass(monkeypatch):
    from captum_clipspan.cli import heads

    monkeypatch.setattr(heads, "build_cache", lambda *args, **kwargs: pytest.fail(
        "the cache pass ran before the options were checked"))


@pytest.mark.parametrize(("options", "message"), [
    (["--m", "100000"], "--m 100000 is more texts than the bank 'toy' holds"),
    (["--bank", "nosuchbank"], "--bank 'nosuchbank': unknown text bank"),
])
def test_heads_checks_its_options_before_the_cache_pass(options, message, no_cache_pass,
                                                        tmp_path, capsys):
    folder = write_image_folder(tmp_path / "scenes", 2, seed=0)
    assert main(["heads", str(folder), "--out", str(tmp_path), *options]) == 2
    err = capsys.readouterr().err
    assert message in err and "loading" not in err


def test_errors_name_command_line_flags_not_python_arguments():
    from captum_clipspan.cache.format import REBUILD
    from captum_clipspan.cli.errors import error_line

    error = ValueError(f"the cache in c/ was built from other images; {REBUILD}")
    with_flag = error_line(error, argparse.Namespace(overwrite=False))
    assert "pass --overwrite to rebuild the cache" in with_flag and "=True" not in with_flag
    without = error_line(error, argparse.Namespace())
    assert "delete that folder or give a new one (--cache" in without and "=True" not in without


# ------------------------------------------------------------ the toy tokenizer and report.md


def test_toy_tokenizer_warns_about_words_outside_its_vocabulary(toy):
    with pytest.warns(UserWarning, match=r"'dog', 'sofa' are not among them"):
        toy.encode_text(["a dog on a sofa", "a red circle"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        toy.encode_text(cs.text_bank("toy"))


def test_report_provenance_records_command_seed_and_versions(tmp_path):
    from captum_clipspan.demo import _command, provenance_lines

    lines = "\n".join(provenance_lines("clipspan demo --n 5", 3, 5, "toy"))
    assert "`clipspan demo --n 5`" in lines and "seed: 3" in lines
    assert f"captum_clipspan {cs.__version__}" in lines
    assert f"torch {metadata.version('torch')}" in lines
    equivalent = _command(None, tmp_path, 5, 3, 64, "toy")
    assert equivalent.startswith("clipspan demo --model toy --n 5 --seed 3")

