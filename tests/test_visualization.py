"""Figures of captum_clipspan.visualization: what they draw, that they render, and that they
never touch pyplot's global figure manager."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from captum_clipspan.visualization import (
    plot_ablation_bars,
    plot_ablation_curve,
    plot_best_worst,
    plot_head_grid,
    plot_patch_maps,
    plot_textspan,
    plot_top_images,
)


@dataclass
class FakeSpan:
    """The two fields the TextSpan figure reads from a TextSpanResult."""

    texts: list[str]
    variance_explained: torch.Tensor


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a figure leaked into pyplot's figure manager"


def rendered(fig: Figure, tmp_path, name: str = "figure.png") -> None:
    path = tmp_path / name
    fig.savefig(path, dpi=40)
    assert path.stat().st_size > 0


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same_color(first, second) -> bool:
    return mcolors.to_rgba(first) == mcolors.to_rgba(second)


# --------------------------------------------------------------------------- head grid


def test_head_grid_image_is_the_scores_with_a_symmetric_range(tmp_path):
    scores = torch.randn(4, 6, generator=generator()) + 0.3
    fig, ax = plot_head_grid(scores, layers=[8, 9, 10, 11], title="heads", annotate=True)
    image = ax.images[0]
    np.testing.assert_allclose(image.get_array(), scores.numpy(), rtol=1e-6)
    low, high = image.get_clim()
    assert low == pytest.approx(-high)
    assert high == pytest.approx(scores.abs().max().item())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["8", "9", "10", "11"]
    assert len(ax.texts) == 4 * 6
    assert len(fig.axes) == 2  # heatmap and colorbar
    rendered(fig, tmp_path)


def test_head_grid_uses_the_data_range_when_all_scores_are_on_one_side(tmp_path):
    scores = np.random.default_rng(0).uniform(0.2, 0.9, size=(3, 5))
    fig, ax = plot_head_grid(scores)
    assert ax.images[0].get_clim() == pytest.approx((scores.min(), scores.max()))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
    rendered(fig, tmp_path)


def test_head_grids_share_a_fixed_scale_with_a_labelled_chance_marker(tmp_path):
    scores = np.random.default_rng(0).uniform(0.3, 0.6, size=(2, 3))
    fig, ax = plot_head_grid(scores, vmin=0.0, vmax=1.0, chance=0.25, center=None,
                             colorbar_label="accuracy alone")
    assert ax.images[0].get_clim() == (0.0, 1.0)
    colorbar = fig.axes[1]
    assert colorbar.get_ylabel() == "accuracy alone"
    assert any(np.allclose(line.get_ydata(), 0.25) for line in colorbar.lines)
    assert "chance 0.25" in [t.get_text() for t in colorbar.get_yticklabels()]
    rendered(fig, tmp_path)
    with pytest.raises(ValueError, match="outside the color range"):
        plot_head_grid(scores, vmin=0.0, vmax=1.0, chance=2.0)


def test_head_grid_draws_into_a_given_axes(tmp_path):
    fig = Figure()
    ax = fig.add_subplot()
    returned_fig, returned_ax = plot_head_grid(torch.zeros(2, 2), ax=ax)
    assert returned_fig is fig and returned_ax is ax
    rendered(fig, tmp_path)


@pytest.mark.parametrize("scores", [torch.zeros(12), torch.zeros(2, 12, 12, 3)])
def test_head_grid_rejects_scores_that_are_not_layers_by_heads(scores):
    with pytest.raises(ValueError, match=r"\[L, H\].*got shape"):
        plot_head_grid(scores)


def test_head_grid_rejects_layer_labels_of_the_wrong_length():
    with pytest.raises(ValueError, match="layers must have one entry per row"):
        plot_head_grid(torch.zeros(4, 3), layers=[0, 1])


def test_head_grid_rejects_non_numeric_input():
    with pytest.raises(TypeError, match="scores must be"):
        plot_head_grid("scores")


# --------------------------------------------------------------------------- TextSpan


def test_textspan_panel_lists_the_texts_with_their_cumulative_variance(tmp_path):
    texts = ["a photo of water", "a beach", "an image of a lake at dawn"]
    cumulative = torch.tensor([0.4, 0.55, 0.6])
    fig, ax = plot_textspan(FakeSpan(texts, cumulative), title="L11.H3")
    assert [t.get_text() for t in ax.get_yticklabels()] == texts
    bar_ends = np.array([bar.get_x() + bar.get_width() for bar in ax.patches])
    np.testing.assert_allclose(bar_ends, np.concatenate([[0.0, 0.4, 0.55], cumulative]),
                               atol=1e-6)
    assert ax.get_title() == "L11.H3"
    rendered(fig, tmp_path)


def test_textspan_mapping_draws_one_panel_per_head_in_key_order(tmp_path):
    texts = [f"text {i}" for i in range(8)]
    cumulative = torch.linspace(0.1, 0.8, 8)
    spans = {(11, 3): FakeSpan(texts, cumulative), (10, 0): FakeSpan(texts[::-1], cumulative),
             (9, 7): FakeSpan(texts, cumulative)}
    fig, axes = plot_textspan(spans, max_texts=5, title="TextSpan")
    assert len(axes) == len(fig.axes) == 3
    assert [ax.get_title() for ax in axes] == ["L11.H3", "L10.H0", "L9.H7"]
    assert [t.get_text() for t in axes[1].get_yticklabels()] == texts[::-1][:5]
    rendered(fig, tmp_path)


def test_textspan_rejects_objects_without_texts():
    with pytest.raises(TypeError, match=r"\.texts and \.variance_explained"):
        plot_textspan({(0, 0): object()})
    with pytest.raises(TypeError, match="mapping"):
        plot_textspan(3)


def test_textspan_rejects_variance_of_the_wrong_shape():
    with pytest.raises(ValueError, match="variance_explained must be a 1-D"):
        plot_textspan(FakeSpan(["a", "b"], torch.zeros(2, 1)))
    with pytest.raises(ValueError, match=r"one entry per variance_explained step \(3\), got 2"):
        plot_textspan(FakeSpan(["a", "b"], torch.zeros(3)))


# --------------------------------------------------------------------------- mean ablation


def test_ablation_curve_draws_one_line_per_series_and_per_baseline(tmp_path):
    curves = {"ViT-B-16": torch.linspace(0.7, 0.05, 12), "ViT-L-14": np.linspace(0.8, 0.1, 24)}
    fig, ax = plot_ablation_curve(curves, baseline={"ViT-B-16": 0.7, "ViT-L-14": 0.8})
    assert len(ax.lines) == 4
    np.testing.assert_allclose(ax.lines[0].get_ydata(), curves["ViT-B-16"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(ax.lines[1].get_xdata(), np.arange(24))
    assert ax.lines[2].get_linestyle() == "--"
    assert same_color(ax.lines[2].get_color(), ax.lines[0].get_color())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["ViT-B-16", "ViT-L-14", "ViT-B-16 baseline", "ViT-L-14 baseline"]
    assert ax.get_xlabel() == "l (MSA layers 0..l ablated)"
    assert ax.get_ylabel() == "zero-shot accuracy"
    rendered(fig, tmp_path)


def test_ablation_figures_name_the_task_and_draw_a_chance_line(tmp_path):
    fig, ax = plot_ablation_curve([0.9, 0.7, 0.4, 0.3], baseline=0.9, title="shape (5 classes)",
                                  chance=0.2)
    assert ax.get_title() == "shape (5 classes)"
    chance = ax.lines[-1]
    assert chance.get_linestyle() == ":" and chance.get_ydata()[0] == pytest.approx(0.2)
    assert "chance" in [t.get_text() for t in ax.get_legend().get_texts()]
    rendered(fig, tmp_path, "curve.png")
    fig, ax = plot_ablation_bars({"baseline": 0.9, "MSAs ablated": 0.3}, title="shape",
                                 chance=0.2)
    assert ax.get_title() == "shape" and ax.lines[0].get_ydata()[0] == pytest.approx(0.2)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance"]
    rendered(fig, tmp_path, "bars.png")


def test_ablation_curve_takes_one_sequence_and_a_float_baseline(tmp_path):
    fig, ax = plot_ablation_curve([0.6, 0.6, 0.5, 0.1], baseline=0.6, labels="ViT-B-32",
                                  layers=[8, 9, 10, 11])
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [8, 9, 10, 11])
    assert ax.lines[1].get_ydata()[0] == pytest.approx(0.6)
    rendered(fig, tmp_path)


def test_ablation_curve_rejects_a_matrix():
    with pytest.raises(ValueError, match=r"accumulated\['a'\] must be a 1-D sequence"):
        plot_ablation_curve({"a": torch.zeros(3, 4)})


def test_ablation_curve_rejects_labels_of_the_wrong_count():
    with pytest.raises(ValueError, match="labels must have one entry per curve"):
        plot_ablation_curve({"a": [1.0], "b": [2.0]}, labels=["only one"])


def test_ablation_bars_heights_are_the_values_and_are_printed(tmp_path):
    table = {"baseline": 0.7, "MLPs ablated": 0.68, "MSAs ablated": 0.05}
    fig, ax = plot_ablation_bars(table)
    assert [bar.get_height() for bar in ax.patches] == pytest.approx(list(table.values()))
    assert [t.get_text() for t in ax.texts] == ["0.70", "0.68", "0.05"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(table)
    rendered(fig, tmp_path)


def test_ablation_bars_group_the_columns_of_a_data_frame(tmp_path):
    frame = pd.DataFrame({"ViT-B-16": [0.68, 0.67, 0.04], "ViT-L-14": [0.75, 0.74, 0.06]},
                         index=["baseline", "MLPs ablated", "MSAs ablated"])
    fig, ax = plot_ablation_bars(frame)
    assert len(ax.containers) == 2
    for container, column in zip(ax.containers, frame.columns, strict=True):
        assert [bar.get_height() for bar in container] == pytest.approx(list(frame[column]))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ViT-B-16", "ViT-L-14"]
    rendered(fig, tmp_path)


def test_ablation_bars_reject_non_numeric_scores_and_other_types():
    with pytest.raises(TypeError, match="must hold numbers"):
        plot_ablation_bars({"baseline": "high"})
    with pytest.raises(TypeError, match="mapping setting -> score or a pandas DataFrame"):
        plot_ablation_bars([0.7, 0.1])


# --------------------------------------------------------------------------- images


def test_top_images_shows_each_image_in_unit_range_with_its_score(tmp_path):
    images = torch.randn(7, 3, 16, 16, generator=generator()) * 3  # CLIP-normalized range
    scores = torch.rand(7, generator=generator(1))
    fig, axes = plot_top_images(images, scores=scores, titles=[f"#{i}" for i in range(7)],
                                ncols=3, title="L11.H4")
    assert len(axes) == len(fig.axes) == 7
    shown = axes[0].images[0].get_array()
    assert shown.shape == (16, 16, 3)
    assert shown.min() == pytest.approx(0.0) and shown.max() == pytest.approx(1.0)
    assert axes[2].get_xlabel() == f"{scores[2].item():.3f}"
    assert axes[6].get_title() == "#6"
    rendered(fig, tmp_path)
    fig, axes = plot_top_images(images[:2], scores=scores[:2], score_label="L3.H1 · query")
    assert axes[1].get_xlabel() == f"L3.H1 · query = {scores[1].item():.3f}"


def test_top_images_accepts_channels_last_arrays_and_pil_images(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 1, size=(2, 12, 12, 3))
    fig, axes = plot_top_images(batch)
    np.testing.assert_allclose(axes[1].images[0].get_array(), batch[1])
    pictures = [pil.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)),
                rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)]
    fig, axes = plot_top_images(pictures)
    np.testing.assert_allclose(axes[1].images[0].get_array(), pictures[1] / 255.0)
    rendered(fig, tmp_path)


def test_top_images_rejects_a_single_image_and_mismatched_scores():
    with pytest.raises(ValueError, match=r"\[K, 3, H, W\].*got shape \(3, 8, 8\)"):
        plot_top_images(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"scores must have one entry per image \(2\), got 3"):
        plot_top_images(torch.zeros(2, 3, 8, 8), scores=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"images\[0\] must be an image"):
        plot_top_images([np.zeros((8, 8, 5))])


def test_patch_maps_are_upsampled_to_the_image_and_drawn_once_per_text(tmp_path):
    image = torch.rand(3, 32, 32, generator=generator())
    maps = torch.randn(3, 1, 4, 4, generator=generator(1)) * 1e-4  # small, like direct effects
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig, axes = plot_patch_maps(image, maps, titles=["a dog", "grass", "sky"], ncols=2)
    assert len(axes) == 3 and len(fig.axes) == 4  # the maps and one shared colorbar
    assert [ax.get_title() for ax in axes] == ["a dog", "grass", "sky"]
    gray, heat = axes[0].images
    assert gray.get_array().shape == (32, 32)
    assert heat.get_array().shape == (32, 32)
    rendered(fig, tmp_path)


def test_patch_maps_explain_themselves_and_let_the_image_show(tmp_path):
    image = torch.rand(3, 16, 16, generator=generator())
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3] = 1.0, -0.5
    fig, axes = plot_patch_maps(image, maps, titles=["a dog"], title="scene: a dog on grass")
    assert fig.get_suptitle() == "scene: a dog on grass"
    colorbar = fig.axes[-1]
    assert "similarity" in colorbar.get_ylabel()
    assert [t.get_text() for t in colorbar.get_yticklabels()] == ["− lowers", "0", "+ raises"]
    heat = axes[0].images[1]
    alpha = np.asarray(heat.get_alpha())
    assert alpha.shape == (16, 16)  # opacity follows |map|: clear where the map is zero
    assert alpha.max() == pytest.approx(0.5) and alpha.min() == pytest.approx(0.0)
    fig, axes = plot_patch_maps(image, maps, colorbar=False, fade=False, sign="positive")
    assert len(fig.axes) == 1 and axes[0].images[1].get_alpha() == 0.5
    rendered(fig, tmp_path)


def test_patch_maps_without_values_of_the_sign_show_the_image_and_say_so(tmp_path):
    image = np.random.default_rng(0).uniform(size=(16, 16, 3))
    maps = torch.stack([torch.zeros(4, 4), -torch.ones(4, 4), torch.rand(4, 4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig, axes = plot_patch_maps(image, maps, titles=["zero", "negative", "positive"],
                                    sign="positive")
    assert axes[0].get_title() == "zero\n(map is zero)"
    assert axes[1].get_title() == "negative\n(no positive values)"
    assert axes[2].get_title() == "positive"
    rendered(fig, tmp_path)


def test_patch_maps_reject_bad_shapes_and_options():
    image = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match=r"\[T, 1, h, w\].*got shape \(2, 3, 4, 4\)"):
        plot_patch_maps(image, torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"titles must have one entry per map \(2\), got 1"):
        plot_patch_maps(image, torch.ones(2, 4, 4), titles=["one"])
    with pytest.raises(ValueError, match="sign must be one of"):
        plot_patch_maps(image, torch.ones(1, 4, 4), sign="both")
    with pytest.raises(ValueError, match="cannot show both signs"):
        plot_patch_maps(image, torch.ones(1, 4, 4), method="masked_image")
    with pytest.raises(ValueError, match="NaN"):
        plot_patch_maps(image, torch.full((1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"image must be an image \[3, H, W\]"):
        plot_patch_maps(torch.rand(16, 16, 16), torch.ones(1, 4, 4))


def test_best_worst_colors_best_green_and_worst_red(tmp_path):
    image = torch.rand(3, 28, 28, generator=generator())
    best = torch.randn(2, 7, 7, generator=generator(1))
    worst = torch.randn(7, 7, generator=generator(2))
    fig, axes = plot_best_worst(image, best, worst, ["a dog", "a puppy"], "a car", title="L11.H8")
    assert len(axes) == len(fig.axes) == 4
    assert [ax.get_title() for ax in axes] == ["image", "a dog", "a puppy", "a car"]
    assert same_color(axes[1].title.get_color(), "tab:green")
    assert same_color(axes[3].title.get_color(), "tab:red")
    assert same_color(axes[3].spines["left"].get_edgecolor(), "tab:red")
    rendered(fig, tmp_path)


def test_best_worst_rejects_texts_that_do_not_match_the_maps():
    with pytest.raises(ValueError, match=r"worst_texts must have one entry per worst map \(2\)"):
        plot_best_worst(torch.rand(3, 8, 8), torch.ones(1, 2, 2), torch.ones(2, 2, 2),
                        "best", ["only one"])


def test_grid_figures_draw_into_a_given_subfigure(tmp_path):
    fig = Figure(layout="constrained")
    left, right = fig.subfigures(1, 2)
    _, image_axes = plot_top_images(torch.rand(2, 3, 8, 8), fig=left)
    _, map_axes = plot_patch_maps(torch.rand(3, 8, 8), torch.rand(2, 2, 2), fig=right)
    assert len(fig.axes) == 5  # two images, two maps, their colorbar
    assert image_axes[0].get_figure() is left
    rendered(fig, tmp_path)


def test_ablation_figures_accept_pandas_objects(tmp_path):
    frame = pd.DataFrame({"B-16": [0.7, 0.6, 0.2], "L-14": [0.8, 0.8, 0.5]})
    fig, ax = plot_ablation_curve(frame, baseline=0.75)
    assert len(ax.lines) == 3
    np.testing.assert_allclose(ax.lines[1].get_ydata(), frame["L-14"])
    fig, ax = plot_ablation_bars(pd.Series({"baseline": 0.7, "MSAs ablated": 0.1}))
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([0.7, 0.1])
    rendered(fig, tmp_path)
