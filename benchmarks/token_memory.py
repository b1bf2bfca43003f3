"""Peak memory of token-granularity decomposition beyond the tensor it returns.

ViT-B-16 with random weights, batch 64, fp32 on CPU (defaults). Each mode runs in its own
process; memory is the peak resident set added by the call (the kernel's high-water mark is reset
after loading the model and the images, via clear_refs).

    python benchmarks/token_memory.py        # goals: whole call <= 1.5 GiB beyond its output,
                                             #        streamed in chunks of 8 <= 1.5 GiB in all

Modes: ``whole`` (``decompose(granularity="token")`` on the whole batch), ``stream``
(``decompose_batches(..., 8, granularity="token")``, each chunk reduced to patch maps on 16 texts
and dropped), ``encode`` (a plain ``encode_image`` of the batch, for reference).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decomposition import _resident_kib  # noqa: E402

GIB = 1024 ** 3


def run_mode(args: argparse.Namespace) -> dict:
    import torch

    import captum_clipspan as cs

    torch.manual_seed(0)
    clip = cs.HookedCLIP.from_pretrained(args.model, pretrained=None)
    images = torch.randn(args.batch, 3, *clip.visual.image_size)
    texts = torch.nn.functional.normalize(torch.randn(16, clip.embed_dim), dim=-1)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = _resident_kib("VmRSS:") * 1024
    start = time.perf_counter()
    output_bytes = 0
    with torch.no_grad():
        if args.mode == "encode":
            clip.model.encode_image(images)
        elif args.mode == "whole":
            tokens = cs.decompose(clip, images, granularity="token").tokens
            output_bytes = tokens.numel() * tokens.element_size()
        else:
            for parts in cs.decompose_batches(clip, images, args.chunk, granularity="token"):
                parts.tokens.sum(dim=(1, 3)) @ texts.T
    seconds = time.perf_counter() - start
    peak = _resident_kib("VmHWM:") * 1024
    extra = max(peak - before, 0)
    return {"seconds": seconds, "peak_extra_gib": extra / GIB, "output_gib": output_bytes / GIB,
            "beyond_output_gib": (extra - output_bytes) / GIB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    print(f"{args.model}, random weights, batch {args.batch}, fp32, CPU, {os.cpu_count()} cores")
    print(f"{'mode':<8}{'seconds':>9}{'peak extra GiB':>16}{'output GiB':>12}"
          f"{'beyond output GiB':>19}")
    for mode in ["encode", "whole", "stream"]:
        command = [sys.executable, __file__, "--mode", mode, "--model", args.model,
                   "--batch", str(args.batch), "--chunk", str(args.chunk)]
        output = subprocess.run(command, check=True, capture_output=True, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout
        r = json.loads(output.strip().splitlines()[-1])
        print(f"{mode:<8}{r['seconds']:>9.1f}{r['peak_extra_gib']:>16.2f}{r['output_gib']:>12.2f}"
              f"{r['beyond_output_gib']:>19.2f}")


if __name__ == "__main__":
    main()
