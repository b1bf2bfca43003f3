"""The ``clipspan`` command runs end to end on synthetic images with the toy model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from captum_clipspan.cli import main
from captum_clipspan.toy.scenes import write_image_folder


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("scenes") / "flat", 48, seed=7, split="test")


@pytest.fixture(scope="module")
def by_shape(scenes, tmp_path_factory) -> Path:
    """The same scenes in one sub-folder per shape (labels for ``ablate``)."""
    import csv

    root = tmp_path_factory.mktemp("by_shape")
    with open(scenes / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            (root / row["shape"]).mkdir(exist_ok=True)
            shutil.copy(scenes / row["file"], root / row["shape"] / row["file"])
    return root


def test_demo_writes_a_report_with_figures_and_tables(tmp_path, capsys):
    assert main(["demo", "--n", "160", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err  # every step says what it does from the first second
    assert err.index("loading toy") < err.index("rendering 160 synthetic scenes")
    assert "decomposing" in err and "TextSpan" in err and "RANDOM" not in err
    for name in ["report.md", "probe.png", "probe.csv", "textspan.png", "textspan.csv",
                 "ablation_curve.png", "ablation.csv", "heatmap.png", "retrieval.png",
                 "summary.json"]:
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"] == 160 and set(summary["probe"]) >= {"shape", "color"}
    report = (tmp_path / "report.md").read_text()
    assert "## Provenance" in report and "- seed: 0 (160 scenes" in report
    assert "captum_clipspan 0.1.0" in report and "clipspan demo --model toy --n 160" in report


def test_heads_writes_textspan_tables(scenes, tmp_path, capsys):
    argv = ["heads", str(scenes), "--layers", "-1", "--m", "3", "--out", str(tmp_path)]
    assert main(argv) == 0
    table = (tmp_path / "textspan.csv").read_text().splitlines()
    assert table[0].startswith("layer,head,step,text") and len(table) == 1 + 4 * 3
    assert "encoding texts" in capsys.readouterr().err  # the bank's progress bar
    assert main(argv) == 0
    assert "encoding texts" not in capsys.readouterr().err  # read from the disk cache
    assert (tmp_path / "textspan.csv").read_text().splitlines() == table


def test_heatmap_writes_a_png(scenes, tmp_path):
    image = scenes / "00000.png"
    code = main(["heatmap", str(image), "--text", "a red object", "--text", "a circle",
                 "--out", str(tmp_path), "--name", "map.png"])
    assert code == 0 and (tmp_path / "map.png").stat().st_size > 0


def test_ablate_uses_class_subfolders(by_shape, tmp_path):
    import warnings

    with warnings.catch_warnings():  # the toy's own templates: every word is in its vocabulary
        warnings.filterwarnings("error", message=".*vocabulary.*")
        assert main(["ablate", str(by_shape), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "ablation.json").read_text())
    assert 0 <= result["baseline"] <= 1 and len(result["accumulated"]) == 4
    # shape from the toy's templates is far above chance (0.2) on the toy
    assert result["baseline"] >= 0.9
    assert (tmp_path / "ablation_curve.png").stat().st_size > 0


def test_retrieve_lists_top_images(scenes, tmp_path, capsys):
    assert main(["retrieve", str(scenes), "--head", "3.1", "--query", "a red object",
                 "--k", "4", "--out", str(tmp_path)]) == 0
    rows = (tmp_path / "retrieval.csv").read_text().splitlines()
    assert len(rows) == 5 and (tmp_path / "retrieval.png").stat().st_size > 0
    capsys.readouterr()
    image_query = main(["retrieve", str(scenes), "--head", "3.1", "--query",
                        str(scenes / "00003.png"), "--k", "2", "--out", str(tmp_path)])
    assert image_query == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("00003.png")  # itself, cosine 1


@pytest.mark.parametrize("argv, message", [
    (["heads", "/no/such/folder"], "does not exist"),
    (["heatmap", "/no/such.png", "--text", "a"], "does not exist"),
    (["quickstart", "--model", "ViT-Q-99"], "unknown model"),
])
def test_errors_are_one_clear_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default output folders are made in the working folder
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_malformed_head_is_one_clear_line(scenes, tmp_path, capsys):
    argv = ["retrieve", str(scenes), "--head", "three", "--query", "a", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "LAYER.HEAD" in capsys.readouterr().err


def test_ablate_without_class_folders_explains_what_is_needed(scenes, tmp_path, capsys):
    assert main(["ablate", str(scenes), "--out", str(tmp_path)]) == 2
    assert "sub-folder" in capsys.readouterr().err


def test_help_teaches_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and all(c in text for c in ["demo", "heads", "heatmap", "ablate",
                                                            "retrieve"])
    with pytest.raises(SystemExit):
        main(["heads", "--help"])
    assert "--pretrained" in capsys.readouterr().out


@pytest.fixture
def with_corrupt(scenes, tmp_path) -> Path:
    """A few scenes and a corrupt PNG in one folder."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ["00000.png", "00001.png", "00002.png"]:
        shutil.copy(scenes / name, folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


def one_line_error(capsys) -> str:
    """The one error line on stderr (status lines such as "loading ..." may precede it)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_corrupt_image_or_a_folder_given_to_heatmap_is_one_line(with_corrupt, capsys):
    assert main(["heatmap", str(with_corrupt / "broken.png"), "--text", "a"]) == 2
    assert "corrupt" in one_line_error(capsys)
    assert main(["heatmap", str(with_corrupt), "--text", "a"]) == 2
    assert "is a folder" in one_line_error(capsys)


def test_folder_passes_stop_at_a_corrupt_image_or_skip_it(with_corrupt, tmp_path, capsys):
    argv = ["cache", str(with_corrupt), "--layers", "-1", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert "broken.png" in err and "--skip-unreadable" in err
    assert main([*argv, "--num-workers", "1"]) == 2  # re-raised from a loader worker
    err = one_line_error(capsys)
    assert "broken.png" in err and "Original Traceback" not in err
    assert main([*argv, "--skip-unreadable", "--overwrite"]) == 0
    captured = capsys.readouterr()
    assert "skipping 1 unreadable image(s)" in captured.err and "broken.png" in captured.err
    assert "cached 3 images" in captured.out


def test_a_failed_pass_with_workers_releases_its_lock_at_once(with_corrupt, tmp_path):
    """A loader worker forked during a pass shares the lock file; while the error's traceback
    is alive (as in a caller's ``except``), the next pass must still get the lock."""
    import captum_clipspan as cs

    clip = cs.HookedCLIP.from_pretrained("toy")
    with pytest.raises(OSError) as failed:
        cs.cache_decomposition(clip, with_corrupt, tmp_path / "cache", layers=[-1],
                               num_workers=1, show_progress=False)
    (with_corrupt / "broken.png").unlink()
    cache = cs.cache_decomposition(clip, with_corrupt, tmp_path / "cache", layers=[-1],
                                   overwrite=True, show_progress=False)
    assert len(cache) == 3 and failed.value.__traceback__ is not None


def test_only_the_librarys_own_errors_lose_their_traceback(monkeypatch):
    import captum_clipspan as cs

    def buggy(*args, **kwargs):
        return len(5)  # a TypeError from outside captum_clipspan: a bug, not a user error

    monkeypatch.setattr(cs, "decompose", buggy)
    with pytest.raises(TypeError, match="has no len"):
        main(["quickstart"])


def test_random_weights_are_announced_in_the_output_and_the_reports(scenes, tmp_path,
                                                                     monkeypatch, capsys):
    import captum_clipspan as cs

    toy = cs.HookedCLIP.from_pretrained("toy")
    monkeypatch.setattr(cs.HookedCLIP, "from_pretrained", lambda *args, **kwargs: toy)
    code = main(["heads", str(scenes), "--model", "ViT-B-16", "--bank", "toy", "--layers", "-1",
                 "--m", "2", "--out", str(tmp_path / "out")])
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("RANDOM weights") >= 2  # at load and after the output
    assert "RANDOM weights" in (tmp_path / "out" / "WARNING_RANDOM_WEIGHTS.txt").read_text()


def test_a_pretrained_tag_for_the_toy_is_refused(capsys):
    assert main(["quickstart", "--model", "toy", "--pretrained", "laion2b_s34b_b88k"]) == 2
    assert "does not apply to the toy" in one_line_error(capsys)


def test_offline_pretrained_loading_fails_at_once(monkeypatch, capsys):
    import time

    import captum_clipspan.hooked.backends.hub as hub

    monkeypatch.setattr(hub, "_cached_locally", lambda config: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    assert main(["quickstart", "--model", "ViT-B-16", "--pretrained", "laion2b_s34b_b88k"]) == 2
    assert time.perf_counter() - start < 15
    assert "HF_HUB_OFFLINE is set" in one_line_error(capsys)
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(hub.socket, "create_connection", no_network)
    assert hub.hub_unreachable_reason(timeout=0.5).endswith("cannot be reached (OSError, "
                                                            "timeout 0.5 s)")
    with pytest.raises(hub.HubUnreachableError, match="not in the local cache"):
        hub.check_weights_reachable("ViT-B-16", "laion2b_s34b_b88k")
    hub.check_weights_reachable("ViT-B-16", None)  # random weights need no download


def test_heatmap_is_drawn_over_the_models_center_crop(tmp_path, monkeypatch):
    """On a non-square image the background is the crop the model saw, not the squashed image."""
    import numpy as np
    import open_clip
    import torch
    from PIL import Image

    import captum_clipspan as cs
    from captum_clipspan import cli
    from captum_clipspan.cli import common, heatmap

    toy = cs.HookedCLIP.from_pretrained("toy")
    crop = open_clip.image_transform(64, is_train=False)  # resize the short side, center crop
    toy.preprocess = crop
    monkeypatch.setattr(cs.HookedCLIP, "from_pretrained", lambda *args, **kwargs: toy)
    figures = []
    monkeypatch.setattr(heatmap, "save_figure", lambda fig, path: figures.append(fig) or path)
    wide = np.zeros((64, 192, 3), dtype=np.uint8)
    wide[:, :64] = 255  # a white left third, cropped away by the model
    wide[:, 64:128] = np.random.default_rng(0).integers(0, 255, (64, 64, 3))
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert cli.main(["heatmap", str(tmp_path / "wide.png"), "--text", "a circle",
                     "--out", str(tmp_path)]) == 0
    background = np.asarray(figures[0].axes[0].images[0].get_array())  # Captum's gray, 0..255
    seen = common.open_rgb(tmp_path / "wide.png")
    expected = np.asarray(seen.crop((64, 0, 128, 64)), dtype=np.float64).mean(axis=2)
    np.testing.assert_allclose(background, expected, atol=1.0)  # Captum rounds to integers
    batch = toy.preprocess_images([seen])[0]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN)[:, None, None]
    std = torch.tensor(open_clip.OPENAI_DATASET_STD)[:, None, None]
    torch.testing.assert_close(cs.visualization.model_view(crop, seen), batch * std + mean,
                               atol=1e-6, rtol=0)
    assert "as the model saw it" in figures[0].get_suptitle()


def test_every_option_is_documented_and_none_is_idle(capsys):
    import argparse

    from captum_clipspan.cli import build_parser

    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"clipspan {name} {action.option_strings or action.dest}"
    options = {name: {o for a in sub._actions if a.help != argparse.SUPPRESS
                      for o in a.option_strings} for name, sub in commands.choices.items()}
    assert "--batch-size" not in options["heatmap"]  # one image: no batches
    assert not {"--batch-size", "--out", "--batch"} & options["quickstart"]  # writes nothing
    assert all("--batch" not in opts for opts in options.values())  # one name: --batch-size
    assert main(["quickstart", "--batch", "3"]) == 0  # the old spelling still works
    assert "3 random images" in capsys.readouterr().out
