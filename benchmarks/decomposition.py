"""Cost of the decomposition relative to a plain ``encode_image``.

ViT-B-16 with random weights, batch 8, fp32 on CPU (defaults). Each mode runs in its own process;
time is the median of ``--repeats`` runs after a warm-up, each followed by a plain
``encode_image`` in the same process (the ratio is the median of the pairs' ratios, robust to
other jobs on the machine), and memory is the peak resident set *added* by the call (the kernel's
high-water mark is reset after loading, via clear_refs).

    python benchmarks/decomposition.py            # goals: heads <= 1.15x, patch maps <= 1.5x

Modes: ``encode`` (open_clip's ``encode_image``), ``heads`` (``decompose(granularity="head")``),
``patches`` (per-patch maps of all layers projected on ``--texts`` texts, as
``PatchContribution`` computes them), ``layers`` (``granularity="layer"``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GOALS = {"heads": 1.15, "patches": 1.5}


def _resident_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_mode(args: argparse.Namespace) -> dict:
    import torch

    import captum_clipspan as cs

    torch.manual_seed(0)
    clip = cs.HookedCLIP.from_pretrained(args.model, pretrained=None)
    images = torch.randn(args.batch, 3, *clip.visual.image_size)
    texts = torch.nn.functional.normalize(torch.randn(args.texts, clip.embed_dim), dim=-1)
    maps = cs.PatchContribution(clip)
    calls = {
        "encode": lambda: clip.model.encode_image(images),
        "layers": lambda: cs.decompose(clip, images, granularity="layer"),
        "heads": lambda: cs.decompose(clip, images, granularity="head"),
        "patches": lambda: maps.attribute(images, texts=texts),
    }
    call, encode = calls[args.mode], calls["encode"]
    with torch.no_grad():
        call()
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset the peak-RSS high-water mark
        before = _resident_kib("VmRSS:")
        call()
        peak = _resident_kib("VmHWM:")
        # Interleave the call with a plain encode_image in the same process, so that the ratio
        # holds even when other jobs load the machine unevenly over time.
        times, ratios = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            call()
            middle = time.perf_counter()
            encode()
            end = time.perf_counter()
            times.append(middle - start)
            ratios.append((middle - start) / (end - middle))
    return {"seconds": statistics.median(times), "ratio": statistics.median(ratios),
            "peak_extra_mib": max(peak - before, 0) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    results = {}
    for mode in ["encode", "layers", "heads", "patches"]:
        command = [sys.executable, __file__, "--mode", mode, "--model", args.model,
                   "--batch", str(args.batch), "--texts", str(args.texts),
                   "--repeats", str(args.repeats)]
        output = subprocess.run(command, check=True, capture_output=True, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
    print(f"{args.model}, random weights, batch {args.batch}, fp32, CPU, "
          f"{os.cpu_count()} cores, median of {args.repeats}")
    print(f"{'mode':<10}{'seconds':>10}{'ratio':>8}{'goal':>8}{'peak extra MiB':>17}")
    for mode, result in results.items():
        ratio = result["ratio"]
        goal = f"{GOALS[mode]:.2f}" if mode in GOALS else "-"
        print(f"{mode:<10}{result['seconds']:>10.3f}{ratio:>8.2f}{goal:>8}"
              f"{result['peak_extra_mib']:>17.1f}")


if __name__ == "__main__":
    main()
