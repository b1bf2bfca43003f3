"""``clipspan cache``: the resumable decomposition cache of a folder of images."""

from __future__ import annotations

import argparse

from .common import (
    add_cache_options,
    add_common_options,
    add_layers_option,
    build_cache,
    image_folder,
    load_model,
)

NAME = "cache"
HELP = "cache the decomposition of a folder of images"
DESCRIPTION = ("Decompose every image of a folder into a resumable, memory-mapped cache "
               "(DecompositionCache): per-head terms of the chosen layers, and with --granularity "
               "token per (token, head) terms. With --nproc N the pass runs in N processes and "
               "the cache is the same bit for bit.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan cache``."""
    parser.add_argument("images", help="folder of images (searched recursively)")
    add_common_options(parser, "clipspan-cache")
    add_cache_options(parser)
    add_layers_option(parser, "layers of the per-head terms")
    parser.add_argument("--granularity", choices=["head", "token"], default="head",
                        help="token: also store per-token head terms (N_tokens times the disk)")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                        help="storage dtype of the terms (default: float16)")
    parser.add_argument("--convention", choices=["reference", "centered"], default="reference",
                        help="reference: the paper's code, the final norm's constants shared by "
                             "the terms; centered: every term centered on its own, biases kept "
                             "as separate terms (default: reference)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the cache files in the folder and build it anew")


def run(args: argparse.Namespace) -> int:
    """Build the cache and print the shapes of its arrays."""
    clip = load_model(args, texts=False)  # a cache pass encodes no text
    cache = build_cache(args, clip, image_folder(args, clip), args.layers,
                        granularity=args.granularity, dtype=args.dtype,
                        convention=args.convention, overwrite=args.overwrite)
    if cache is None:
        return 0
    arrays = ", ".join(f"{name} {list(getattr(cache, name).shape)}"
                       for name in cache.meta["fields"] if name not in ("labels", "digests"))
    print(f"cached {len(cache)} images in {cache.path}: {arrays}")
    return 0
