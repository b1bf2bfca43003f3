"""Size and build time of the explorer site (``captum_clipspan.explore``) for a large cache.

A toy-shaped CLIP with random weights and 8 layers x 8 heads (64 heads; 64 x 64 images, an
8 x 8 patch grid) decomposes ``--n`` synthetic scenes into a cache; TextSpan labels every head
with the toy bank. Neither is timed (they are reused from ``--work`` on a second run). Timed:
``explore`` with the model (thumbnails of what the model sees, patch maps up to
``--max-patch-maps`` and ``--few-maps`` (image, head) pairs: one decomposition pass per mapped
image, for all its heads) and without it (centre-cropped thumbnails, no maps), each into an
empty folder. Each row ends with explore's own breakdown of its time by step, and the summary
gives the machine's load average (the timings are CPU-bound). Goals: the site at most 20 MB,
built in at most 30 s.

Usage::

    python benchmarks/explorer.py                     # 10,000 images, 64 heads
    python benchmarks/explorer.py --n 2000 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch

try:
    import captum_clipspan as cs
except ImportError:  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import captum_clipspan as cs

from captum_clipspan.toy import TOY_MODEL_CONFIG, build_toy_clip, load_toy_clip, toy_bank
from captum_clipspan.toy.scenes import write_image_folder

GOAL_MB = 20.0
GOAL_SECONDS = 30.0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="images in the cache (10,000)")
    parser.add_argument("--layers", type=int, default=8, help="layers, all cached (8)")
    parser.add_argument("--heads", type=int, default=8, help="heads per layer (8)")
    parser.add_argument("--m", type=int, default=5, help="TextSpan texts per head (5)")
    parser.add_argument("--max-patch-maps", type=int, default=2000,
                        help="explore's bound on (image, head) patch maps (2000)")
    parser.add_argument("--few-maps", type=int, default=300,
                        help="a smaller bound, timed as well (300)")
    parser.add_argument("--work", default="/tmp/clipspan-explorer-benchmark",
                        help="folder for the scenes, cache and sites (reused)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    return parser.parse_args()


def _model(layers: int, heads: int) -> cs.HookedCLIP:
    """A toy-shaped CLIP with ``layers`` x ``heads`` heads of width 32 and random weights."""
    config = copy.deepcopy(TOY_MODEL_CONFIG)
    config["vision_cfg"].update(layers=layers, width=32 * heads, head_width=32)
    torch.manual_seed(0)
    _, tokenizer, preprocess = load_toy_clip()
    model = build_toy_clip(config).eval()
    return cs.HookedCLIP.from_open_clip(model, tokenizer=tokenizer, preprocess=preprocess,
                                        model_name=f"random toy-shaped {layers}x{heads}")


def _megabytes(folder: Path) -> tuple[float, int]:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return sum(path.stat().st_size for path in files) / 2**20, len(files)


def main() -> None:
    args = _parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    clip = _model(args.layers, args.heads)
    scenes = work / f"scenes-{args.n}"
    started = time.perf_counter()
    if not (scenes / "labels.csv").is_file():
        write_image_folder(scenes, args.n, seed=0, split="test")
    cache = cs.cache_decomposition(clip, scenes, work / f"cache-{args.n}-{args.layers}x"
                                   f"{args.heads}", batch_size=256, show_progress=True)
    prepared = time.perf_counter() - started
    texts, _ = toy_bank()
    started = time.perf_counter()
    report = cs.TextSpan(clip, bank=texts).fit(cache, m=args.m, show_progress=False)
    textspan_seconds = time.perf_counter() - started

    rows = []
    for name, model, limit in ((f"model, <= {args.max_patch_maps} maps", clip,
                                args.max_patch_maps),
                               (f"model, <= {args.few_maps} maps", clip, args.few_maps),
                               ("without the model", None, 0)):
        out = work / f"site-{limit}-{'model' if model is not None else 'none'}"
        shutil.rmtree(out, ignore_errors=True)  # a first build (a rebuild skips equal thumbnails)
        log = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stderr(log):  # explore's last line: its time by step
            cs.explore(cache, report, out, clip=model, max_patch_maps=limit, show_progress=True)
        seconds = time.perf_counter() - started
        megabytes, files = _megabytes(out)
        thumbs = len(list((out / "thumbs").glob("*.jpg")))
        steps = re.findall(r" s \((.*)\); open it", log.getvalue())
        rows.append((name, seconds, megabytes, files, thumbs, steps[-1] if steps else ""))

    print(f"cache: {len(cache)} images, {len(cache.layers) * cache.n_heads} heads "
          f"({len(cache.layers)} layers x {cache.n_heads}), E={cache.heads.shape[-1]}; "
          f"scenes + cache ready in {prepared:.1f} s; TextSpan (m={args.m}, "
          f"{len(texts)} texts) {textspan_seconds:.1f} s; torch threads "
          f"{torch.get_num_threads()} of {os.cpu_count()} CPUs; load average "
          f"{' '.join(f'{load:.2f}' for load in os.getloadavg())} (1, 5, 15 min)")
    print(f"{'explore':<24} {'seconds':>8} {'MB':>7} {'files':>6} {'thumbs':>7}  goals")
    for name, seconds, megabytes, files, thumbs, steps in rows:
        verdict = "ok" if seconds <= GOAL_SECONDS and megabytes <= GOAL_MB else "MISSED"
        print(f"{name:<24} {seconds:>8.1f} {megabytes:>7.2f} {files:>6} {thumbs:>7}  "
              f"{verdict} (<= {GOAL_SECONDS:.0f} s, <= {GOAL_MB:.0f} MB)")
        print(f"{'':<24} by step: {steps}")


if __name__ == "__main__":
    main()
