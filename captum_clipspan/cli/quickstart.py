"""``clipspan quickstart``: decompose random images and check that the terms sum up."""

from __future__ import annotations

import argparse

from .common import add_common_options, add_count, describe_weights, load_model

NAME = "quickstart"
HELP = "decompose random images and check the sum"
DESCRIPTION = ("Decompose a batch of random images and print the completeness error (terms "
               "minus the model's cosine).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clipspan quickstart``."""
    add_common_options(parser, None, batch_size=None)
    add_count(parser, "--n", 2, "number of random images (default: 2)")
    parser.add_argument("--batch", dest="n", type=int, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # the old name of --n, checked as --n
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random images (default: 0)")


def run(args: argparse.Namespace) -> int:
    """Print the model's size and the largest completeness error."""
    import torch

    import captum_clipspan as cs

    torch.manual_seed(args.seed)
    clip = load_model(args)
    images = torch.randn(args.n, 3, *clip.visual.image_size)
    texts = ["a photo of a dog", "a red circle", "a striped background"]
    parts = cs.decompose(clip, images, granularity="head", text_embeddings=clip.encode_text(texts))
    error = parts.convergence_delta().abs().max().item()
    print(f"{args.model} ({describe_weights(args)}): "
          f"{clip.visual.n_layers} layers x {clip.visual.n_heads} heads, "
          f"{args.n} random images, {len(texts)} texts")
    print(f"terms sum to the image-text cosine; largest completeness error: {error:.2e}")
    return 0
