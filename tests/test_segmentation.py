"""Zero-shot segmentation: the protocol's scores, heat-map methods, data loaders and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import images_for, small_clip

import captum_clipspan as cs
from captum_clipspan import segmentation as seg
from captum_clipspan.cli import main
from captum_clipspan.toy.segmentation import SceneSegmentation

# --------------------------------------------------------------------------- brute force


def bilinear(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Half-pixel bilinear upsampling, pixel by pixel (PyTorch's align_corners=False)."""
    h, w = grid.shape
    out = np.zeros((height, width))
    for i in range(height):
        for j in range(width):
            y = max((i + 0.5) * h / height - 0.5, 0.0)
            x = max((j + 0.5) * w / width - 0.5, 0.0)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = ((1 - dy) * ((1 - dx) * grid[y0, x0] + dx * grid[y0, x1])
                         + dy * ((1 - dx) * grid[y1, x0] + dx * grid[y1, x1]))
    return out


def brute_ap(scores: list[float], labels: list[bool]) -> float:
    """AP = sum over distinct thresholds of (recall step) x precision, each counted directly."""
    positives = sum(labels)
    ap, last_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        chosen = [lab for s, lab in zip(scores, labels, strict=True) if s >= threshold]
        recall = sum(chosen) / positives
        ap += (recall - last_recall) * sum(chosen) / len(chosen)
        last_recall = recall
    return ap


def brute_normalize(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    up = np.clip(bilinear(grid, height, width), 0, None)
    return (up - up.min()) / (up.max() - up.min())


def brute_scores(maps: np.ndarray, masks: np.ndarray, ap_maps: np.ndarray | None = None
                 ) -> dict[str, float]:
    """The protocol pixel by pixel; AP on ``ap_maps`` (normalized) when given."""
    correct = labeled = 0
    inter, union, aps = [0, 0], [0, 0], []
    for index, (grid, mask) in enumerate(zip(maps, masks, strict=True)):
        up = brute_normalize(grid, *mask.shape)
        fg = up > up.mean()
        for i in range(mask.shape[0]):
            for j in range(mask.shape[1]):
                labeled += 1
                correct += int(fg[i, j] == mask[i, j])
                for cls, (pred, true) in enumerate([(not fg[i, j], not mask[i, j]),
                                                    (fg[i, j], mask[i, j])]):
                    inter[cls] += int(pred and true)
                    union[cls] += int(pred or true)
        if ap_maps is not None:
            up = ap_maps[index]
        values = [1 - v for v in up.ravel()] + list(up.ravel())
        truth = [not t for t in mask.ravel()] + list(mask.ravel())
        aps.append(brute_ap(values, truth))
    return {"pixel_accuracy": correct / labeled,
            "miou": (inter[0] / union[0] + inter[1] / union[1]) / 2, "mean_ap": float(np.mean(aps))}


def test_scores_equal_a_brute_force_computation_on_random_maps():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 4, 4, generator=generator, dtype=torch.float64)  # negatives tie at 0
    masks = torch.rand(5, 16, 8, generator=generator) < 0.3  # dyadic scales: exact weights
    result = seg.scores(maps, masks)
    normalized = seg.normalize_maps(maps, (16, 8)).numpy()
    for grid, mine in zip(maps.numpy(), normalized, strict=True):
        np.testing.assert_allclose(mine, brute_normalize(grid, 16, 8), atol=1e-12, rtol=0)
    # AP ranks the values, and the clamped border rows repeat a grid row up to one ulp, which
    # can split or join ties: AP is brute-forced on the (equal up to 1e-12) normalized maps.
    expected = brute_scores(maps.numpy(), masks.numpy(), ap_maps=normalized)
    assert result["n"] == 5
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


def test_scores_equal_brute_force_exactly_on_full_resolution_maps_with_ties():
    generator = torch.Generator().manual_seed(1)
    maps = torch.randint(-2, 6, (4, 9, 7), generator=generator).double()  # few levels: many ties
    masks = torch.rand(4, 9, 7, generator=generator) < 0.4
    result = seg.scores(maps, masks)
    expected = brute_scores(maps.numpy(), masks.numpy())
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


