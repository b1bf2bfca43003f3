"""``clipspan demo``: the whole pipeline on synthetic scenes with known attributes.

Renders scenes, caches their decomposition, probes every head per attribute family, labels the
heads with TextSpan, runs the mean-ablation study, draws patch heat maps (and scores them against
the ground-truth masks), retrieves images by head, and writes ``report.md`` beside the figures
and the offline explorer (``explorer/index.html``).
"""

from __future__ import annotations

import csv
import json
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attr.ablation import ComponentMeans, MeanAblation
from .attr.patches import PatchContribution
from .attr.textspan import TextSpan
from .cache import cache_decomposition
from .explorer import explore
from .hooked.clip import HookedCLIP
from .retrieval import retrieve
from .segmentation import map_iou
from .sources import ImageFolder
from .toy import toy_bank
from .toy.probes import family_classifier, probe_heads, read_labels
from .toy.scenes import ATTRIBUTES, make_scenes, write_image_folder


def _step(message: str, show_progress: bool) -> None:
    """A status line on stderr for a step of the demo."""
    if show_progress:
        print(f"clipspan demo: {message}", file=sys.stderr, flush=True)


# The packages whose versions decide the report's numbers, recorded in it.
PROVENANCE_PACKAGES = ("captum_clipspan", "torch", "open_clip_torch", "captum", "transformer_lens",
                       "numpy")


def _command(command: str | None, out: Path, n: int, seed: int, batch_size: int,
             model: str | None) -> str:
    """The command that wrote the report: given, this process's ``clipspan`` command line, or
    the equivalent ``clipspan demo`` command."""
    if command:
        return command
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if program == "clipspan" or sys.argv[0].endswith(("captum_clipspan/__main__.py",
                                                      "captum_clipspan/cli/__main__.py")):
        return shlex.join(["clipspan", *sys.argv[1:]])
    return shlex.join(["clipspan", "demo", "--model", model or "toy", "--n", str(n), "--seed",
                       str(seed), "--batch-size", str(batch_size), "--out", str(out)]) + (
        "  (equivalent command; the report was written from Python)")


def provenance_lines(command: str, seed: int, n: int, model: str | None,
                     note: str | None = None) -> list[str]:
    """The report's provenance section: the command, the seed and the package versions.

    Args:
        command: the command line that wrote the report.
        seed: the scenes' seed. ``n``: their number.
        model: the model's name. ``note``: a weights warning, if any.

    Returns:
        Markdown lines.
    """
    versions = []
    for package in PROVENANCE_PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    weights = "random (see the warning above)" if note else "trained"
    return ["## Provenance", "",
            f"- command: `{command}`",
            f"- seed: {seed} ({n} scenes of the test split, which the toy never saw)",
            f"- model: {model or 'model'}, {weights} weights",
            f"- packages: {', '.join(versions)}; Python {platform.python_version()}", ""]


