"""``clipspan demo``: the whole pipeline on synthetic scenes, written up in report.md."""

from __future__ import annotations

import argparse

from .common import add_common_options, add_count, load_model, out_dir, weights_note

NAME = "demo"
HELP = "run the whole pipeline on synthetic scenes"
DESCRIPTION = ("Render synthetic scenes, then cache their decomposition, probe every head per "
               "attribute, label heads with TextSpan, run the mean-ablation study, draw heat maps "
               "and retrieve images by head. Writes report.md with figures.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan demo``."""
    add_common_options(parser, "clipspan-demo")
    add_count(parser, "--n", 1000, "number of scenes (default: 1000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic scenes, drawn from the test split that "
                             "the toy never saw (default: 0)")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its report."""
    from ..demo import run_demo

    clip, out = load_model(args), out_dir(args)
    report = run_demo(clip, out, n=args.n, seed=args.seed, batch_size=args.batch_size,
                      note=weights_note(args))
    print(report.read_text())
    print(f"wrote the report to {report}")
    return 0