def test_scores_accept_full_resolution_maps_and_reward_the_right_map():
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[:, 4:10, 5:12] = True
    perfect = seg.scores(masks.double(), masks)
    assert perfect == {"pixel_accuracy": 1.0, "miou": 1.0, "mean_ap": 1.0, "n": 3}
    inverted = seg.scores((~masks).double(), masks)
    assert inverted["pixel_accuracy"] < 0.5 and inverted["miou"] < 0.5
    constant = seg.scores(torch.ones(3, 4, 4), masks)  # no signal: everything background
    assert constant["pixel_accuracy"] == pytest.approx(1 - 42 / 256)


def test_average_precision_handles_ties_like_the_definition():
    scores = torch.tensor([0.9, 0.5, 0.5, 0.5, 0.1, 0.0])
    labels = torch.tensor([True, False, True, True, False, True])
    expected = brute_ap(scores.tolist(), labels.tolist())
    assert seg.average_precision(scores, labels).item() == pytest.approx(expected)
    assert seg.average_precision(scores, torch.zeros(6, dtype=torch.bool)).item() == 0.0


@pytest.mark.parametrize("maps, masks, error", [
    (torch.rand(2, 4, 4), torch.zeros(3, 8, 8, dtype=torch.bool), ValueError),
    (torch.rand(2, 4, 4), torch.zeros(2, 8, 8), TypeError),
    (torch.full((2, 4, 4), float("nan")), torch.zeros(2, 8, 8, dtype=torch.bool), ValueError),
    (np.zeros((2, 4, 4)), torch.zeros(2, 8, 8, dtype=torch.bool), TypeError),
])
def test_scores_refuse_bad_input(maps, masks, error):
    with pytest.raises(error):
        seg.scores(maps, masks)


# --------------------------------------------------------------------------- heat-map methods


@pytest.fixture(scope="module")
def toy():
    return cs.HookedCLIP.from_pretrained("toy")


@pytest.fixture(scope="module")
def scenes(toy):
    data = SceneSegmentation(6, seed=2024, split="test", **seg.for_model(toy))
    images = torch.stack([data[i][0] for i in range(len(data))])
    masks = torch.stack([data[i][1] for i in range(len(data))])
    classes = cs.ZeroShotClassifier.from_prompts(toy, SceneSegmentation.class_prompts())
    return images, masks, classes


def no_hooks(clip: cs.HookedCLIP) -> bool:
    return not any(point._forward_hooks or point._backward_hooks
                   for point in clip.visual.hook_dict.values())


def test_every_method_maps_the_toy_and_the_baselines_differ(toy, scenes):
    images, _, classes = scenes
    maps = {method: seg.heatmaps(toy, images, classes, method=method)
            for method in seg.HEATMAP_METHODS}
    for method, value in maps.items():
        assert value.shape == (6, *toy.visual.grid_size), method
        assert torch.isfinite(value).all() and value.std() > 0, method
    normalized = {m: seg.normalize_maps(v, (8, 8)) for m, v in maps.items()}
    names = list(normalized)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not torch.allclose(normalized[first], normalized[second], atol=1e-3), (
                first, second)
    assert no_hooks(toy)


@pytest.mark.parametrize("variant", ["tok", "avg"])
def test_every_method_runs_on_a_random_open_clip_vit(variant):
    clip = small_clip(variant, torch.float64)
    images = images_for(clip, 3)
    texts = ["a dog", "a cat", "a car"]
    for method in seg.HEATMAP_METHODS:
        maps = seg.heatmaps(clip, images, texts, target=[0, 1, 2], method=method)
        assert maps.shape == (3, *clip.visual.grid_size), method
        assert torch.isfinite(maps).all(), method
    assert no_hooks(clip)


def test_decomposition_map_is_the_chosen_class_minus_the_class_mean(toy, scenes):
    images, _, classes = scenes
    target = torch.tensor([0, 3, 3, 7, 12, 39])
    maps = seg.heatmaps(toy, images, classes, target=target, method="decomposition")
    every = cs.PatchContribution(toy).attribute(images, texts=classes.class_embeddings)
    expected = every[torch.arange(6), target] - every.mean(dim=1)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=1e-4)
    predicted = seg.heatmaps(toy, images, classes, method="decomposition")
    chosen = classes.predict(images, clip=toy)
    torch.testing.assert_close(predicted, every[torch.arange(6), chosen] - every.mean(dim=1),
                               atol=1e-6, rtol=1e-4)


