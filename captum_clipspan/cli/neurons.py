"""``clipspan neurons``: read every neuron of one MLP layer in words (the second-order lens)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    add_common_options,
    default_bank,
    existing,
    load_model,
    open_rgb,
    out_dir,
    save_figure,
    status,
    synthetic_world,
    weights_note,
)

NAME = "neurons"
HELP = "read an MLP layer's neurons in words (second-order lens)"
DESCRIPTION = ("Fit the second-order neuron lens (Gandelsman et al., ICLR 2025) on one MLP layer: "
               "each neuron's effect through later heads, its top images, its first principal "
               "component as a sparse sum of texts. Writes the report, its table and figures.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan neurons``."""
    parser.add_argument("data", help="'synthetic' (held-out synthetic scenes) or a folder of "
                                     "images (searched recursively)")
    parser.add_argument("--layer", type=int, required=True,
                        help="the MLP layer (negative counts from the end; not the last)")
    parser.add_argument("--n", type=int, default=400,
                        help="synthetic scenes (default: 400)")
    parser.add_argument("--seed", type=int, default=2024,
                        help="synthetic scenes' seed (default 2024, held out from the toy's "
                             "training)")
    parser.add_argument("--neurons", type=int, nargs="+", default=None,
                        help="neuron indices (default: every neuron of the layer)")
    parser.add_argument("--bank", default=None,
                        help="text bank: general, words, toy or a text file with one description "
                             "per line (default: toy for the toy model, else general)")
    parser.add_argument("--top-k", type=int, default=100,
                        help="top images per neuron (default: 100, the authors')")
    parser.add_argument("--components", type=int, default=None,
                        help="texts per neuron (default: 32, the authors'; 4 for the toy bank)")
    parser.add_argument("--show", type=int, default=8,
                        help="strongest neurons drawn in the figures (default: 8)")
    parser.add_argument("--work-dir", default=None,
                        help="where the two passes keep their states, so that an interrupted "
                             "run resumes (default: OUT/lens)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the passes anew in --work-dir")
    add_common_options(parser, "clipspan-neurons", batch_size=32)


def run(args: argparse.Namespace) -> int:
    """Fit the lens; print the strongest neurons and write neurons.pt, .csv, .md and figures."""
    import captum_clipspan as cs

    from ..text_cache import encode_texts_cached

    clip, out = load_model(args), out_dir(args)
    data, pictures = _data(args, clip)
    bank_name = default_bank(args)
    bank = cs.text_bank(bank_name)
    status(f"text bank {bank_name!r}: {len(bank)} texts")
    embeddings = encode_texts_cached(clip, bank).float().to(clip.device)
    components = args.components or (4 if bank_name == "toy" else 32)
    lens = cs.NeuronLens(clip, args.layer, bank=bank, text_embeddings=embeddings,
                         neurons=args.neurons, top_k=args.top_k,
                         n_components=min(components, len(bank)))
    report = lens.fit(data, batch_size=args.batch_size,
                      work_dir=Path(args.work_dir) if args.work_dir else out / "lens",
                      overwrite=args.overwrite)
    strongest = report.strongest(args.show)
    for neuron in strongest:
        print(report.describe(neuron, max_texts=5))
    frame = report.to_frame()
    frame.to_csv(out / "neurons.csv", index=False)
    note = weights_note(args)
    table = _markdown(frame.head(args.show).drop(columns=["top_images"]))
    (out / "neurons.md").write_text((f"**{note}**\n\n" if note else "") + table + "\n")
    report.save(out / "neurons.pt")
    written = [out / "neurons.pt", out / "neurons.csv", out / "neurons.md"]
    from ..visualization import plot_neuron_grid, plot_neuron_images

    written.append(save_figure(report.plot(strongest)[0], out / "neuron_texts.png"))
    written.append(save_figure(plot_neuron_grid(report)[0], out / "neuron_grid.png"))
    images, maps = _top_images(clip, report, strongest, pictures, data)
    titles = [f"neuron {neuron}: {report.texts_of(neuron, 1)[0][0]}" if report.texts_of(neuron)
              else f"neuron {neuron}" for neuron in strongest]
    written.append(save_figure(plot_neuron_images(images, maps, titles)[0],
                               out / "neuron_images.png"))
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def _markdown(frame: Any) -> str:
    """A DataFrame as a Markdown table (numbers to 3 significant digits)."""
    cells = [[f"{value:.3g}" if isinstance(value, float) else str(value) for value in row]
             for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "|".join("---" for _ in frame.columns)
             + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _data(args: argparse.Namespace, clip: Any) -> tuple[Any, Any]:
    """The images to fit on and a way to show them: synthetic scenes (as a tensor, with their
    pictures) or an image folder (pictures read from its files)."""
    import captum_clipspan as cs

    if args.data == "synthetic":
        from PIL import Image

        from ..toy.scenes import make_scenes

        scenes = make_scenes(args.n, seed=args.seed, split="test", world=synthetic_world(args))
        status(f"{args.n} synthetic scenes (test split, seed {args.seed})")
        return clip.preprocess_images([Image.fromarray(image) for image in scenes.images]), (
            scenes.images)
    return cs.ImageFolder(existing(args.data, "image folder", "folder"), clip.preprocess), None


def _top_images(clip: Any, report: Any, neurons: list[int], pictures: Any,
                data: Any, per_neuron: int = 6) -> tuple[list[Any], list[Any]]:
    """Each neuron's first top images and its activation at every patch on them
    (``blocks.{l}.mlp.hook_post``), ``[K, g, g]``."""
    import torch

    images, maps = [], []
    vit = clip.visual
    post: dict[str, torch.Tensor] = {}
    hook = (f"blocks.{report.layer}.mlp.hook_post",
            lambda tensor, hook: post.update(value=tensor))
    for neuron in neurons:
        rows = report.images_of(neuron, per_neuron).tolist()
        if pictures is not None:
            shown = [pictures[row] for row in rows]
            inputs = data[rows]
        else:
            shown = [open_rgb(data.files[row]) for row in rows]
            inputs = torch.stack([data[row][0] for row in rows]).to(clip.device, clip.dtype)
        with torch.no_grad(), vit.hooks(fwd_hooks=[hook]):
            vit(inputs)
        patches = post["value"][:, vit.n_prefix_tokens:, neuron].float().cpu()
        images.append(shown)
        maps.append(patches.reshape(len(rows), *vit.grid_size))
    return images, maps
