"""The neuron lens (second-order paper, Sec. 4): the streamed, two-pass fit equals the authors'
in-memory procedure, resumes and shards without changing the result, refuses bad input; the
sparse decomposition, principal components, ablations and concepts; the toy's ground truth."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import captum_clipspan as cs
from captum_clipspan.neurons import (
    NeuronLens,
    NeuronReport,
    RunningTopK,
    concept_neurons,
    discover_concepts,
    first_components,
    image_concepts,
    orthogonal_matching_pursuit,
    preprocess_bank,
)
from captum_clipspan.toy.scenes import family_prompts, make_scenes

N_IMAGES, LAYER, TOP_K = 48, 1, 9  # an odd k: the authors' sign rule has no ties


@pytest.fixture(scope="module")
def toy():
    return cs.HookedCLIP.from_pretrained("toy")


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(N_IMAGES, seed=2024)


@pytest.fixture(scope="module")
def images(toy, scenes):
    return toy.preprocess_images(list(scenes.images))


@pytest.fixture(scope="module")
def report(toy, images):
    return NeuronLens(toy, LAYER, bank="toy", top_k=TOP_K, n_components=4).fit(
        images, batch_size=16, show_progress=False)


def authors_lens(effects: np.ndarray, top_k: int):
    """``compute_pcas.py`` on an in-memory ``[images, neurons, d]`` array."""
    mean = effects.mean(axis=0)
    components, explained, tops = [], [], []
    for neuron in range(effects.shape[1]):
        current = effects[:, neuron] - mean[neuron]
        important = np.argsort(np.linalg.norm(current, axis=-1))[-top_k:]
        _, s, vh = np.linalg.svd(current[important], full_matrices=False)
        positive = len(np.nonzero(1.0 * ((current[important] @ vh[0]) > 0))[0])
        components.append(vh[0] if positive > top_k // 2 else -vh[0])
        explained.append(s[0] ** 2 / (s ** 2).sum())
        tops.append(important[::-1])
    return mean, np.stack(components), np.array(explained), np.stack(tops)


# The pure pieces --------------------------------------------------------------------------------

def test_running_topk_equals_a_full_sort_in_any_order():
    torch.manual_seed(0)
    vectors = torch.randn(50, 7, 3)
    norms = vectors.norm(dim=-1)
    one = RunningTopK.empty(7, 5, 3)
    for start in range(0, 50, 8):
        rows = torch.arange(start, min(start + 8, 50))
        one.update(norms[rows], vectors[rows], rows)
    reference = norms.T.topk(5, dim=1)
    assert torch.equal(one.indices, reference.indices)
    assert torch.equal(one.vectors, vectors[one.indices, torch.arange(7)[:, None]])
    late, early = RunningTopK.empty(7, 5, 3), RunningTopK.empty(7, 5, 3)
    late.update(norms[30:], vectors[30:], torch.arange(30, 50))
    early.update(norms[:30], vectors[:30], torch.arange(30))
    late.merge(early)
    assert torch.equal(late.indices, one.indices) and torch.equal(late.vectors, one.vectors)


def test_first_components_are_the_authors_signed_svd():
    torch.manual_seed(1)
    rows = torch.randn(6, 10, 5, dtype=torch.float64) + torch.randn(6, 1, 5, dtype=torch.float64)
    components, explained = first_components(rows)
    for neuron in range(6):
        _, s, vh = np.linalg.svd(rows[neuron].numpy(), full_matrices=False)
        positive = int(((rows[neuron].numpy() @ vh[0]) > 0).sum())
        expected = vh[0] if positive > 10 // 2 else -vh[0]
        np.testing.assert_allclose(components[neuron].numpy(), expected, atol=1e-10)
        assert explained[neuron] == pytest.approx(s[0] ** 2 / (s ** 2).sum(), abs=1e-6)


def _reference_omp(signal: np.ndarray, atoms: np.ndarray, steps: int) -> np.ndarray:
    """scikit-learn's ``orthogonal_mp_gram`` (tol=None), written out: pick the atom most
    correlated with the residual, refit every chosen atom by least squares."""
    chosen, residual = [], signal.copy()
    for _ in range(steps):
        chosen.append(int(np.argmax(np.abs(atoms @ residual))))
        coefficients = np.linalg.lstsq(atoms[chosen].T, signal, rcond=None)[0]
        residual = signal - coefficients @ atoms[chosen]
    code = np.zeros(len(atoms))
    code[chosen] = coefficients
    return code


def test_omp_matches_the_reference_algorithm_and_recovers_sparse_codes():
    generator = torch.Generator().manual_seed(2)
    atoms = preprocess_bank(torch.randn(120, 16, generator=generator))
    signals = torch.randn(9, 16, generator=generator, dtype=torch.float64)
    codes = orthogonal_matching_pursuit(signals, atoms, 6, chunk=4)
    for row in range(9):
        expected = _reference_omp(signals[row].numpy(), atoms.numpy(), 6)
        np.testing.assert_allclose(codes[row].numpy(), expected, atol=1e-9)
    incoherent = preprocess_bank(torch.randn(40, 256, generator=generator))
    planted = torch.zeros(3, 40, dtype=torch.float64)
    planted[0, [3, 30]], planted[1, [7, 8, 9]], planted[2, 20] = 1.0, -2.0, 0.5
    recovered = orthogonal_matching_pursuit(planted @ incoherent, incoherent, 3)
    torch.testing.assert_close(recovered, planted, atol=1e-9, rtol=0)


def test_bank_preprocessing_is_the_authors_per_dimension_scaling():
    texts = torch.randn(30, 8)
    atoms = preprocess_bank(texts, coefficient=100.0)
    assert atoms.mean(dim=0).abs().max() < 1e-9
    torch.testing.assert_close(atoms.norm(dim=0), torch.full((8,), 100.0, dtype=torch.float64))


# The lens against the authors' procedure --------------------------------------------------------

def test_streamed_lens_equals_the_authors_in_memory_procedure(toy, images, report):
    effects = cs.second_order(toy, images, LAYER).double().numpy()
    mean, components, explained, tops = authors_lens(effects, TOP_K)
    np.testing.assert_allclose(report.mean.numpy(), mean, atol=1e-7)
    assert np.array_equal(report.top_images.numpy(), tops)
    np.testing.assert_allclose(report.component.numpy(), components, atol=2e-4)
    np.testing.assert_allclose(report.component_variance.numpy(), explained, atol=1e-5)
    centered = np.linalg.norm(effects - mean, axis=-1).mean(0)
    np.testing.assert_allclose(report.centered_norm.numpy(), centered, rtol=1e-5)
    assert len(report) == toy.visual.blocks[LAYER].mlp.d_mlp and report.count == N_IMAGES


def test_report_reads_texts_and_round_trips(report, tmp_path):
    strongest = report.strongest(3)
    assert report.centered_norm[strongest[0]] == report.centered_norm.max()
    texts = report.texts_of(strongest[0])
    assert 1 <= len(texts) <= 4 and all(text in report.texts for text, _ in texts)
    assert f"neuron {strongest[0]}" in report.describe(strongest[0])
    frame = report.to_frame()
    assert list(frame["neuron"][:3]) == strongest and len(frame) == len(report)
    assert ((report.text_variance >= 0) & (report.text_variance <= report.component_variance
                                           + 1e-6)).all()
    report.save(tmp_path / "report.pt")
    loaded = NeuronReport.load(tmp_path / "report.pt")
    assert loaded.texts == report.texts and torch.equal(loaded.component, report.component)
    with pytest.raises(ValueError, match="not in this report"):
        report.describe(10_000)


def test_fit_resumes_after_an_interruption_with_the_same_report(toy, images, report, tmp_path,
                                                                 monkeypatch):
    lens = NeuronLens(toy, LAYER, bank="toy", top_k=TOP_K, n_components=4)
    calls = {"n": 0}
    original = NeuronLens.effects

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # pass 1 has 3 batches: fail in the second batch of pass 2
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(NeuronLens, "effects", failing)
    with pytest.raises(KeyboardInterrupt):
        lens.fit(images, batch_size=16, work_dir=tmp_path, show_progress=False,
                 checkpoint_seconds=0)
    assert (tmp_path / "mean.pt").is_file() and (tmp_path / "top.rank0.pt").is_file()
    monkeypatch.setattr(NeuronLens, "effects", original)
    calls["n"] = 0
    resumed = lens.fit(images, batch_size=16, work_dir=tmp_path, show_progress=False)
    assert torch.equal(resumed.top_images, report.top_images)
    torch.testing.assert_close(resumed.component, report.component)
    torch.testing.assert_close(resumed.mean, report.mean)


def test_fit_refuses_a_folder_of_another_model(toy, images, tmp_path):
    NeuronLens(toy, LAYER, bank="toy", neurons=[0, 1], top_k=4, n_components=2).fit(
        images[:8], batch_size=8, work_dir=tmp_path, show_progress=False)
    other = cs.HookedCLIP.from_pretrained("toy-spurious")
    lens = NeuronLens(other, LAYER, bank="toy", neurons=[0, 1], top_k=4, n_components=2)
    with pytest.raises(ValueError, match="another model"):
        lens.fit(images[:8], batch_size=8, work_dir=tmp_path, show_progress=False)
    report = lens.fit(images[:8], batch_size=8, work_dir=tmp_path, overwrite=True,
                      show_progress=False)
    with pytest.raises(ValueError, match="another model"):
        report.check_model(toy)


def test_bad_input_gets_a_clear_error(toy):
    n_layers, width = toy.visual.n_layers, toy.visual.blocks[0].mlp.d_mlp
    with pytest.raises(ValueError, match="last layer"):
        NeuronLens(toy, n_layers - 1, bank="toy")
    with pytest.raises(ValueError, match="out of range"):
        NeuronLens(toy, 0, bank="toy", neurons=[0, width])
    with pytest.raises(ValueError, match="shape"):
        NeuronLens(toy, 0, bank=["a red object", "a blue object"],
                   text_embeddings=torch.randn(2, toy.embed_dim + 1))
    with pytest.raises(ValueError, match="larger than the bank"):
        NeuronLens(toy, 0, bank=["a red object"], n_components=2)


def _in_process_group(rank, world, store, task, *args):
    """Run ``task(rank, toy, *args)`` in process ``rank`` of a gloo group of ``world``."""
    torch.set_num_threads(1)
    toy = cs.HookedCLIP.from_pretrained("toy")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        task(rank, toy, *args)
    finally:
        dist.destroy_process_group()


def _fit_and_save(rank, toy, images, path, result):
    report = NeuronLens(toy, LAYER, bank="toy", neurons=list(range(32)), top_k=TOP_K,
                        n_components=4).fit(images, batch_size=16, work_dir=path,
                                            show_progress=False)
    if rank == 0:
        report.save(result)


def _fit_other_images(rank, toy, images, path, errors):
    mine = images.flip(0) if rank else images  # process 1 is given other images
    try:
        NeuronLens(toy, LAYER, bank="toy", neurons=list(range(8)), top_k=TOP_K,
                   n_components=4).fit(mine, batch_size=16, work_dir=path, show_progress=False)
    except ValueError as error:
        (errors / f"rank{rank}.txt").write_text(str(error))


def test_processes_given_different_images_are_refused_in_every_process(toy, images, tmp_path):
    errors = tmp_path / "errors"
    errors.mkdir()
    mp.spawn(_in_process_group, args=(2, tmp_path / "store", _fit_other_images, images,
                                      tmp_path / "lens", errors), nprocs=2)
    for rank in (0, 1):
        said = (errors / f"rank{rank}.txt").read_text()
        assert said.startswith("the processes of this 2-process neuron lens pass disagree on "
                               "images (process 1 differs from process 0)"), said
        assert "model" not in said.split("disagree on ")[1].split(";")[0]  # only the images
    assert not list((tmp_path / "lens").glob("*.pt"))


def test_two_processes_give_the_one_process_report(toy, images, report, tmp_path):
    result = tmp_path / "sharded.pt"
    mp.spawn(_in_process_group, args=(2, tmp_path / "store", _fit_and_save, images,
                                      tmp_path / "lens", result), nprocs=2)
    sharded = NeuronReport.load(result)
    assert torch.equal(sharded.top_images, report.top_images[:32])
    torch.testing.assert_close(sharded.mean, report.mean[:32])
    torch.testing.assert_close(sharded.component, report.component[:32])


# Ablations and concepts -------------------------------------------------------------------------

def test_ablation_settings_are_consistent(toy, images, scenes, report):
    classifier = cs.ZeroShotClassifier.from_prompts(toy, family_prompts("shape"))
    data = torch.utils.data.TensorDataset(images, torch.as_tensor(scenes.labels("shape")))
    study = cs.neuron_ablation(toy, LAYER, data, classifier, report=report, batch_size=24,
                               show_progress=False)
    accuracy = study.accuracy
    assert accuracy["baseline"] == pytest.approx(classifier.accuracy(
        toy.encode_image(images), torch.as_tensor(scenes.labels("shape"))))
    assert set(study.to_frame().index) == set(accuracy) and study.count == N_IMAGES
    with pytest.raises(ValueError, match="every neuron"):
        cs.neuron_ablation(toy, LAYER + 1, data, classifier, report=report, show_progress=False)


def test_concepts_group_neurons_by_shared_texts(toy, images, report):
    concepts = discover_concepts(report, max_texts=2)
    assert concepts and all(len(concept.neurons) >= 2 for concept in concepts)
    first = concepts[0]
    assert all(first.text in [text for text, _ in report.texts_of(neuron, 2)]
               for neuron in first.neurons)
    assert all(count >= 2 for count in first.shared)
    word = first.text.split()[-2]
    assert {neuron for neuron, _, _ in concept_neurons(report, word, 2)} >= set(first.neurons)
    scores = image_concepts(report, toy, images[0], count=3)
    assert len(scores) <= 3 and all(text in report.texts for text, _ in scores)



# The toy's ground truth (scripts/neuron_table.py; measured values in the comments) ---------------

def test_toy_second_order_dominates_early_and_texts_name_planted_attributes(toy):
    from captum_clipspan.toy.neurons import neuron_table

    rows = {row["layer"]: row for row in neuron_table(toy, layers=(0, 1, 2), n_images=400)}
    assert rows[0]["ratio"] > 5.0  # 14.3: second-order effects dominate the first MLP
    assert rows[0]["ratio"] > rows[1]["ratio"] > rows[2]["ratio"]  # 14.3 > 1.49 > 0.53
    assert rows[2]["ratio"] < 1.0  # only one attention layer reads MLP 2
    for row in rows.values():
        assert row["top_component_variance"] > 0.85  # 0.999, 0.948, 1.0: nearly rank one
        assert row["top_text_variance"] > 0.75  # 0.929, 0.863, 0.933
        assert row["hit_rate"] >= 0.6  # 1.0, 0.8, 1.0 of the 10 strongest neurons
        assert row["purity"] > 0.6  # 1.0, 0.837, 1.0


# The command ------------------------------------------------------------------------------------

def test_cli_writes_the_report_table_and_figures_on_synthetic_data_and_a_folder(tmp_path, capsys):
    from captum_clipspan.cli import main
    from captum_clipspan.toy.scenes import write_image_folder

    common = ["--layer", "1", "--top-k", "5", "--show", "2", "--neurons", "0", "1", "2", "3"]
    assert main(["neurons", "synthetic", "--n", "24", *common, "--out",
                 str(tmp_path / "synthetic")]) == 0
    folder = write_image_folder(tmp_path / "images", 12, seed=2025)
    assert main(["neurons", str(folder), *common, "--out", str(tmp_path / "folder")]) == 0
    for out in ("synthetic", "folder"):
        for name in ("neurons.pt", "neurons.csv", "neurons.md", "neuron_texts.png",
                     "neuron_grid.png", "neuron_images.png"):
            assert (tmp_path / out / name).is_file(), (out, name)
    report = NeuronReport.load(tmp_path / "folder" / "neurons.pt")
    assert report.count == 12 and len(report.files) == 12 and report.neurons.tolist() == [0, 1,
                                                                                          2, 3]
    assert main(["neurons", "synthetic", "--n", "8", "--layer", "-1", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "last layer" in capsys.readouterr().err