def test_gradcam_is_captum_gradcam_over_the_patch_tokens():
    clip = small_clip("tok", torch.float64)
    images, texts = images_for(clip, 2), clip.encode_text(["a dog", "a cat"])
    maps = seg.heatmaps(clip, images, texts, target=[1, 0], method="gradcam")
    name = f"blocks.{clip.visual.n_layers - 1}.hook_resid_pre"
    saved = {}

    def keep(tokens, hook):
        saved["x"] = tokens

    with clip.visual.hooks(fwd_hooks=[(name, keep)]):
        score = clip(images, texts)[[0, 1], [1, 0]].sum()
        grads = torch.autograd.grad(score, saved["x"])[0][:, 1:]
    weights = grads.mean(dim=1, keepdim=True)  # [B, 1, D]: one weight per channel
    expected = (weights * saved["x"][:, 1:]).sum(-1).clamp(min=0).reshape(2, 4, 4)
    torch.testing.assert_close(maps, expected.float(), atol=1e-6, rtol=1e-4)


def test_raw_attention_is_the_class_row_of_the_last_pattern(toy, scenes):
    images = scenes[0]
    _, cache = toy.visual.run_with_cache(images, names_filter=lambda n: "pattern" in n)
    last = cache[f"blocks.{toy.visual.n_layers - 1}.attn.hook_pattern"]
    maps = seg.heatmaps(toy, images, ["a circle"], method="raw_attention")
    torch.testing.assert_close(maps, last[:, :, 0, 1:].mean(1).reshape(maps.shape))
    rollout = seg.rollout([cache[f"blocks.{i}.attn.hook_pattern"] for i in range(4)])
    torch.testing.assert_close(rollout.sum(-1), torch.ones(6, 65), atol=1e-5, rtol=0)


def test_heatmaps_refuse_bad_input(toy, scenes):
    images, _, classes = scenes
    with pytest.raises(ValueError, match="unknown heat-map method"):
        seg.heatmaps(toy, images, classes, method="lrp")
    with pytest.raises(ValueError, match="one text index per example"):
        seg.heatmaps(toy, images, classes, target=[0, 1])
    with pytest.raises(ValueError, match="0..39"):
        seg.heatmaps(toy, images, classes, target=40)
    with pytest.raises(TypeError, match="texts must be"):
        seg.heatmaps(toy, images, [1, 2])
    with pytest.raises(ValueError, match="unknown hook point"):
        seg.heatmaps(toy, images, classes, method="gradcam", hook_name="blocks.9.nothing")
    assert no_hooks(toy)


def test_topic_segmentation_and_contrastive_maps(toy, scenes):
    images = scenes[0]
    texts = ["a red object", "a blue object", "an object on a striped background"]
    labels = seg.topic_segmentation(toy, images, texts, layer=3, head=3)
    assert labels.shape == (6, 8, 8) and labels.dtype == torch.long and labels.max() < 3
    contrast = seg.contrastive_map(toy, images, "a circle", "a square")
    maps = cs.PatchContribution(toy).attribute(images, texts=["a circle", "a square"])
    torch.testing.assert_close(contrast, maps[:, 0] - maps[:, 1])


def test_the_decomposition_beats_raw_attention_on_held_out_scenes(toy):
    data = SceneSegmentation(48, seed=2024, split="test", **seg.for_model(toy))
    classes = cs.ZeroShotClassifier.from_prompts(toy, SceneSegmentation.class_prompts())
    rows = {row["method"]: row for row in seg.benchmark(
        toy, data, classes, methods=["decomposition", "raw_attention"], batch_size=24)}
    print(seg.markdown_table(list(rows.values())))
    assert rows["decomposition"]["miou"] > rows["raw_attention"]["miou"] + 0.1


# --------------------------------------------------------------------------- data


