"""``clipspan retrieve``: the top images of a folder for one head and a text or image query."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    add_cache_options,
    add_common_options,
    add_count,
    build_cache,
    image_folder,
    load_model,
    open_rgb,
    out_dir,
    save_figure,
    write_rows,
)
from .errors import CommandError

NAME = "retrieve"
HELP = "top images of a folder for one head"
DESCRIPTION = ("Rank the images of a folder by one head's direct effect on a text query (dot "
               "product), or by its similarity to the same head's effect on a query image.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan retrieve``."""
    parser.add_argument("images", help="folder of images")
    parser.add_argument("--head", required=True, help="LAYER.HEAD, e.g. 3.1")
    parser.add_argument("--query", required=True, help="a text, or the path of an image")
    add_count(parser, "--k", 8, "number of top images listed and drawn (default: 8)")
    add_common_options(parser, "clipspan-retrieve")
    add_cache_options(parser)


def run(args: argparse.Namespace) -> int:
    """Print the ranking and write retrieval.csv and retrieval.png."""
    import captum_clipspan as cs

    from ..visualization import plot_top_images

    clip, out = load_model(args), out_dir(args)
    folder = image_folder(args, clip)
    try:
        layer, head = (int(part) for part in args.head.split("."))
    except ValueError:
        raise CommandError(f"--head must look like LAYER.HEAD (e.g. 11.4), got {args.head!r}."
                           ) from None
    cache = build_cache(args, clip, folder, [layer])
    if cache is None:
        return 0
    query: Any = args.query
    if Path(args.query).is_file():
        query = clip.preprocess_images([open_rgb(args.query)])[0]
    top = cs.retrieve(cache, layer, head, query, k=args.k, clip=clip)
    files = folder.files
    rows = [{"rank": rank + 1, "file": str(files[i]), "score": float(s)}
            for rank, (i, s) in enumerate(zip(top.indices.tolist(), top.scores, strict=True))]
    write_rows(out / "retrieval.csv", rows)
    fig, _ = plot_top_images([open_rgb(row["file"]) for row in rows], scores=top.scores,
                             title=f"layer {layer}, head {head}: {args.query}",
                             score_label="dot" if query is args.query else "cosine")
    save_figure(fig, out / "retrieval.png")
    for row in rows:
        print(f"{row['rank']:3d}  {row['score']:+.4f}  {row['file']}")
    print(f"wrote {out / 'retrieval.csv'}, {out / 'retrieval.png'}")
    return 0
