"""Time TextSpan (``captum_clipspan.attr.textspan_core.textspan``) on random CLIP-sized heads.

Each head is a random ``[K, E]`` float32 matrix, near-low-rank by default (as real heads are:
a ViT head writes through a 64-dimensional value space), ``[K, head_rank] @ [head_rank, E]``
plus small noise; ``--full-rank`` times dense random heads instead. The text bank is random
unit vectors. Building the heads is not timed, nor is a first warm-up call.

Usage::

    python benchmarks/textspan.py                      # 64 heads, K=5000, M=3000, E=768, m=10
    python benchmarks/textspan.py --full-rank --m 60 --threads 2

It ends with the cache pass's throughput relative to ``encode_image`` (``cache_pass.py``).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    from captum_clipspan.attr.textspan_core import textspan
except ImportError:  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from captum_clipspan.attr.textspan_core import textspan

GOAL_SECONDS_PER_HEAD = 1.0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=64, help="heads to time (default 64)")
    parser.add_argument("--images", type=int, default=5000, help="K, images per head")
    parser.add_argument("--texts", type=int, default=3000, help="M, texts in the bank")
    parser.add_argument("--dim", type=int, default=768, help="E, embedding width")
    parser.add_argument("--m", type=int, default=10, help="texts to choose per head")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--head-rank", type=int, default=64, help="rank of the low-rank part")
    parser.add_argument("--noise", type=float, default=1e-3, help="std of the added noise")
    parser.add_argument("--full-rank", action="store_true", help="dense random heads instead")
    parser.add_argument("--unnormalized", action="store_true", help="normalize_scoring=False")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-pass-images", type=int, default=96,
                        help="images for the cache-pass throughput part (0 skips it)")
    parser.add_argument("--cache-model", default="ViT-B-16")
    return parser.parse_args()


def _random_head(args: argparse.Namespace, gen: torch.Generator) -> torch.Tensor:
    shape = (args.images, args.dim)
    if args.full_rank:
        return torch.randn(shape, generator=gen)
    factors = torch.randn(args.images, args.head_rank, generator=gen)
    head = factors @ torch.randn(args.head_rank, args.dim, generator=gen)
    return head + args.noise * torch.randn(shape, generator=gen)


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def main() -> None:
    """Run the benchmark and print its figures."""
    args = _parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    bank = torch.nn.functional.normalize(torch.randn(args.texts, args.dim, generator=gen), dim=1)
    texts = [f"text {i}" for i in range(args.texts)]
    kind = "full-rank" if args.full_rank else f"rank {args.head_rank} + noise {args.noise:g}"
    print(
        f"TextSpan: {args.heads} heads x (K={args.images}, E={args.dim}, M={args.texts}, "
        f"m={args.m}), float32 {kind} heads, normalize_scoring={not args.unnormalized}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    rss_before = _peak_rss_mib()
    # The first call pays one-off costs (lazy library loading, first allocations): not counted.
    start = time.perf_counter()
    textspan(_random_head(args, gen), bank, texts, m=args.m)
    warmup = time.perf_counter() - start

    seconds, ranks, explained = [], [], []
    for _ in range(args.heads):
        head = _random_head(args, gen)
        start = time.perf_counter()
        result = textspan(head, bank, texts, m=args.m, normalize_scoring=not args.unnormalized)
        seconds.append(time.perf_counter() - start)
        ranks.append(result.rank)
        explained.append(result.variance_explained[-1].item())

    per_head = statistics.mean(seconds)
    print(f"rank found: min {min(ranks)}, max {max(ranks)}")
    print(f"variance explained after m texts: mean {statistics.mean(explained):.4f}")
    print(
        f"seconds per head: mean {per_head:.3f}, median {statistics.median(seconds):.3f}, "
        f"min {min(seconds):.3f}, max {max(seconds):.3f}"
    )
    print(f"total seconds (textspan only): {sum(seconds):.2f} (+ {warmup:.2f} warm-up call)")
    print(f"peak RSS: {_peak_rss_mib():.0f} MiB (before the heads: {rss_before:.0f} MiB)")
    print(
        f"goal: < {GOAL_SECONDS_PER_HEAD:g} s per head; measured/goal = "
        f"{per_head / GOAL_SECONDS_PER_HEAD:.2f}"
    )
    if args.cache_pass_images:
        # The pass that feeds TextSpan: cache_decomposition against plain encode_image.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from cache_pass import GOAL, measure

        result = measure(args.cache_model, args.cache_pass_images, batch=16)
        print(f"cache pass ({args.cache_model}, {args.cache_pass_images} images): "
              f"{result['cache pass']:.2f} s vs encode_image {result['encode_image']:.2f} s, "
              f"ratio {result['ratio']:.2f} (goal <= {GOAL})")


if __name__ == "__main__":
    main()