def run_demo(clip: HookedCLIP, out: Path, n: int = 1000, seed: int = 0,
             batch_size: int = 64, note: str | None = None,
             show_progress: bool = True, command: str | None = None) -> Path:
    """Run every step; return the path of ``report.md``.

    Args:
        clip: the model (the toy, or any HookedCLIP).
        out: the output folder.
        n: number of synthetic scenes.
        seed: their seed (in the test split, held out from the toy's training).
        batch_size: images per forward pass.
        note: a warning printed in bold at the top of the report (e.g. random weights).
        show_progress: status lines and progress bars on stderr.
        command: the command line recorded in the report's provenance (default: this process's
            ``clipspan`` command line, else the equivalent ``clipspan demo`` command).
    """
    from .visualization import (
        plot_ablation_bars,
        plot_ablation_curve,
        plot_head_grid,
        plot_patch_maps,
        plot_top_images,
    )

    out = Path(out)
    folder = out / "scenes"
    if not (folder / "labels.csv").is_file():
        _step(f"rendering {n} synthetic scenes into {folder}", show_progress)
        write_image_folder(folder, n, seed=seed, split="test")
    labels = read_labels(folder)
    _step("decomposing every scene into per-head terms (cached)", show_progress)
    cache = cache_decomposition(clip, folder, out / "cache", batch_size=batch_size,
                                show_progress=show_progress)
    lines = [f"# clipspan demo: {clip.model_name or 'model'} on {len(cache)} synthetic scenes",
             ""] + ([f"**{note}**", ""] if note else []) + [
             "Scenes: `scenes/` (PNG files and `labels.csv`).", ""]

    _step("probing every head per attribute family", show_progress)
    probes = probe_heads(clip, cache, labels)
    lines += _probe_section(probes, cache.layers, out, plot_head_grid)

    _step("labelling the heads with TextSpan", show_progress)
    texts, families = toy_bank()
    report = TextSpan(clip, bank=texts).fit(cache, m=5, show_progress=show_progress)
    report.to_frame().to_csv(out / "textspan.csv", index=False)
    fig, _ = report.plot(max_texts=5)
    fig.savefig(out / "textspan.png", dpi=110, bbox_inches="tight")
    lines += ["## TextSpan (5 texts per head, bank: the scenes' attribute phrases)", "",
              "| head | first texts | their families | variance explained |", "|---|---|---|---|"]
    for (layer, head), result in report.results.items():
        owners = [families[i] for i in result.indices.tolist()[:3]]
        lines.append(f"| L{layer}.H{head} | {'; '.join(result.texts[:3])} | "
                     f"{', '.join(owners)} | {result.variance_explained[-1].item():.2f} |")
    lines += ["", "![TextSpan](textspan.png)", ""]

    _step("mean-ablation study (shape classification)", show_progress)
    shape_classifier = family_classifier(clip, "shape")
    study = MeanAblation(clip, ComponentMeans.from_cache(cache)).study(
        cache, shape_classifier, labels=labels["shape"], show_progress=show_progress)
    study.to_frame().to_csv(out / "ablation.csv")
    task = f"shape classification, {len(cache)} scenes (direct effects)"
    chance = 1 / len(ATTRIBUTES["shape"])
    plot_ablation_curve(study.accumulated, baseline=study.baseline, title=task,
                        chance=chance)[0].savefig(out / "ablation_curve.png", dpi=110,
                                                  bbox_inches="tight")
    plot_ablation_bars(study.table(), title=task, chance=chance)[0].savefig(
        out / "ablation_table.png", dpi=110, bbox_inches="tight")
    lines += ["## Mean-ablation (direct effects, shape classification)", "",
              "| setting | accuracy |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in study.to_frame()["accuracy"].items()]
    lines += ["", "![curve](ablation_curve.png) ![table](ablation_table.png)", ""]

    _step("patch heat maps and retrieval", show_progress)
    lines += _heatmap_section(clip, folder, out, plot_patch_maps, seed)

    color_head = np.unravel_index(probes["color"]["heads"].argmax().item(),
                                  probes["color"]["heads"].shape)
    layer, head = cache.layers[color_head[0]], int(color_head[1])
    top = retrieve(cache, layer, head, "a red object", k=8, clip=clip)
    files = ImageFolder(folder, clip.preprocess).files
    images = [_rgb(files[i]) for i in top.indices.tolist()]
    plot_top_images(images, scores=top.scores, title=f"L{layer}.H{head}: 'a red object'",
                    score_label=f"L{layer}.H{head} · text")[0].savefig(
        out / "retrieval.png", dpi=110, bbox_inches="tight")
    reds = sum(labels["color"][i] == ATTRIBUTES["color"].index("red")
               for i in top.indices.tolist())
    lines += [f"## Retrieval by head L{layer}.H{head} (the best color head)", "",
              f"Top 8 images for 'a red object': {reds} of 8 are red.", "",
              "![retrieval](retrieval.png)", ""]

    summary = {
        "images": len(cache),
        "probe": {f: {"model": p["model"], "best_head": _best(p["heads"], cache.layers)}
                  for f, p in probes.items()},
        "ablation": study.table(), "accumulated": study.accumulated,
        "retrieval_red_of_8": int(reds),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    site = explore(cache, report, out / "explorer", clip=clip, classifier=shape_classifier,
                   labels=labels["shape"], show_progress=show_progress)
    lines += ["## Explorer", "", f"Open `{site.relative_to(out)}` in a browser (offline, no "
              "server) to browse every head's texts, top images and patch maps.", ""]
    lines += provenance_lines(_command(command, out, n, seed, batch_size, clip.model_name),
                              seed, n, clip.model_name, note)
    report_path = out / "report.md"
    report_path.write_text("\n".join(lines))
    return report_path


def _best(per_head: torch.Tensor, layers: tuple[int, ...]) -> dict[str, Any]:
    row, head = np.unravel_index(per_head.argmax().item(), per_head.shape)
    return {"head": f"L{layers[row]}.H{head}", "accuracy": float(per_head.max())}


def _probe_section(probes: dict[str, Any], layers: tuple[int, ...], out: Path,
                   plot_head_grid: Any) -> list[str]:
    from matplotlib.figure import Figure

    columns = 4
    rows = -(-len(probes) // columns)
    fig = Figure(figsize=(3.4 * columns, 3 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes[len(probes):]:
        ax.remove()
    for ax, (family, probe) in zip(axes, probes.items(), strict=False):
        plot_head_grid(probe["heads"], layers=list(layers), title=family, center=None,
                       cmap="viridis", annotate=True, ax=ax, vmin=0.0, vmax=1.0,
                       chance=1 / len(ATTRIBUTES[family]),
                       colorbar_label="accuracy of the head alone")
    fig.savefig(out / "probe.png", dpi=110, bbox_inches="tight")
    rows = [{"family": f, "layer": layers[l], "head": h, "accuracy": float(p["heads"][l, h])}
            for f, p in probes.items() for l in range(len(layers))
            for h in range(p["heads"].shape[1])]
    with open(out / "probe.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["## Per-head probe", "",
             "Zero-shot accuracy of each head's direct effect alone (all other components "
             "mean-ablated), per attribute family; chance is 1 / number of values.", "",
             "| family | model | best head | its accuracy | chance |", "|---|---|---|---|---|"]
    for family, probe in probes.items():
        best = _best(probe["heads"], layers)
        lines.append(f"| {family} | {probe['model']:.3f} | {best['head']} | "
                     f"{best['accuracy']:.3f} | {1 / len(ATTRIBUTES[family]):.3f} |")
    return lines + ["", "![probe](probe.png)", ""]


def _heatmap_section(clip: HookedCLIP, folder: Path, out: Path, plot_patch_maps: Any,
                     seed: int, n_scored: int = 64) -> list[str]:
    """Maps for a present and an absent shape; IoU of each with the object mask."""
    scenes = make_scenes(n_scored, seed=seed, split="test")
    images = torch.stack([clip.preprocess(image) for image in scenes.tensors()])
    shapes = ATTRIBUTES["shape"]
    present = [f"a {a['shape']}" for a in scenes.attributes]
    absent = [f"a {shapes[(shapes.index(a['shape']) + 1) % len(shapes)]}"
              for a in scenes.attributes]
    maps = PatchContribution(clip)
    texts = sorted(set(present + absent))
    all_maps = maps.attribute(images.to(clip.dtype), texts=texts)
    pick = torch.tensor([[texts.index(p), texts.index(a)] for p, a in zip(present, absent,
                                                                          strict=True)])
    chosen = all_maps.gather(1, pick[:, :, None, None].expand(-1, -1, *all_maps.shape[2:]))
    masks = torch.from_numpy(scenes.masks)
    chosen = torch.nn.functional.interpolate(chosen.float(), size=masks.shape[-2:],
                                             mode="bilinear")
    iou_present = map_iou(chosen[:, 0], masks).mean().item()
    iou_absent = map_iou(chosen[:, 1], masks).mean().item()
    scene = ", ".join(f"{family} {value}" for family, value in scenes.attributes[0].items())
    fig, _ = plot_patch_maps(scenes.tensors()[0], chosen[0], titles=[present[0], absent[0]],
                             title=f"scene: {scene}")
    fig.savefig(out / "heatmap.png", dpi=110, bbox_inches="tight")
    return ["## Patch heat maps", "",
            f"Mean IoU of the top pixels (as many as the object has) with the object mask, over "
            f"{n_scored} scenes: {iou_present:.3f} for the text naming the scene's shape, "
            f"{iou_absent:.3f} for an absent shape.", "", "![heatmap](heatmap.png)", ""]


def _rgb(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")
