"""``clipspan heatmap``: per-patch direct effects of texts on one image."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_common_options,
    add_layers_option,
    existing,
    figure_path,
    load_model,
    open_rgb,
    out_dir,
    save_figure,
    weights_note,
)
from .errors import CommandError

NAME = "heatmap"
HELP = "patch heat maps of one image for texts"
DESCRIPTION = ("Draw each text's per-patch direct effect on the image (summed over the chosen "
               "layers and heads) as a PNG, over exactly what the model saw (its resize and "
               "center crop).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan heatmap``."""
    parser.add_argument("image", help="an image file")
    parser.add_argument("--text", action="append", required=True,
                        help="a text to map (repeat for several)")
    add_common_options(parser, "clipspan-heatmap", batch_size=None)
    add_layers_option(parser, "layers whose patch terms are summed")
    parser.add_argument("--heads", type=int, nargs="+", default=None,
                        help="heads summed in each chosen layer (default: all)")
    parser.add_argument("--name", default=None,
                        help="output file name, ending in .png, .pdf, .svg or .jpg (.png is "
                             "added to a name without one; default: IMAGE-STEM_heatmap.png)")


def run(args: argparse.Namespace) -> int:
    """Draw the maps over the model's view of the image and write the PNG."""
    import captum_clipspan as cs

    from ..visualization import model_view, plot_patch_maps

    clip, out = load_model(args), out_dir(args)
    if clip.preprocess is None:
        raise CommandError("this model has no preprocess transform.")
    image = open_rgb(existing(args.image, "image", "file"))
    batch = clip.preprocess_images([image])
    maps = cs.PatchContribution(clip, layers=args.layers, heads=args.heads).attribute(
        batch, texts=args.text, interpolate=True)
    view = model_view(clip.preprocess, image)  # the maps are drawn over what the model saw
    title = (f"{Path(args.image).name} as the model saw it ({image.width}x{image.height} -> "
             f"{view.shape[2]}x{view.shape[1]})")
    if weights_note(args):
        title += ", RANDOM weights"
    fig, _ = plot_patch_maps(view, maps[0], titles=args.text, title=title)
    path = save_figure(fig, figure_path(out, args.name or f"{Path(args.image).stem}_heatmap"))
    print(f"wrote {path}")
    return 0
