"""Throughput of a cache pass (``cache_decomposition``) relative to plain ``encode_image``.

Both read the same random images through the same DataLoader (same batches, workers and
pinning); the cache pass decomposes every head of every layer and writes fp16 memory-mapped
arrays. With ``--nproc 1 2`` each setting runs in that many processes under torch.distributed
(gloo on CPU, NCCL on CUDA, one GPU each); every process reads its share of the batches, and the
time is the slowest process's. Peak memory is the largest process's peak resident set above its
level before the loop (and the CUDA peak on a GPU). Goal: at most 1.1x the time of
``encode_image``.

    python benchmarks/cache_pass.py --model ViT-B-32 --images 32 --nproc 1 2
    python benchmarks/cache_pass.py --device cuda --precision bf16 --images 4096 --batch 256 \\
        --num-workers 8 --nproc 1 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decomposition import _resident_kib  # noqa: E402

GOAL = 1.1
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _timed(work, device) -> dict[str, float]:
    """Seconds (after a barrier, until every process is done) and peak memory of ``work()``."""
    import torch
    import torch.distributed as dist

    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak-RSS high-water mark
    before = _resident_kib("VmRSS:")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    dist.barrier()
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    dist.barrier()
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return {"seconds": seconds, "peak_mib": max(_resident_kib("VmHWM:") - before, 0) / 1024,
            "cuda_peak_mib": cuda}


def _process(rank: int, nproc: int, folder: str, settings: dict) -> None:
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, Subset, TensorDataset

    import captum_clipspan as cs

    cuda = settings["device"] == "cuda"
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    torch.set_num_threads(settings["threads"])
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{folder}/store",
                            rank=rank, world_size=nproc, timeout=datetime.timedelta(minutes=10))
    torch.manual_seed(0)
    clip = cs.HookedCLIP.from_pretrained(settings["model"], pretrained=None, device=device)
    clip.model.to(getattr(torch, DTYPES[settings["precision"]]))
    images, batch = settings["images"], settings["batch"]
    data = TensorDataset(torch.randn(images, 3, *clip.visual.image_size,
                                     generator=torch.Generator().manual_seed(0)))
    starts = list(range(0, images, batch))  # the batches a cache pass shares out, in order
    mine = starts[rank * len(starts) // nproc:(rank + 1) * len(starts) // nproc]
    rows = [row for start in mine for row in range(start, min(start + batch, images))]
    loader = DataLoader(Subset(data, rows), batch_size=batch, pin_memory=cuda,
                        num_workers=settings["num_workers"])

    def encode() -> None:
        with torch.no_grad():
            for (chunk,) in loader:
                clip.model.encode_image(chunk.to(device, clip.dtype, non_blocking=True))

    def cache() -> None:
        cs.cache_decomposition(clip, data, f"{folder}/cache", batch_size=batch,
                               num_workers=settings["num_workers"], show_progress=False)

    warm = data.tensors[0][:batch].to(device, clip.dtype)
    with torch.no_grad():
        clip.model.encode_image(warm)
        cs.decompose(clip, warm, granularity="head")
    result = {"encode_image": _timed(encode, device), "cache pass": _timed(cache, device)}
    Path(f"{folder}/result{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def measure(model: str = "ViT-B-16", images: int = 96, batch: int = 16, nproc: int = 1,
            num_workers: int = 0, precision: str = "fp32", device: str = "cpu"
            ) -> dict[str, float]:
    """Seconds for ``encode_image`` and for the cache pass over the same images and loader, in
    ``nproc`` processes (the slowest one's), their ratio and peak memory."""
    import torch.multiprocessing as mp

    cores = len(os.sched_getaffinity(0))
    settings = {"model": model, "images": images, "batch": batch, "num_workers": num_workers,
                "precision": precision, "device": device, "threads": max(1, cores // nproc)}
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_process, args=(nproc, folder, settings), nprocs=nproc,
                           start_method="spawn")
        ranks = [json.loads(Path(f"{folder}/result{rank}.json").read_text())
                 for rank in range(nproc)]
    result: dict[str, float] = {}
    for name in ("encode_image", "cache pass"):
        result[name] = max(rank[name]["seconds"] for rank in ranks)
        result[f"{name} peak MiB"] = max(rank[name]["peak_mib"] for rank in ranks)
        result[f"{name} CUDA peak MiB"] = max(rank[name]["cuda_peak_mib"] for rank in ranks)
    result["ratio"] = result["cache pass"] / result["encode_image"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2],
                        help="process counts to measure (default: 1 2)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    print(f"{args.model}, random weights, {args.images} images, batch {args.batch}, "
          f"{args.precision}, {args.device}, {args.num_workers} loader workers, "
          f"{len(os.sched_getaffinity(0))} CPU cores")
    cuda = " (CUDA MiB)" if args.device == "cuda" else ""
    print(f"{'processes':>9} {'encode_image img/s':>19} {'cache pass img/s':>17} {'ratio':>6} "
          f"{'peak extra MiB, encode / cache' + cuda:>31}")
    for nproc in args.nproc:
        result = measure(args.model, args.images, args.batch, nproc, args.num_workers,
                         args.precision, args.device)
        peak = (f"{result['encode_image peak MiB']:.0f} / {result['cache pass peak MiB']:.0f}")
        if cuda:
            peak += (f" ({result['encode_image CUDA peak MiB']:.0f} / "
                     f"{result['cache pass CUDA peak MiB']:.0f})")
        print(f"{nproc:>9} {args.images / result['encode_image']:>13.1f} "
              f"({result['encode_image']:.2f} s) {args.images / result['cache pass']:>9.1f} "
              f"({result['cache pass']:.2f} s) {result['ratio']:>6.2f} {peak:>31}")
    print(f"goal: ratio <= {GOAL}")


if __name__ == "__main__":
    main()
