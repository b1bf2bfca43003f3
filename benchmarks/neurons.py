"""Cost of every neuron's second-order effect of one MLP layer, relative to ``encode_image``.

ViT-B-32 with random weights, layer 9 (3,072 neurons), batch 8, fp32 on CPU (defaults), the
project's method (``benchmarks/decomposition.py``): each mode runs in its own process; time is the
median of ``--repeats`` runs after a warm-up, each followed by a plain ``encode_image`` in the same
process (the ratio is the median of the pairs' ratios), and memory is the peak resident set
*added* by a call after the warm-up. The one-time build of the neuron maps (each later head's
value path folded with the readout, kept per model) is timed apart: the first call minus a
steady one.

    python benchmarks/neurons.py        # goals: texts <= 1.5x, joint <= 3x, fit <= 2 GiB

Modes: ``encode`` (open_clip's ``encode_image``), ``texts`` (``second_order(..., texts=T)``,
``[B, 3072, T]``), ``joint`` (``second_order(...)``, ``[B, 3072, 512]``), ``fit``
(``NeuronLens.fit`` on ``--fit-images`` random images with a ``--texts`` bank: peak extra memory,
which is bounded by the ``[n, k, E]`` top-k whatever the number of images).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decomposition import _resident_kib  # noqa: E402  (the benchmarks' one memory reader)

GOALS = {"texts": 1.5, "joint": 3.0}
FIT_GOAL_MIB = 2048


def _reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak-RSS high-water mark
    return _resident_kib("VmRSS:")


def run_mode(args: argparse.Namespace) -> dict:
    import torch

    import captum_clipspan as cs

    torch.manual_seed(0)
    clip = cs.HookedCLIP.from_pretrained(args.model, pretrained=None)
    images = torch.randn(args.batch, 3, *clip.visual.image_size)
    texts = torch.nn.functional.normalize(torch.randn(args.texts, clip.embed_dim), dim=-1)
    if args.mode == "fit":
        return _fit(args, clip, texts)
    calls = {
        "encode": lambda: clip.model.encode_image(images),
        "texts": lambda: cs.second_order(clip, images, args.layer, texts=texts),
        "joint": lambda: cs.second_order(clip, images, args.layer),
    }
    call, encode = calls[args.mode], calls["encode"]
    with torch.no_grad():
        start = time.perf_counter()
        call()  # builds and keeps the neuron maps
        first = time.perf_counter() - start
        before = _reset_peak()
        call()
        peak = _resident_kib("VmHWM:")
        times, ratios = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            call()
            middle = time.perf_counter()
            encode()
            end = time.perf_counter()
            times.append(middle - start)
            ratios.append((middle - start) / (end - middle))
    seconds = statistics.median(times)
    return {"seconds": seconds, "ratio": statistics.median(ratios),
            "peak_extra_mib": max(peak - before, 0) / 1024,
            "map_build_seconds": max(first - seconds, 0.0) if args.mode != "encode"
            else float("nan")}


def _fit(args: argparse.Namespace, clip, texts) -> dict:
    import torch

    import captum_clipspan as cs

    images = torch.randn(args.fit_images, 3, *clip.visual.image_size)
    lens = cs.NeuronLens(clip, args.layer, bank=[f"text {i}" for i in range(args.texts)],
                         text_embeddings=texts, n_components=min(32, args.texts))
    before = _reset_peak()
    start = time.perf_counter()
    lens.fit(images, batch_size=args.batch, show_progress=False)
    seconds = time.perf_counter() - start
    peak = _resident_kib("VmHWM:")
    return {"seconds": seconds, "ratio": float("nan"),
            "peak_extra_mib": max(peak - before, 0) / 1024, "map_build_seconds": float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit-images", type=int, default=64)
    parser.add_argument("--modes", nargs="+", default=["encode", "texts", "joint", "fit"])
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    results = {}
    for mode in args.modes:
        command = [sys.executable, __file__, "--mode", mode, "--model", args.model,
                   "--layer", str(args.layer), "--batch", str(args.batch),
                   "--texts", str(args.texts), "--repeats", str(args.repeats),
                   "--fit-images", str(args.fit_images)]
        output = subprocess.run(command, check=True, capture_output=True, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
    print(f"{args.model}, random weights, MLP layer {args.layer}, every neuron, batch "
          f"{args.batch}, {args.texts} texts, fp32, CPU, {os.cpu_count()} cores, median of "
          f"{args.repeats}")
    print(f"{'mode':<8}{'seconds':>10}{'ratio':>8}{'goal':>8}{'peak extra MiB':>17}"
          f"{'map build s':>13}")
    for mode, result in results.items():
        goal = (f"{GOALS[mode]:.2f}" if mode in GOALS
                else f"{FIT_GOAL_MIB} MiB" if mode == "fit" else "-")
        ratio = "-" if result["ratio"] != result["ratio"] else f"{result['ratio']:.2f}"
        build = ("-" if result["map_build_seconds"] != result["map_build_seconds"]
                 else f"{result['map_build_seconds']:.2f}")
        print(f"{mode:<8}{result['seconds']:>10.3f}{ratio:>8}{goal:>8}"
              f"{result['peak_extra_mib']:>17.1f}{build:>13}")
    if "fit" in results:
        print(f"(fit: {args.fit_images} images, two passes, top-k 100, 32 texts)")


if __name__ == "__main__":
    main()
