"""Print the shipped toy CLIP's zero-shot accuracy per attribute family on held-out scenes.

Usage::

    python scripts/eval_toy_clip.py [--n 1000] [--seed 12345]

Training draws scenes from seed 0 (``scripts/train_toy_clip.py``); the default held-out seed is
12345. For family F each scene is classified among F's values with prompts that name only that
attribute; the main number averages the accuracy of the three prompt templates, the second
column uses CLIP-style prompt ensembling.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captum_clipspan.toy.model import load_toy_clip, zero_shot_accuracy  # noqa: E402
from captum_clipspan.toy.scenes import ATTRIBUTES  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="number of held-out scenes")
    p.add_argument("--seed", type=int, default=12345, help="scene seed (training uses 0)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, tokenizer, preprocess = load_toy_clip()
    mean = zero_shot_accuracy(model, tokenizer, preprocess, n=args.n, seed=args.seed)
    ens = zero_shot_accuracy(model, tokenizer, preprocess, n=args.n, seed=args.seed, ensemble=True)
    print(f"toy CLIP zero-shot accuracy, {args.n} held-out scenes, seed {args.seed}")
    print(f"{'family':<12}{'classes':>8}{'chance':>8}{'template-mean':>15}{'ensemble':>10}")
    for family, acc in mean.items():
        k = len(ATTRIBUTES[family])
        print(f"{family:<12}{k:>8}{1 / k:>8.3f}{acc:>15.4f}{ens[family]:>10.4f}")
    print(f"{'min':<12}{'':>8}{'':>8}{min(mean.values()):>15.4f}{min(ens.values()):>10.4f}")
    print(f"({time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    main()
