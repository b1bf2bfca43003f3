"""The ``clipspan`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _quickstart(args: argparse.Namespace) -> int:
    import torch

    import captum_clipspan as cs

    torch.manual_seed(args.seed)
    clip = cs.HookedCLIP.from_pretrained(args.model, pretrained=args.pretrained)
    images = torch.randn(args.batch, 3, *clip.visual.image_size)
    texts = ["a photo of a dog", "a red circle", "a striped background"]
    parts = cs.decompose(clip, images, granularity="head", text_embeddings=clip.encode_text(texts))
    error = parts.convergence_delta().abs().max().item()
    print(f"{args.model} ({args.pretrained or 'random weights'}): {clip.visual.n_layers} layers x "
          f"{clip.visual.n_heads} heads, {args.batch} random images, {len(texts)} texts")
    print(f"terms sum to the image-text cosine; largest completeness error: {error:.2e}")
    top = parts.heads[0, :, :, 0].flatten().abs().topk(5).indices
    print(f"largest direct effects on '{texts[0]}' (image 0):")
    for index in top.tolist():
        layer, head = divmod(index, clip.visual.n_heads)
        print(f"  layer {layer:2d} head {head:2d}: {parts.heads[0, layer, head, 0].item():+.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipspan",
        description="Read CLIP's image representation in words: exact decomposition of an "
                    "open_clip ViT's image embedding into layers, heads and patches.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    quick = commands.add_parser(
        "quickstart", help="decompose random images and check that the terms add up",
        description="Decompose a batch of random images with an open_clip model (random weights "
                    "unless --pretrained is given) and print the completeness error and the "
                    "heads with the largest direct effects.",
    )
    quick.add_argument("--model", default="ViT-B-16", help="open_clip model name")
    quick.add_argument("--pretrained", default=None,
                       help="open_clip pretrained tag (needs a download); default: random weights")
    quick.add_argument("--batch", type=int, default=2)
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(run=_quickstart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