def write_mat(path, images: list[np.ndarray], masks: list[np.ndarray]) -> None:
    """A file in gtsegs_ijcv.mat's layout: [N, 1] references to [3, W, H] images, and to [1, 1]
    cells of references to [W, H] masks."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as handle:
        refs = handle.create_group("#refs#")
        img = handle.create_dataset("value/img", (len(images), 1), dtype=h5py.ref_dtype)
        gt = handle.create_dataset("value/gt", (len(masks), 1), dtype=h5py.ref_dtype)
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            img[i, 0] = refs.create_dataset(f"img{i}", data=image.transpose(2, 1, 0)).ref
            array = refs.create_dataset(f"gt{i}", data=mask.astype(np.uint8).T)
            cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = array.ref
            gt[i, 0] = cell.ref


def test_the_toy_registers_its_scenes_as_segmentation_data():
    from captum_clipspan import registry
    from captum_clipspan.toy import SceneSegmentation as exported

    assert registry.lookup("dataset", "scenes") is SceneSegmentation
    assert exported is SceneSegmentation
    assert not hasattr(seg, "SceneSegmentation")  # the library does not know the toy


def test_imagenet_segmentation_reads_the_mat_layout(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12, 20, 3), dtype=np.uint8) for _ in range(3)]
    masks = [rng.random((12, 20)) < 0.4 for _ in range(3)]
    write_mat(tmp_path / "gtsegs_ijcv.mat", images, masks)
    data = seg.ImagenetSegmentation(tmp_path / "gtsegs_ijcv.mat")
    assert len(data) == 3
    for i in range(3):
        image, mask = data[i]
        assert image.shape == (3, 12, 20) and mask.dtype == torch.bool
        np.testing.assert_array_equal((image * 255).round().byte().permute(1, 2, 0), images[i])
        np.testing.assert_array_equal(mask.numpy(), masks[i])
    resized = seg.ImagenetSegmentation(tmp_path / "gtsegs_ijcv.mat", size=8)
    assert resized[2][0].shape == (3, 8, 8) and resized[2][1].shape == (8, 8)
    with pytest.raises(IndexError):
        data[3]


def test_imagenet_segmentation_refuses_other_files(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "other.mat", "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="value/img"):
        seg.ImagenetSegmentation(tmp_path / "other.mat")
    with pytest.raises(FileNotFoundError):
        seg.ImagenetSegmentation(tmp_path / "missing.mat")


def test_mask_folder_pairs_images_with_masks(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    mask = np.zeros((10, 14), dtype=np.uint8)
    mask[2:6, 3:9] = 255
    Image.fromarray(np.full((10, 14, 3), 80, dtype=np.uint8)).save(tmp_path / "images" / "a.jpg")
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    image, truth = seg.MaskFolder(tmp_path)[0]
    assert image.shape == (3, 10, 14) and truth.sum() == 24
    Image.fromarray(mask).save(tmp_path / "images" / "b.png")
    with pytest.raises(ValueError, match="no mask"):
        seg.MaskFolder(tmp_path)
    with pytest.raises(ValueError, match="images/ and a masks/"):
        seg.MaskFolder(tmp_path / "images")


# --------------------------------------------------------------------------- command line


def test_segment_benchmark_runs_end_to_end_on_synthetic_scenes(tmp_path, capsys):
    code = main(["segment-benchmark", "synthetic", "--n", "8", "--batch-size", "8",
                 "--method", "decomposition", "rollout", "chefer", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| decomposition |" in printed and "| chefer |" in printed
    rows = (tmp_path / "segmentation.csv").read_text().splitlines()
    assert rows[0] == "method,pixel_accuracy,miou,mean_ap,n" and len(rows) == 4
    assert (tmp_path / "segmentation.md").read_text().startswith("| method |")


def test_segment_benchmark_reads_a_mat_file_with_given_classes(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(2)]
    masks = [rng.random((40, 48)) < 0.5 for _ in range(2)]
    write_mat(tmp_path / "gt.mat", images, masks)
    code = main(["segment-benchmark", str(tmp_path / "gt.mat"), "--classes", "circle", "square",
                 "--method", "gradcam", "--out", str(tmp_path / "out")])
    assert code == 0 and "gradcam" in (tmp_path / "out" / "segmentation.csv").read_text()


def test_segment_benchmark_scores_the_neurons_map_from_saved_reports(tmp_path, capsys):
    from captum_clipspan.toy.segmentation import neuron_reports

    clip = cs.HookedCLIP.from_pretrained("toy")
    paths = []
    for report in neuron_reports(clip, n=24, top_k=8, layers=[1, 2], batch_size=24):
        paths.append(str(tmp_path / f"layer{report.layer}.pt"))
        report.save(paths[-1])
    code = main(["segment-benchmark", "synthetic", "--n", "4", "--method", "decomposition",
                 "--neurons", *paths, "--top-neurons", "20", "--out", str(tmp_path / "out")])
    assert code == 0
    assert "| neurons |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["segment-benchmark", "synthetic", "--n", "2", "--method", "lrp"], "unknown heat-map"),
    (["segment-benchmark", "synthetic", "--n", "2", "--method", "neurons"], "needs --neurons"),
    (["segment-benchmark", "/no/such.mat"], "does not exist"),
])
def test_segment_benchmark_reports_bad_arguments(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- figures, retrieval


def rendered(fig, tmp_path, name="figure.png") -> None:
    fig.savefig(tmp_path / name, dpi=40)
    assert (tmp_path / name).stat().st_size > 0


def test_topic_segmentation_and_contrastive_figures(toy, scenes, tmp_path):
    from captum_clipspan.visualization import plot_contrastive_map, plot_topic_segmentation

    images = scenes[0]
    texts = ["a red object", "a blue object", "an object on a striped background"]
    labels = seg.topic_segmentation(toy, images, texts, layer=3, head=3)
    fig, axes = plot_topic_segmentation(images[0], labels[0], texts, title="L3.H3")
    legend = [t.get_text() for t in axes[1].get_legend().get_texts()]
    assert len(axes) == 2 and len(legend) == len(labels[0].unique())
    rendered(fig, tmp_path, "topics.png")
    with pytest.raises(ValueError, match="text indices in 0..1"):
        plot_topic_segmentation(images[0], torch.full((8, 8), 2), texts[:2])
    contrast = seg.contrastive_map(toy, images, "a circle", "a square")
    fig, axes = plot_contrastive_map(images[0], contrast[0], "a circle", "a square")
    assert len(axes) == 2 and "minus" in axes[1].get_title()
    rendered(fig, tmp_path, "contrast.png")
    with pytest.raises(ValueError, match="one"):
        plot_contrastive_map(images[0], contrast[:2], "a", "b")


@pytest.fixture(scope="module")
def toy_cache(toy, tmp_path_factory):
    from captum_clipspan.toy.scenes import SyntheticScenes

    scenes = SyntheticScenes(40, seed=2024, transform=toy.preprocess, split="test")
    return cs.cache_decomposition(toy, scenes, tmp_path_factory.mktemp("seg") / "cache",
                                  layers=[2, 3], show_progress=False)


def test_nearest_neighbors_within_a_head_leave_the_query_out(toy_cache, tmp_path):
    from captum_clipspan.retrieval import nearest_neighbors
    from captum_clipspan.visualization import plot_nearest_neighbors

    near = nearest_neighbors(toy_cache, layer=3, head=1, query=5, k=4)
    outputs = torch.nn.functional.normalize(
        torch.from_numpy(toy_cache.head(3, 1).astype("float32")), dim=-1)
    similarity = outputs @ outputs[5]
    similarity[5] = -2
    assert near.indices.tolist() == similarity.topk(4).indices.tolist()
    torch.testing.assert_close(near.scores, similarity.topk(4).values)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbors(toy_cache, 3, 1, query=0, k=40)
    pictures = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    fig, axes = plot_nearest_neighbors(pictures[0], pictures[1:], near.scores, title="L3.H1")
    assert len(axes) == 5 and axes[0].get_title() == "query"
    rendered(fig, tmp_path)


def test_head_similarity_matrix_streams_to_the_direct_computation(toy_cache, tmp_path):
    from captum_clipspan.retrieval import head_similarity
    from captum_clipspan.visualization import plot_head_similarity

    sim = head_similarity(toy_cache, chunk=7)
    assert sim.heads == [(layer, head) for layer in (2, 3) for head in range(4)]
    effects = torch.from_numpy(toy_cache.heads[:].astype("float32")).flatten(1, 2)  # [N, K, E]
    centered = torch.nn.functional.normalize(effects - effects.mean(0), dim=-1)
    expected = torch.stack([torch.stack([(centered[:, a] * centered[:, b]).sum(-1).mean()
                                         for b in range(8)]) for a in range(8)])
    torch.testing.assert_close(sim.matrix, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sim.matrix.diagonal(), torch.ones(8), atol=1e-5, rtol=0)
    assert head_similarity(toy_cache, layers=-1).matrix.shape == (4, 4)
    with pytest.raises(ValueError, match="not cached"):
        head_similarity(toy_cache, layers=[0])
    fig, ax = plot_head_similarity(sim.matrix, sim.heads, title="heads")
    assert ax.get_xticklabels()[0].get_text() == "L2.H0"
    rendered(fig, tmp_path)


# --------------------------------------------------------------------------- model-free controls


def test_model_free_controls_follow_the_attribution_contract_and_ignore_the_model():
    from captum_clipspan.segmentation.controls import CenterPrior, ColorRarity

    toy = cs.HookedCLIP.from_pretrained("toy")
    other = small_clip()
    images = SceneSegmentation(4, seed=1, split="validation", **seg.for_model(toy))
    batch = torch.stack([images[i][0] for i in range(4)])
    assert set(seg.methods.MODEL_FREE_METHODS) <= set(seg.HEATMAP_METHODS)
    for cls in (ColorRarity, CenterPrior):
        maps = cls(toy).attribute(batch, texts=["a red circle", "a blue square"], target=[0, 1,
                                                                                           1, 0])
        assert maps.shape == (4, 1, 8, 8)
        every = cls(toy).attribute(batch, texts=["a red circle", "a blue square"])
        assert every.shape == (4, 2, 8, 8) and torch.equal(every[:, :1], maps)
        assert cls(toy).attribute(batch, interpolate=True).shape == (4, 1, 64, 64)
    # the same pixels give the same map whatever the model's weights
    pixels = images_for(other)
    assert torch.equal(ColorRarity(other).attribute(pixels),
                       ColorRarity(other).attribute(pixels * 1.0))
    rare = ColorRarity(toy).attribute(batch, interpolate=True)[:, 0]
    masks = torch.stack([images[i][1] for i in range(4)])
    assert (seg.map_iou(rare, masks) > 0.3).all()  # the toy's objects have rare colors
    prior = CenterPrior(toy).attribute(batch)[0, 0]
    assert prior[3:5, 3:5].min() > prior[0, 0] and torch.equal(prior, prior.flip(0).flip(1))
    with pytest.raises(ValueError, match="bins"):
        ColorRarity(toy, bins=1)


def test_auroc_and_threshold_free_terms_match_brute_force():
    from captum_clipspan.segmentation.metrics import auroc, threshold_free_terms

    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 6, (300,), generator=generator).double()
    labels = torch.rand(300, generator=generator) < 0.3
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    brute = ((pos > neg).double() + 0.5 * (pos == neg).double()).mean()
    assert float(auroc(scores, labels)) == pytest.approx(float(brute))
    assert float(auroc(scores, torch.zeros(300, dtype=torch.bool))) == 0.5
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:8, 4:8] = True
    perfect = threshold_free_terms(masks.double(), masks)
    assert perfect["auroc"].tolist() == [1.0, 1.0] and perfect["top_iou"].tolist() == [1.0, 1.0]
    inverted = threshold_free_terms(-masks.double(), masks)
    assert inverted["auroc"].tolist() == [0.0, 0.0]


def test_benchmark_terms_pool_to_the_benchmark_rows():
    from captum_clipspan.segmentation.benchmarking import benchmark_terms, summarize_terms

    toy = cs.HookedCLIP.from_pretrained("toy")
    data = SceneSegmentation(6, seed=5, split="test", **seg.for_model(toy))
    classes = cs.ZeroShotClassifier.from_prompts(toy, SceneSegmentation.class_prompts())
    methods = ["decomposition", "color_rarity", "center_prior"]
    rows = seg.benchmark(toy, data, classes, methods=methods, batch_size=4)
    terms = benchmark_terms(toy, data, classes, methods=methods, batch_size=4)
    for row in rows:
        summary = summarize_terms(terms[row["method"]])
        assert {k: summary[k] for k in row if k != "method"} == pytest.approx(
            {k: v for k, v in row.items() if k != "method"})
        assert terms[row["method"]]["auroc"].shape == (6,) and 0 <= summary["top_iou"] <= 1


def test_scene_segmentation_refuses_training_scenes():
    with pytest.raises(ValueError, match="trained on"):
        SceneSegmentation(2, split="train")
