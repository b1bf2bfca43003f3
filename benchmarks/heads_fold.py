"""Head granularity through an attention pool, with and without the folded head maps: each layer's
out-projection folded with the pool's value map once per weight version
(``ReadoutMap.fold_values``), against the three contractions per call it replaces. Interleaved
in one process, median of ``--repeats``, each against ``encode_image``. With ``--patches``, the
same for 16-text patch maps (``PatchContribution``, token granularity), whose head terms read the
same maps.

Usage::

    python benchmarks/heads_fold.py --family SigLIP
    python benchmarks/heads_fold.py --family CoCa
    python benchmarks/heads_fold.py --family SigLIP2 --patches
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decomposition import cpu_family_benchmark  # noqa: E402

import captum_clipspan as cs  # noqa: E402
import captum_clipspan.decomposition.core as core  # noqa: E402


def main() -> None:
    parser, setup = cpu_family_benchmark(__doc__, 8, 2, 7)
    parser.add_argument("--patches", action="store_true",
                        help="time 16-text patch maps instead of head granularity")
    args = parser.parse_args()
    clip, encode, images = setup(args)
    folded = core._head_terms

    def unfolded(*arguments, head_values=None):  # the path before the folded maps
        return folded(*arguments[:5], None)

    def seconds(call) -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    texts = torch.nn.functional.normalize(
        torch.randn(16, clip.visual.output_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    maps = cs.PatchContribution(clip)
    call = ((lambda: maps.attribute(images, texts=texts)) if args.patches
            else (lambda: cs.decompose(clip, images, granularity="head")))

    def heads(head_terms) -> float:
        core._head_terms = head_terms
        try:
            return seconds(call)
        finally:
            core._head_terms = folded

    times: dict[str, list[float]] = {"encode_image": [], "folded": [], "unfolded": []}
    with torch.no_grad():
        heads(folded), heads(unfolded), encode(images)  # warm up, build the folded maps
        for _ in range(args.repeats):
            times["encode_image"].append(seconds(lambda: encode(images)))
            times["folded"].append(heads(folded))
            times["unfolded"].append(heads(unfolded))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.family}, batch {args.batch}, {args.threads} threads, median of {args.repeats}: "
          f"encode_image {median['encode_image']:.3f} s; "
          f"{'16-text patch maps' if args.patches else 'heads'} folded {median['folded']:.3f} s "
          f"({median['folded'] / median['encode_image']:.3f}x), unfolded "
          f"{median['unfolded']:.3f} s ({median['unfolded'] / median['encode_image']:.3f}x)")


if __name__ == "__main__":
    main()
