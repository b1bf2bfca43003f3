"""Where head granularity spends its time beyond ``encode_image``: ``torch.profiler`` tables of
``encode_image``, ``decompose(granularity="layer")`` and ``decompose(granularity="head")`` on one
tower family of ``benchmarks/decomposition.py`` (random weights).

Usage::

    python benchmarks/profile_heads.py --family SigLIP --batch 4 --threads 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decomposition import FAMILIES, build  # noqa: E402

import captum_clipspan as cs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=FAMILIES, default="SigLIP")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=12, help="operators per table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clip, encode = build(args.family, None, "cpu", "fp32")
    images = torch.randn(args.batch, 3, *clip.visual.image_size,
                         generator=torch.Generator().manual_seed(0))
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


if __name__ == "__main__":
    main()
