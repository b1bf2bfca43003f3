"""``clipspan explore``: an offline explorer site of a cache's heads and their TextSpan texts."""

from __future__ import annotations

import argparse

from .common import add_common_options, add_count, existing, load_model, out_dir
from .errors import CommandError

NAME = "explore"
HELP = "write an offline explorer site (index.html) of a cache's heads"
DESCRIPTION = ("Write a static site that opens by double-click and fetches nothing: the head grid "
               "coloured by a chosen score, each head's TextSpan texts with its top and bottom "
               "images and their patch maps, each image's contributions per head, and a search "
               "over the heads' texts. With --neurons, MLP neurons read by the neuron lens "
               "too: a neuron list per layer and a page per neuron (texts, variance explained, "
               "top images). CACHE is a decomposition cache of an image folder (clipspan heads "
               "writes one, with --textspan's textspan.pt).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan explore``."""
    parser.add_argument("cache", help="decomposition cache folder (e.g. clipspan-heads/cache)")
    parser.add_argument("--textspan", required=True, metavar="REPORT",
                        help="TextSpan report file (textspan.pt, written by clipspan heads)")
    add_common_options(parser, "clipspan-explorer")
    parser.add_argument("--n-images", type=int, default=4,
                        help="top and bottom images per text on a head's page (default: 4)")
    parser.add_argument("--neighbors", type=int, default=6,
                        help="nearest neighbours per query image (default: 6)")
    parser.add_argument("--spotlight", type=int, default=12,
                        help="images whose pages show every head's patch maps (default: 12)")
    parser.add_argument("--max-patch-maps", type=int, default=2000,
                        help="most (image, head) pairs given patch maps; 0: none (default: 2000)")
    parser.add_argument("--thumb-size", type=int, default=96,
                        help="largest thumbnail side in pixels (default: 96)")
    parser.add_argument("--neurons", nargs="+", default=None, metavar="REPORT",
                        help="neuron-lens report files (NeuronReport.save, clipspan neurons), "
                             "at most one per MLP layer: adds neuron pages")
    add_count(parser, "--neuron-images", 6, "top images per neuron page (default: 6)")
    add_count(parser, "--max-neuron-images", 2000, "most images the neuron pages add to the "
              "thumbnails (default: 2000)", minimum=0)
    parser.add_argument("--title", default=None, help="page title (default: model and size)")


def run(args: argparse.Namespace) -> int:
    """Build the site and say where it is."""
    import captum_clipspan as cs

    from ..explorer import explore

    cache = cs.DecompositionCache.open(existing(args.cache, "cache folder", "folder"))
    path = existing(args.textspan, "TextSpan report", "file")
    try:
        report = cs.TextSpanReport.load(path)
    except Exception as error:  # torch.load's errors name pickling, not the file
        raise CommandError(f"{path} is not a TextSpan report (write one with clipspan heads: "
                           f"textspan.pt): {error}") from error
    neurons = None
    if args.neurons:
        neurons = [existing(file, "neuron report", "file") for file in args.neurons]
    clip, out = load_model(args), out_dir(args)
    index = explore(cache, report, out, clip=clip, n_images=args.n_images,
                    n_neighbors=args.neighbors, spotlight=args.spotlight,
                    max_patch_maps=args.max_patch_maps, thumb_size=args.thumb_size,
                    batch_size=args.batch_size, neurons=neurons,
                    neuron_images=args.neuron_images,
                    max_neuron_images=args.max_neuron_images, title=args.title)
    print(f"wrote the explorer to {index}: open it in a browser (offline; no server needed)")
    return 0
