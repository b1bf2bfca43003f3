"""Where head granularity spends its time beyond ``encode_image``: ``torch.profiler`` tables of
``encode_image``, ``decompose(granularity="layer")`` and ``decompose(granularity="head")`` on one
tower family of ``benchmarks/decomposition.py`` (random weights); with ``--phases``, the medians
of the phases of ``decompose(granularity="head")`` over interleaved calls instead: the hooked
tower's pass with the decomposition's hooks, the assembly of the terms after it, and the rest
(checks, weights), next to the hooked tower's pass without hooks, each as a share of
``encode_image``.

Usage::

    python benchmarks/profile_heads.py --family SigLIP --batch 4 --threads 1
    python benchmarks/profile_heads.py --family SigLIP --batch 8 --threads 2 --phases --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decomposition import cpu_family_benchmark  # noqa: E402

import captum_clipspan as cs  # noqa: E402
from captum_clipspan.decomposition import core  # noqa: E402


def main() -> None:
    parser, setup = cpu_family_benchmark(__doc__, 4, 1, 3)
    parser.add_argument("--rows", type=int, default=12, help="operators per table")
    parser.add_argument("--phases", action="store_true",
                        help="time the phases of head granularity instead of profiling")
    args = parser.parse_args()
    clip, encode, images = setup(args)
    if args.phases:
        phases(clip, encode, images, args)
        return
    calls = {"encode_image": lambda: encode(images),
             "layers": lambda: cs.decompose(clip, images, granularity="layer"),
             "heads": lambda: cs.decompose(clip, images, granularity="head")}
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for call in calls.values():  # warm up: first calls build caches and allocate
            call()
        for name, call in calls.items():
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                for _ in range(args.repeats):
                    call()
            print(f"== {args.family}: {name}, {args.repeats} calls of batch {args.batch}")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total",
                                                row_limit=args.rows))


def phases(clip, encode, images: torch.Tensor, args: argparse.Namespace) -> None:
    """Median seconds per phase of ``decompose(granularity="head")``, as shares of
    ``encode_image`` timed in the same rounds."""
    vit = clip.visual
    tower_call, assemble = type(vit).__call__, core._assemble
    seconds: dict[str, list[float]] = {}

    def timed(name: str, function):
        def wrapper(*arguments, **options):
            start = time.perf_counter()
            try:
                return function(*arguments, **options)
            finally:
                seconds.setdefault(name, []).append(time.perf_counter() - start)
        return wrapper

    def heads() -> None:
        type(vit).__call__ = timed("pass with the hooks", tower_call)
        core._assemble = timed("assembly", assemble)
        try:
            timed("decompose, whole", cs.decompose)(clip, images, granularity="head")
        finally:
            type(vit).__call__, core._assemble = tower_call, assemble

    calls = {"encode_image": timed("encode_image", lambda: encode(images)),
             "hooked pass, no hooks": timed("hooked pass, no hooks", lambda: vit(images)),
             "heads": heads}
    with torch.no_grad():
        for call in calls.values():
            call()
        seconds.clear()
        for repeat in range(args.repeats):
            for name in (list(calls) if repeat % 2 == 0 else list(calls)[::-1]):
                calls[name]()
    base = statistics.median(seconds["encode_image"])
    whole = seconds["decompose, whole"]
    seconds["rest (checks, weights)"] = [
        total - tower - assembly for total, tower, assembly in zip(
            whole, seconds["pass with the hooks"], seconds["assembly"], strict=True)]
    print(f"== {args.family}: batch {len(images)}, {args.threads} threads, medians of "
          f"{args.repeats} rounds, as shares of encode_image ({base:.3f} s)")
    for name, values in seconds.items():
        print(f"  {name:26s} {statistics.median(values) / base:7.3f}")


if __name__ == "__main__":
    main()
