"""``clipspan heads``: label the heads of chosen layers with TextSpan texts."""

from __future__ import annotations

import argparse

from .common import (
    add_cache_options,
    add_common_options,
    add_count,
    add_layers_option,
    build_cache,
    default_bank,
    existing,
    image_folder,
    load_bank,
    load_model,
    out_dir,
    save_figure,
    status,
)

NAME = "heads"
HELP = "label heads with TextSpan texts"
DESCRIPTION = ("Cache the decomposition of a folder of images and run TextSpan on every head of "
               "the chosen layers.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan heads``."""
    parser.add_argument("images", help="folder of images (searched recursively)")
    add_common_options(parser, "clipspan-heads")
    add_layers_option(parser, "layers to explain")
    add_count(parser, "--m", 5, "texts per head (default: 5)")
    parser.add_argument("--bank", default=None,
                        help="text bank: general, words, toy or a text file with one description "
                             "per line (default: toy for the toy model, else general)")
    add_cache_options(parser)


def run(args: argparse.Namespace) -> int:
    """Fit TextSpan on the cached heads; print each head's texts and write textspan.csv, .pt
    and .png."""
    import captum_clipspan as cs

    bank = load_bank(args, per_head=args.m)  # before the cache pass: bad options fail at once
    existing(args.images, "image folder", "folder")
    clip, out = load_model(args), out_dir(args)
    cache = build_cache(args, clip, image_folder(args, clip), args.layers)
    if cache is None:
        return 0
    status(f"text bank {default_bank(args)!r}: {len(bank)} texts (encoded once per model, "
           "then read from the cache)")
    report = cs.TextSpan(clip, bank=bank).fit(cache, m=args.m)
    for layer, head in report.results:
        print(report.describe(layer, head))
    report.to_frame().to_csv(out / "textspan.csv", index=False)
    report.save(out / "textspan.pt")
    fig, _ = report.plot(max_texts=args.m)
    save_figure(fig, out / "textspan.png")
    print(f"wrote {out / 'textspan.csv'}, {out / 'textspan.png'}, {out / 'textspan.pt'}")
    return 0
