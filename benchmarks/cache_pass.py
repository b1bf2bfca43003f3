"""Throughput of a cache pass (``cache_decomposition``) relative to plain ``encode_image``.

Both read the same images in the same batches; the cache pass decomposes every head of every
layer and writes fp16 memory-mapped arrays. Goal: at most 1.2x the time of ``encode_image``.

    python benchmarks/cache_pass.py --model ViT-B-16 --images 96 --batch 16
"""

from __future__ import annotations

import argparse
import tempfile
import time

GOAL = 1.2


def measure(model: str = "ViT-B-16", images: int = 96, batch: int = 16) -> dict[str, float]:
    """Seconds for ``encode_image`` and for the cache pass over the same random images."""
    import torch

    import captum_clipspan as cs

    torch.manual_seed(0)
    clip = cs.HookedCLIP.from_pretrained(model, pretrained=None)
    data = torch.randn(images, 3, *clip.visual.image_size)
    with torch.no_grad():
        clip.model.encode_image(data[:batch])  # warm-up
        start = time.perf_counter()
        for index in range(0, images, batch):
            clip.model.encode_image(data[index:index + batch])
        encode = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        cs.cache_decomposition(clip, data, f"{folder}/cache", batch_size=batch,
                               show_progress=False)
        cache = time.perf_counter() - start
    return {"encode_image": encode, "cache pass": cache, "ratio": cache / encode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    result = measure(args.model, args.images, args.batch)
    print(f"{args.model}, random weights, {args.images} images, batch {args.batch}, fp32, CPU")
    print(f"encode_image: {result['encode_image']:.2f} s "
          f"({args.images / result['encode_image']:.1f} img/s)")
    print(f"cache pass:   {result['cache pass']:.2f} s "
          f"({args.images / result['cache pass']:.1f} img/s)")
    print(f"ratio: {result['ratio']:.2f} (goal <= {GOAL})")


if __name__ == "__main__":
    main()
