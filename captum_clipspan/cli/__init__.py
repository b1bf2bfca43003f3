"""The ``clipspan`` command: decompositions, TextSpan reports, heat maps, ablations, retrieval.

Every subcommand takes ``--model`` and ``--pretrained`` (open_clip names and tags; default: the
embedded toy model, which runs offline) and writes PNG, CSV and JSON files into ``--out``. The
commands that build a decomposition cache take ``--nproc N``: the cache pass then runs in N
processes of one machine under ``torchrun`` (``python -m torch.distributed.run --standalone
--nproc-per-node N -m captum_clipspan.cli COMMAND ...``, which may also be run directly), and
process 0 alone goes on with the rest of the command.

Long steps show a progress bar or a status line on stderr; encoded text banks are cached per
model (:mod:`captum_clipspan.text_cache`). Random weights (an open_clip ``--model`` without
``--pretrained``) are announced in the output and in the output folder. User errors (a missing or
unreadable file, a bad option, the library's own argument checks: see
:func:`~captum_clipspan.cli.errors.is_user_error`) are one line on stderr with exit code 2;
anything else is a bug and keeps its traceback.

Each command is one module with ``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args)``; :data:`COMMANDS` lists them in the order ``clipspan --help`` shows.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import (
    ablate,
    cache,
    demo,
    explore,
    heads,
    heatmap,
    neurons,
    quickstart,
    retrieve,
    segment_benchmark,
    spurious,
)
from .common import check_counts, weights_note
from .distributed import launch, process_group, rank
from .errors import error_line, is_user_error

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = (demo, explore, heads, heatmap, ablate, retrieve, cache, segment_benchmark, spurious,
            neurons, quickstart)

EXAMPLES = """\
examples:
  clipspan demo                                  # whole pipeline on synthetic scenes, toy model
  clipspan heads photos/ --layers -2 -1 --m 5    # label heads of the last layers with TextSpan
  clipspan heatmap photo.png --text "a dog" --text "a cat"
  clipspan ablate photos/ --classes dog cat      # class sub-folders give the labels
  clipspan retrieve photos/ --head 3.1 --query "a red object"
  clipspan segment-benchmark synthetic --n 500   # zero-shot segmentation, every heat-map method
  clipspan spurious synthetic --k 2              # remove the spurious toy's background cue
  clipspan cache photos/ --nproc 2 --granularity token --layers -1   # per-token terms, 2 processes
  clipspan heads photos/ --model ViT-B-16 --pretrained laion2b_s34b_b88k --bank general
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``clipspan`` parser, with one subcommand per module of :data:`COMMANDS` (its
    ``run`` is the parsed namespace's ``run``)."""
    parser = argparse.ArgumentParser(
        prog="clipspan", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Read CLIP's image representation in words. The image embedding of an "
                    "open_clip ViT is split exactly into direct contributions of layers, "
                    "attention heads and patches (Gandelsman et al., ICLR 2024); these commands "
                    "label heads with text (TextSpan), draw patch heat maps, measure which "
                    "layers matter (mean-ablation) and retrieve images by head.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP,
                                    description=command.DESCRIPTION)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``clipspan`` (with ``--nproc N`` > 1, under torchrun in N processes).

    Args:
        argv: The command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, or 2 for a user error (one line on stderr).
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        check_counts(args)
        nproc = getattr(args, "nproc", 1)
        if nproc > 1 and "LOCAL_RANK" not in os.environ:
            return launch(argv, nproc)
        with process_group(args):
            code = args.run(args)
            this_rank = rank()
        note = weights_note(args)
        if note and this_rank == 0:  # again after the output, where it cannot be missed
            print(f"clipspan: {note}", file=sys.stderr)
        return code
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"clipspan {args.command}: error: {error_line(error, args)}", file=sys.stderr)
        return 2
