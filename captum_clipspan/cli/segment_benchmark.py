"""``clipspan segment-benchmark``: zero-shot segmentation scores of heat-map methods."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_common_options,
    add_count,
    class_templates,
    existing,
    load_model,
    names_or_file,
    out_dir,
    status,
    synthetic_world,
    weights_note,
    write_rows,
)
from .errors import CommandError

NAME = "segment-benchmark"
HELP = "zero-shot segmentation scores of heat-map methods"
DESCRIPTION = ("Pixel accuracy, mIoU and mAP of heat maps against foreground masks (Chefer et "
               "al.'s ImageNet-segmentation protocol, per image), for the decomposition's patch "
               "map and attention- and gradient-based baselines. Each image is mapped for its "
               "zero-shot prediction. Writes segmentation.md and segmentation.csv.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan segment-benchmark``."""
    parser.add_argument("data", help="'synthetic' (held-out synthetic scenes and their object "
                        "masks), gtsegs_ijcv.mat (needs h5py), or a folder with images/ and "
                        "masks/<name>.png")
    parser.add_argument("--method", nargs="+", default=None,
                        help="heat-map methods: decomposition, raw_attention, rollout, gradcam, "
                             "chefer (default: all), and neurons with --neurons")
    parser.add_argument("--neurons", nargs="+", default=None, metavar="REPORT",
                        help="also score the neurons' map (the second-order lens): neurons.pt "
                             "reports written by `clipspan neurons`, one per MLP layer, or "
                             "'synthetic' to fit the lens on 400 synthetic scenes of the "
                             "validation split (seed 7)")
    add_count(parser, "--top-neurons", 200, "neurons per class for --neurons (default 200)")
    add_count(parser, "--n", None, "number of images (synthetic: default 500; files: default "
              "all)")
    parser.add_argument("--seed", type=int, default=2024,
                        help="synthetic scenes' seed within --split (default 2024)")
    parser.add_argument("--split", choices=("test", "validation"), default="test",
                        help="synthetic scenes' split, held out from the toy's training by "
                             "construction (default: test)")
    parser.add_argument("--classes", nargs="+", default=None,
                        help="class names for the zero-shot prediction, or one text file with a "
                             "name per line (default: the scenes' color-shape classes, or "
                             "ImageNet's 1000 classes for the .mat file)")
    add_common_options(parser, "clipspan-segmentation", batch_size=16)


def run(args: argparse.Namespace) -> int:
    """Score every method; print the table and write segmentation.md and segmentation.csv."""
    import captum_clipspan as cs

    from .. import segmentation as seg

    clip, out = load_model(args), out_dir(args)
    prepare = seg.for_model(clip)
    if args.data == "synthetic":
        from ..toy import SceneSegmentation

        data = SceneSegmentation(500 if args.n is None else args.n, seed=args.seed,
                                 split=args.split, world=synthetic_world(args), **prepare)
        texts = cs.ZeroShotClassifier.from_prompts(clip, SceneSegmentation.class_prompts())
    else:
        source = existing(args.data, "segmentation data")
        data = (seg.MaskFolder(source, **prepare) if source.is_dir()
                else seg.ImagenetSegmentation(source, **prepare))
        names = _class_names(args, source)
        status(f"encoding the prompts of {len(names)} classes")
        texts = cs.ZeroShotClassifier(clip, names, templates=class_templates(args))
    if args.data != "synthetic" and args.n is not None:
        import torch.utils.data

        data = torch.utils.data.Subset(data, range(min(args.n, len(data))))
    methods = args.method or list(seg.HEATMAP_METHODS)
    options = {}
    if args.neurons is not None:
        options["neurons"] = {"reports": _neuron_reports(args, clip),
                              "top_neurons": args.top_neurons}
        methods = methods if "neurons" in methods else [*methods, "neurons"]
    elif "neurons" in methods:
        raise CommandError("--method neurons needs --neurons (reports written by `clipspan "
                           "neurons`, or 'synthetic').")
    rows = seg.benchmark(clip, data, texts, methods=methods, batch_size=args.batch_size,
                         options=options, show_progress=True)
    table = seg.markdown_table(rows)
    note = weights_note(args)
    (out / "segmentation.md").write_text((f"**{note}**\n\n" if note else "") + table + "\n")
    write_rows(out / "segmentation.csv", rows)
    print(table)
    print(f"wrote {out / 'segmentation.md'}, {out / 'segmentation.csv'}")
    return 0


def _neuron_reports(args: argparse.Namespace, clip: object) -> list:
    """``--neurons``: saved reports, or the lens fitted on other synthetic scenes."""
    import captum_clipspan as cs

    if args.neurons == ["synthetic"]:
        from ..toy.segmentation import neuron_reports

        status("fitting the neuron lens on 400 reference scenes (validation split, seed 7)")
        return neuron_reports(clip, world=synthetic_world(args))
    return [cs.NeuronReport.load(existing(path, "--neurons report")) for path in args.neurons]


def _class_names(args: argparse.Namespace, source: Path) -> list[str]:
    """``--classes`` (names, or a text file with one per line); ImageNet's for the .mat file."""
    if args.classes:
        return names_or_file(args.classes, "--classes file")
    if source.is_dir():
        raise CommandError("a mask folder needs --classes (class names, or a text file with "
                           "one per line); each image's map is for its zero-shot prediction.")
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)
