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
               "center crop). With several texts each map shows what sets its text apart: its "
               "map minus the mean of the texts' maps (--contrast mean, the default), on one "
               "colour scale; --contrast none draws the raw maps.")
NO_CONTRAST, MEAN_CONTRAST = "none", "mean"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan heatmap``."""
    parser.add_argument("image", help="an image file")
    parser.add_argument("--text", action="append", required=True,
                        help="a text to map (repeat for several)")
    add_common_options(parser, "clipspan-heatmap", batch_size=None)
    add_layers_option(parser, "layers whose patch terms are summed")
    parser.add_argument("--heads", type=int, nargs="+", default=None,
                        help="heads summed in each chosen layer (default: all)")
    parser.add_argument("--contrast", default=None, metavar="{mean,none,TEXT}",
                        help="with several texts, subtract from each map the mean of the "
                             "texts' maps ('mean', the default), nothing ('none': raw maps, "
                             "which look alike because most of each is common to every text), "
                             "or the map of a reference TEXT (e.g. 'a photo')")
    parser.add_argument("--name", default=None,
                        help="output file name, ending in .png, .pdf, .svg or .jpg (.png is "
                             "added to a name without one; default: IMAGE-STEM_heatmap.png)")


def run(args: argparse.Namespace) -> int:
    """Draw the maps over the model's view of the image and write the PNG."""
    import captum_clipspan as cs

    from ..visualization import model_view, plot_patch_maps

    contrast = _contrast(args)  # before the model loads: a bad option fails at once
    image_path = existing(args.image, "image", "file")
    clip, out = load_model(args), out_dir(args)
    if clip.preprocess is None:
        raise CommandError("this model has no preprocess transform.")
    image = open_rgb(image_path)
    batch = clip.preprocess_images([image])
    reference = contrast not in (None, MEAN_CONTRAST)  # a text, whose map is subtracted
    texts = args.text + [contrast] if reference else args.text
    maps = cs.PatchContribution(clip, layers=args.layers, heads=args.heads).attribute(
        batch, texts=texts, interpolate=True,
        contrast=len(args.text) if reference else contrast)[:, :len(args.text)]
    view = model_view(clip.preprocess, image)  # the maps are drawn over what the model saw
    title = (f"{Path(args.image).name} as the model saw it ({image.width}x{image.height} -> "
             f"{view.shape[2]}x{view.shape[1]})")
    if weights_note(args):
        title += ", RANDOM weights"
    fig, _ = plot_patch_maps(view, maps[0], titles=args.text, title=title,
                             colorbar_label=_shown(contrast))
    path = save_figure(fig, figure_path(out, args.name or f"{Path(args.image).stem}_heatmap"))
    print(f"wrote {path}")
    return 0


def _contrast(args: argparse.Namespace) -> str | None:
    """``--contrast``: ``"mean"``, ``None`` (no contrast) or a reference text."""
    choice = args.contrast
    if choice is None:
        return MEAN_CONTRAST if len(args.text) > 1 else None
    if choice == NO_CONTRAST:
        return None
    if choice == MEAN_CONTRAST and len(args.text) < 2:
        raise CommandError("--contrast mean compares several texts: give --text at least twice, "
                           "or a reference text (--contrast 'a photo').")
    if choice != MEAN_CONTRAST and not choice.strip():
        raise CommandError("--contrast is empty; give mean, none or a reference text.")
    return choice


def _shown(contrast: str | None) -> str:
    """What the maps show, for the colorbar."""
    if contrast is None:
        return "patch effect on the image-text similarity"
    if contrast == MEAN_CONTRAST:
        return "patch effect minus the mean over the texts"
    return f"patch effect minus that of {contrast!r}"
