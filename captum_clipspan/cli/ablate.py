"""``clipspan ablate``: zero-shot accuracy with components mean-ablated (the paper's Table 1
and Figure 2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import (
    add_cache_options,
    add_common_options,
    build_cache,
    class_templates,
    describe_weights,
    image_folder,
    load_model,
    out_dir,
    save_figure,
    status,
    weights_note,
)
from .distributed import rank
from .errors import CommandError

NAME = "ablate"
HELP = "mean-ablation study (accuracy per setting)"
DESCRIPTION = ("Zero-shot accuracy with all MLPs, all MSAs, and MSA layers 0..l mean-ablated "
               "(the paper's Table 1 and Figure 2). Labels come from class sub-folders.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan ablate``."""
    parser.add_argument("images", help="folder with one sub-folder of images per class")
    parser.add_argument("--classes", nargs="+", default=None,
                        help="the classes of the prompts: sub-folder names (in any order; "
                             "images are matched to them by name), or FOLDER=NAME to say a "
                             "sub-folder's class differently in the prompts (default: every "
                             "sub-folder's name)")
    parser.add_argument("--mode", choices=["direct", "total"], default="direct",
                        help="direct: replace each component's direct effect by its mean, from "
                             "the cached decomposition (no re-run); total: replace its output "
                             "inside the network and re-run, so later layers see the change "
                             "(default: direct)")
    add_common_options(parser, "clipspan-ablate")
    add_cache_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run the study; print its table and write ablation.csv, .json and two figures."""
    import captum_clipspan as cs

    from ..visualization import plot_ablation_bars, plot_ablation_curve

    if args.mode == "total" and rank():
        return 0  # total mode builds no cache: process 0 runs the study alone
    clip, out = load_model(args), out_dir(args)
    folder = image_folder(args, clip)
    if not folder.classes:
        raise CommandError(f"{folder.root} has no class sub-folders: put each class's images in a "
                           "sub-folder named after it (labels come from the sub-folders).")
    names = _class_names(args.classes, folder.classes)
    status(f"encoding the prompts of {len(names)} classes")
    # the study matches folders to the classifier by name
    classifier = cs.ZeroShotClassifier(clip, names, templates=class_templates(args))
    if args.mode == "direct":
        cache = build_cache(args, clip, folder, [-1])
        if cache is None:
            return 0
        means, data = cs.ComponentMeans.from_cache(cache), cache
    else:
        means = cs.component_means(clip, folder, batch_size=args.batch_size)
        data = folder
    study = cs.MeanAblation(clip, means, mode=args.mode).study(data, classifier,
                                                               batch_size=args.batch_size)
    _write_ablation(study, out, describe_weights(args))
    task = (f"zero-shot classification of {len(names)} classes, {args.mode} effects"
            + (" (RANDOM weights)" if weights_note(args) else ""))
    figure = {"title": task, "chance": 1 / len(names)}
    save_figure(plot_ablation_curve(study.accumulated, baseline=study.baseline, **figure)[0],
                out / "ablation_curve.png")
    save_figure(plot_ablation_bars(study.table(), **figure)[0], out / "ablation_table.png")
    print(study.to_frame().to_string())
    print(f"wrote {out / 'ablation.csv'}, {out / 'ablation.json'} and two PNG files")
    return 0


def _class_names(given: list[str] | None, folders: list[str]) -> dict[str, str]:
    """``--classes`` -> ``{sub-folder: name in the prompts}`` for every sub-folder.

    Raises:
        CommandError: A name that is no sub-folder, or sub-folders left without a class.
    """
    if given is None:
        return {folder: folder for folder in folders}
    names = dict(item.split("=", 1) if "=" in item else (item, item) for item in given)
    unknown = [folder for folder in names if folder not in folders]
    missing = [folder for folder in folders if folder not in names]
    if unknown or missing or len(names) != len(given):
        raise CommandError(
            f"--classes must name each class sub-folder once ({', '.join(folders)}), as FOLDER "
            f"or FOLDER=NAME; got {' '.join(given)}"
            + (f" (no sub-folder {', '.join(unknown)})" if unknown else "")
            + (f" (missing {', '.join(missing)})" if missing else "") + ".")
    return names


def _write_ablation(study: Any, out: Path, weights: str) -> None:
    study.to_frame().to_csv(out / "ablation.csv")
    (out / "ablation.json").write_text(json.dumps({**vars(study), "weights": weights}, indent=1))
