"""Zero-shot segmentation from neurons: :class:`NeuronActivationMap` and the ``"neurons"``
heat-map method, on the toy with the neuron lens fitted on reference scenes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from captum.attr import Attribution, NoiseTunnel

import captum_clipspan as cs
from captum_clipspan import segmentation as seg
from captum_clipspan.attr.neurons import NeuronActivationMap, neuron_maps, select_neurons
from captum_clipspan.toy.segmentation import SceneSegmentation, neuron_reports

TOP = 7


@pytest.fixture(scope="module")
def toy():
    return cs.HookedCLIP.from_pretrained("toy")


@pytest.fixture(scope="module")
def reports(toy):
    # Reference scenes of seed 7: apart from training (0) and evaluation (2024).
    return neuron_reports(toy, n=120, seed=7, top_k=30)


@pytest.fixture(scope="module")
def scenes(toy):
    data = SceneSegmentation(48, seed=2024, **seg.for_model(toy))
    classes = cs.ZeroShotClassifier.from_prompts(toy, SceneSegmentation.class_prompts())
    return data, classes


def images_of(data: SceneSegmentation, count: int) -> torch.Tensor:
    return torch.stack([data[i][0] for i in range(count)])


def no_hooks(clip: cs.HookedCLIP) -> bool:
    return not any(point._forward_hooks or point._backward_hooks
                   for point in clip.visual.hook_dict.values())


def random_components(reports: list, seed: int = 0) -> list:
    """The reports with random directions: the selection no longer depends on the text."""
    generator = torch.Generator().manual_seed(seed)
    return [dataclasses.replace(report, component=torch.randn(report.component.shape,
                                                              generator=generator))
            for report in reports]


def hand_maps(clip: cs.HookedCLIP, reports: list, images: torch.Tensor, texts: torch.Tensor,
              top: int) -> np.ndarray:
    """``[B, T, g, g]`` neuron by neuron: rank every (layer, neuron) by |component . text|, keep
    the ``top`` first and average their hook_post values over the patch tokens."""
    _, cache = clip.visual.run_with_cache(images, names_filter=lambda n: n.endswith("hook_post"))
    text_rows = texts.double().numpy()
    grid = clip.visual.grid_size
    out = np.zeros((images.shape[0], len(text_rows), *grid))
    candidates = [(report.layer, int(neuron), report.component[row].double().numpy())
                  for report in reports for row, neuron in enumerate(report.neurons)]
    for t, text in enumerate(text_rows):
        ranked = sorted(candidates, key=lambda c: -abs(float(c[2] @ text)))[:top]
        for layer, neuron, _ in ranked:
            values = cache[f"blocks.{layer}.mlp.hook_post"][:, 1:, neuron].double().numpy()
            out[:, t] += values.reshape(-1, *grid) / top
    return out


# --------------------------------------------------------------------------- the map


def test_map_is_the_mean_activation_of_the_most_aligned_neurons(toy, reports, scenes):
    data, classes = scenes
    images = images_of(data, 3)
    texts = classes.class_embeddings[:5]
    maps = NeuronActivationMap(toy, reports, top_neurons=TOP).attribute(images, texts=texts)
    expected = hand_maps(toy, reports, images, texts, TOP)
    assert maps.shape == (3, 5, *toy.visual.grid_size)
    np.testing.assert_allclose(maps.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    own = NeuronActivationMap(toy, reports, top_neurons=TOP).attribute(
        images, texts=texts, target=[4, 0, 4])
    np.testing.assert_allclose(own[:, 0].double().numpy(), expected[[0, 1, 2], [4, 0, 4]],
                               rtol=1e-5, atol=1e-6)
    assert no_hooks(toy)


def test_the_math_functions_on_small_tensors():
    components = torch.tensor([[1.0, 0.0], [0.0, -3.0], [0.5, 0.5], [-2.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    selected = select_neurons(components, texts, 2)
    assert [sorted(row) for row in selected.tolist()] == [[0, 3], [1, 2]]
    activations = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(2, 3, 4)
    maps = neuron_maps(activations, selected)
    assert maps.shape == (2, 3, 2)
    torch.testing.assert_close(maps[..., 0], activations[..., [0, 3]].mean(-1))
    torch.testing.assert_close(maps[..., 1], activations[..., [1, 2]].mean(-1))


def test_captum_contract_shapes_and_interpolation(toy, reports, scenes):
    data, classes = scenes
    images = images_of(data, 2)
    attribution = NeuronActivationMap(toy, reports, top_neurons=20)
    assert isinstance(attribution, Attribution) and hasattr(NeuronActivationMap.attribute,
                                                            "__wrapped__")
    assert not attribution.has_convergence_delta() and not attribution.multiplies_by_inputs
    every = attribution.attribute(images, texts=classes)
    assert every.shape == (2, len(classes.class_embeddings), *toy.visual.grid_size)
    up = attribution.attribute(images, texts=["a red circle"], target=0, interpolate=True)
    assert up.shape == (2, 1, *images.shape[-2:])
    assert torch.isfinite(every).all() and every.std() > 0
    with pytest.raises(ValueError, match="pass texts="):
        attribution.attribute(images)
    assert no_hooks(toy)


@pytest.mark.parametrize("target", [None, [1, 0]])
def test_noise_tunnel_averages_the_unwrapped_call_over_the_same_noise(toy, reports, scenes,
                                                                      target):
    data, _ = scenes
    images = images_of(data, 2)
    texts = ["a red circle", "a blue square"]
    attribution = NeuronActivationMap(toy, reports, top_neurons=20)
    torch.manual_seed(0)
    smoothed = NoiseTunnel(attribution).attribute(images, nt_samples=3, stdevs=0.1,
                                                  texts=texts, target=target)
    torch.manual_seed(0)
    repeated = images.repeat_interleave(3, dim=0)
    noisy = repeated + torch.normal(0, torch.full_like(repeated, 0.1))
    expanded = None if target is None else [t for t in target for _ in range(3)]
    plain = attribution.attribute(noisy, texts=texts, target=expanded)
    torch.testing.assert_close(smoothed, plain.reshape(2, 3, *plain.shape[1:]).mean(dim=1),
                               atol=1e-5, rtol=1e-4)


def test_bad_reports_and_top_neurons_are_refused(toy, reports):
    total = sum(len(report) for report in reports)
    with pytest.raises(ValueError, match="reports is empty"):
        NeuronActivationMap(toy, [])
    with pytest.raises(TypeError, match="must be NeuronReports"):
        NeuronActivationMap(toy, [torch.zeros(3, 64)])
    with pytest.raises(ValueError, match="another model"):
        NeuronActivationMap(toy, [dataclasses.replace(reports[0], fingerprint="0" * 16)])
    with pytest.raises(ValueError, match="width 32"):
        NeuronActivationMap(toy, [dataclasses.replace(
            reports[0], component=reports[0].component[:, :32])])
    for component in (None, torch.zeros_like(reports[0].component), reports[0].component[:5]):
        with pytest.raises(ValueError, match="no principal components"):
            NeuronActivationMap(toy, [dataclasses.replace(reports[0], component=component)])
    with pytest.raises(ValueError, match="two reports of one layer"):
        NeuronActivationMap(toy, [reports[0], reports[0]])
    for top in (0, total + 1, True, 2.5, "200"):
        with pytest.raises(ValueError, match=f"top_neurons must be an int in 1..{total}"):
            NeuronActivationMap(toy, reports, top_neurons=top)
    assert NeuronActivationMap(toy, reports, top_neurons=total).top_neurons == total
    assert NeuronActivationMap(toy, reports[1]).layers == [reports[1].layer]


# --------------------------------------------------------------------------- segmentation


def test_the_method_is_registered_and_needs_its_reports(toy, reports, scenes):
    data, classes = scenes
    images = images_of(data, 4)
    assert seg.methods.FITTED_HEATMAP_METHODS["neurons"] is NeuronActivationMap
    # Every method of HEATMAP_METHODS runs without options (the default of benchmark and CLI).
    assert "neurons" not in seg.HEATMAP_METHODS
    maps = seg.heatmaps(toy, images, classes, method="neurons", reports=reports)
    assert maps.shape == (4, *toy.visual.grid_size) and maps.dtype == torch.float32
    chosen = classes.predict(images, clip=toy)
    direct = NeuronActivationMap(toy, reports).attribute(images, texts=classes, target=chosen)
    torch.testing.assert_close(maps, direct[:, 0].float())
    with pytest.raises(ValueError, match=r"needs the option\(s\) \['reports'\]"):
        seg.heatmaps(toy, images, classes, method="neurons")
    with pytest.raises(ValueError, match="needs the option"):
        seg.benchmark(toy, data, classes, methods=["neurons"], batch_size=48)


def test_neurons_segment_the_toy_far_above_random_neurons(toy, reports, scenes):
    data, classes = scenes
    rows = {row["method"]: row for row in seg.benchmark(
        toy, data, classes, methods=["raw_attention", "neurons"], batch_size=48,
        options={"neurons": {"reports": reports}})}
    (control,) = seg.benchmark(toy, data, classes, methods=["neurons"], batch_size=48,
                               options={"neurons": {"reports": random_components(reports)}})
    print(seg.markdown_table([*rows.values(), {**control, "method": "random neurons"}]))
    assert set(rows) == {"raw_attention", "neurons"} and rows["neurons"]["n"] == 48
    assert rows["neurons"]["miou"] > control["miou"] + 0.1
    assert rows["neurons"]["pixel_accuracy"] > control["pixel_accuracy"] + 0.1
