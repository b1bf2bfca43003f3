"""``clipspan spurious``: remove a spurious cue by ablating the heads TextSpan labels with it
(the paper's Waterbirds experiment)."""

from __future__ import annotations

import argparse
import json

from .common import (
    add_common_options,
    add_count,
    class_templates,
    default_bank,
    existing,
    is_toy,
    load_model,
    out_dir,
    weights_note,
)
from .errors import CommandError

NAME = "spurious"
HELP = "remove a spurious cue by ablating the heads TextSpan labels with it"
DESCRIPTION = ("The paper's Waterbirds experiment: label every head with TextSpan on reference "
               "images, mean-ablate the K heads whose texts best span the cue (--concept), and "
               "report average and worst-group zero-shot accuracy before, after, and for the "
               "best of several random choices of K heads. Writes spurious.md, spurious.json and "
               "textspan.csv.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan spurious``."""
    parser.add_argument("data", help="'synthetic' (the spurious toy's held-out shape x "
                        "texture groups) or a Waterbirds folder (metadata.csv with "
                        "img_filename, y, place, split)")
    parser.add_argument("--concept", action="append", default=None,
                        help="a text describing the cue (repeat for several; with two or "
                             "more, heads are scored on their differences). Default for "
                             "synthetic: the background-texture prompts; required for a "
                             "folder")
    parser.add_argument("--no-center", action="store_true",
                        help="score heads on the concept texts as given, not on their "
                             "differences")
    add_count(parser, "--k", None, "heads to ablate (default: 2 for synthetic, whose toy has "
              "16 heads; else 4)")
    add_count(parser, "--draws", 5, "random draws of K heads for the baseline (default: 5)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random draws (default: 0)")
    add_count(parser, "--m", 8, "TextSpan texts per head (default: 8)")
    parser.add_argument("--bank", default=None,
                        help="TextSpan's text bank (default: toy for the toy models, else "
                             "general)")
    parser.add_argument("--split", default="test",
                        help="Waterbirds split to score (default: test)")
    parser.add_argument("--reference", default="val",
                        help="images for TextSpan and the means: a Waterbirds split name or "
                             "an image folder (default: val)")
    parser.add_argument("--classes", nargs=2, default=None,
                        help="the names of classes y = 0 and y = 1 in the prompts (default: "
                             "landbird waterbird)")
    add_count(parser, "--n-per-group", 100, "synthetic: held-out scenes per group (default: "
              "100)")
    add_count(parser, "--n-reference", 2000, "synthetic: reference scenes (default: 2000)")
    parser.add_argument("--scene-seed", type=int, default=54321,
                        help="synthetic: seed of the scored groups, drawn from the test split "
                             "(the reference scenes and the oracle's groups come from the "
                             "validation split; default: 54321)")
    add_common_options(parser, "clipspan-spurious", batch_size=200, model="toy-spurious")


def run(args: argparse.Namespace) -> int:
    """Run the study; print its table and write spurious.md, spurious.json and textspan.csv."""
    import captum_clipspan as cs

    if args.k is None:
        args.k = 2 if args.data == "synthetic" else 4
    concept = args.concept
    center = not args.no_center and (concept is None or len(concept) > 1)
    if args.data == "synthetic":
        if not is_toy(args):
            raise CommandError(f"'synthetic' runs on a toy model (toy-spurious, or toy as a "
                               f"control), got --model {args.model}; give a Waterbirds folder "
                               f"for open_clip models.")
        from ..toy.spurious import spurious_benchmark

        clip, out = load_model(args), out_dir(args)
        study = spurious_benchmark(clip, concept=concept, k=args.k, draws=args.draws,
                                   n_reference=args.n_reference, n_per_group=args.n_per_group,
                                   m=args.m, center=center, seed=args.seed,
                                   batch_size=args.batch_size, scene_seed=args.scene_seed,
                                   toy=args.model)
        groups = study["groups"]
        concept = concept or ["the toy's background-texture prompts"]
    else:
        if concept is None:
            raise CommandError("a data folder needs --concept: the spurious cue as one or more "
                               "texts, e.g. --concept 'a photo of water' --concept 'a photo of "
                               "a forest'.")
        source = existing(args.data, "Waterbirds folder", "folder")
        clip, out = load_model(args), out_dir(args)
        if clip.preprocess is None:
            raise CommandError("this model has no preprocess transform.")
        data = cs.WaterbirdsDataset(source, args.split, transform=clip.preprocess)
        reference = (cs.WaterbirdsDataset(source, args.reference, transform=clip.preprocess)
                     if args.reference in ("train", "val", "test") else
                     cs.ImageFolder(existing(args.reference, "reference folder", "folder"),
                                    clip.preprocess))
        names = list(args.classes or cs.WaterbirdsDataset.classes)
        # y's classes by name, each said in the prompts as --classes gives it
        classifier = cs.ZeroShotClassifier(clip, dict(zip(data.classes, names, strict=True)),
                                           templates=class_templates(args))
        from ..text_cache import encode_texts_cached

        bank = cs.text_bank(default_bank(args))
        study = cs.spurious_cue_study(
            clip, reference, data, classifier, concept, None,
            data.groups, k=args.k, draws=args.draws, seed=args.seed, bank=bank,
            text_embeddings=encode_texts_cached(clip, bank).float().to(clip.device), m=args.m,
            center=center, n_groups=data.n_groups, batch_size=args.batch_size)
        groups = [f"{names[g // 2]} on {('land', 'water')[g % 2]}" for g in range(4)]
    table = cs.spurious_table(study)
    note = weights_note(args)
    per_group = "\n".join(
        f"| {name} | {study['before']['per_group'].get(g, float('nan')):.3f} | "
        f"{study['after']['per_group'].get(g, float('nan')):.3f} | "
        f"{study['random']['after']['per_group'].get(g, float('nan')):.3f} |"
        for g, name in enumerate(groups))
    (out / "spurious.md").write_text(
        (f"**{note}**\n\n" if note else "") + f"Concept: {'; '.join(concept)}\n\n{table}\n\n"
        "| group | unmodified | concept heads ablated | random heads ablated |\n"
        f"|---|---:|---:|---:|\n{per_group}\n")
    summary = {key: study[key] for key in ("heads", "before", "after")}
    summary["random"] = {key: study["random"][key] for key in ("heads", "after", "draws")}
    summary["concept_scores"] = {f"{layer}.{head}": score
                                 for (layer, head), score in study["concept_scores"].items()}
    summary["groups"], summary["concept"], summary["center"] = groups, concept, center
    (out / "spurious.json").write_text(json.dumps(summary, indent=1))
    study["report"].to_frame().to_csv(out / "textspan.csv", index=False)
    print(table)
    print(f"wrote {out / 'spurious.md'}, {out / 'spurious.json'}, {out / 'textspan.csv'}")
    return 0
