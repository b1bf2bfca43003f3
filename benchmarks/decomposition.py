"""Cost of the decomposition relative to a plain ``encode_image``, per tower family.

One configuration per family, random weights (``pretrained=None``; the transformers towers are
built from ViT-B/16-sized configs in code), batch 8, fp32, on the CPU by default. Each mode runs
in its own process: after a warm-up, ``--repeats`` pairs of the call and the backend's own
``encode_image`` in the same process, every other pair in the other order; the ratio is the
median of the pairs' ratios (robust to other jobs on the machine), with its quartiles in
parentheses. The ``control`` row times ``encode_image`` against itself: how far
from 1.00 it lands is the noise of the measurement. Memory is the peak added by one call: the
resident set's high-water mark (reset after loading, via clear_refs) on the CPU, the allocator's
peak on CUDA. ``tokens`` is ``granularity="token"`` without texts, whose output
``[B, L, N, H, E]`` is large: its memory is reported beyond that output.

    python benchmarks/decomposition.py --family all    # the cross-family table (Markdown)
    python benchmarks/decomposition.py --family SigLIP --device cuda
    python benchmarks/decomposition.py --model ViT-L-14          # any open_clip model name

Goals: heads <= 1.05x, 16-text patch maps <= 1.3x, tokens <= 1.5 GiB beyond the output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

GOALS = {"heads": 1.05, "patches": 1.3}
TOKEN_GOAL_GIB = 1.5
MODES = ("control", "layers", "heads", "patches", "tokens")
OPEN_CLIP_FAMILIES = {
    "ViT-B-16": "ViT-B-16",
    "CoCa": "coca_ViT-B-32",
    "SigLIP": "ViT-B-16-SigLIP",
    "SigLIP2": "ViT-B-16-SigLIP2",
    "PE-Core": "PE-Core-B-16",
    "EVA02": "EVA02-B-16",
    "MobileCLIP-B": "MobileCLIP-B",
}
TRANSFORMERS_FAMILIES = {"hf-CLIP": "clip", "hf-SigLIP": "siglip"}
FAMILIES = (*OPEN_CLIP_FAMILIES, *TRANSFORMERS_FAMILIES)
DTYPES = ("fp32", "bf16", "fp16")
# ViT-B/16 at 224 px (openai/clip-vit-base-patch16, google/siglip-base-patch16-224); a small text
# tower, which the image benchmark never runs.
VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, image_size=224, patch_size=16)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
            vocab_size=1000, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
            pad_token_id=1)


def _resident_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def build(family: str | None, model: str | None, device: str, dtype: str) -> tuple[Any, Any]:
    """``(clip, encode)``: the hooked model and the backend's own ``encode_image``."""
    import torch
    import transformers

    import captum_clipspan as cs

    torch.manual_seed(0)
    if family in TRANSFORMERS_FAMILIES:
        if TRANSFORMERS_FAMILIES[family] == "clip":
            config = transformers.CLIPConfig(text_config=TEXT, projection_dim=512,
                                             vision_config=dict(VISION, hidden_act="quick_gelu"))
            model_ = transformers.CLIPModel(config)
        else:
            config = transformers.SiglipConfig(text_config=dict(TEXT, projection_size=768),
                                               vision_config=VISION)
            model_ = transformers.SiglipModel(config)
        model_ = model_.eval().to(device=device, dtype=_torch_dtype(dtype))
        clip = cs.HookedCLIP.from_transformers(model_)
        return clip, lambda images: model_.get_image_features(pixel_values=images)
    name = OPEN_CLIP_FAMILIES.get(family, model)
    clip = cs.HookedCLIP.from_pretrained(name, pretrained=None, device=device,
                                         precision=_torch_dtype(dtype))
    return clip.eval(), lambda images: clip.model.encode_image(images)


def cpu_family_benchmark(description: str, batch: int, threads: int,
                         repeats: int) -> tuple[argparse.ArgumentParser, Any]:
    """The options shared by the single-family CPU benchmarks (``--family``, ``--batch``,
    ``--threads``, ``--repeats``), and ``setup(args)`` -> ``(clip, encode, images)``: the family's
    model (fp32) with the thread count set, and ``--batch`` random images."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=FAMILIES, default="SigLIP")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--repeats", type=int, default=repeats)

    def setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
        import torch

        torch.set_num_threads(args.threads)
        clip, encode = build(args.family, None, "cpu", "fp32")
        images = torch.randn(args.batch, 3, *clip.visual.image_size,
                             generator=torch.Generator().manual_seed(0))
        return clip, encode, images

    return parser, setup


class _Meter:
    """Peak memory added by a call: the allocator's on CUDA, the resident set's on the CPU."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device.startswith("cuda")
        self.torch = torch

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset(self) -> int:
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
            return self.torch.cuda.memory_allocated()
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset the peak-RSS high-water mark
        return _resident_kib("VmRSS:") * 1024

    def peak(self) -> int:
        self.sync()
        if self.cuda:
            return self.torch.cuda.max_memory_allocated()
        return _resident_kib("VmHWM:") * 1024


def run_mode(args: argparse.Namespace) -> dict:
    import torch

    import captum_clipspan as cs

    clip, encode_image = build(args.family, args.model, args.device, args.dtype)
    vit = clip.visual
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, *vit.image_size, generator=generator).to(
        device=args.device, dtype=vit.dtype)
    texts = torch.nn.functional.normalize(
        torch.randn(args.texts, vit.output_dim, generator=generator), dim=-1).to(args.device)
    maps = cs.PatchContribution(clip)
    output = {}

    def tokens() -> None:
        parts = cs.decompose(clip, images, granularity="token")
        output["bytes"] = parts.tokens.numel() * parts.tokens.element_size()

    calls = {
        "control": lambda: encode_image(images),
        "layers": lambda: cs.decompose(clip, images, granularity="layer"),
        "heads": lambda: cs.decompose(clip, images, granularity="head"),
        "patches": lambda: maps.attribute(images, texts=texts),
        "tokens": tokens,
    }
    call, meter = calls[args.mode], _Meter(args.device)
    with torch.no_grad():
        call()
        encode_image(images)
        output.clear()
        before = meter.reset()
        call()
        extra = max(meter.peak() - before, 0) - output.get("bytes", 0)
        # Interleave the call with a plain encode_image in the same process, so that the ratio
        # holds even when other jobs load the machine unevenly over time; every other pair runs
        # encode_image first, so that neither side always finds the memory the other just freed.
        pair = {"call": call, "encode_image": lambda: encode_image(images)}
        times, ratios = [], []
        for repeat in range(args.repeats):
            seconds = {}
            for name in (pair if repeat % 2 == 0 else reversed(pair)):
                meter.sync()
                start = time.perf_counter()
                pair[name]()
                meter.sync()
                seconds[name] = time.perf_counter() - start
            times.append(seconds["call"])
            ratios.append(seconds["call"] / seconds["encode_image"])
    low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios * 3)
    return {"seconds": statistics.median(times), "ratio": statistics.median(ratios),
            "quartiles": [low, high], "extra_mib": extra / 2 ** 20,
            "output_mib": output.get("bytes", 0) / 2 ** 20}


def measure(args: argparse.Namespace, family: str | None, mode: str) -> dict:
    """Run one mode in a fresh process (so that its memory peak is its own)."""
    command = [sys.executable, __file__, "--mode", mode, "--batch", str(args.batch),
               "--texts", str(args.texts), "--repeats", str(args.repeats),
               "--device", args.device, "--dtype", args.dtype]
    command += ["--family", family] if family else ["--model", args.model]
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        raise RuntimeError(f"{family or args.model} {mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _row(name: str, results: dict[str, dict], batch: int) -> str:
    def ratio(mode: str) -> str:
        value, (low, high) = results[mode]["ratio"], results[mode]["quartiles"]
        return (f"{value:.2f} ({low:.2f}-{high:.2f})"
                + ("" if value <= GOALS.get(mode, float("inf")) else " (!)"))

    tokens_gib = results["tokens"]["extra_mib"] / 1024
    cells = [
        name,
        f"{results['control']['seconds']:.3f}",
        ratio("control"),
        ratio("layers"),
        ratio("heads"),
        ratio("patches"),
        f"{batch / results['patches']['seconds']:.1f}",
        f"{results['heads']['extra_mib']:.0f} / {results['patches']['extra_mib']:.0f}",
        f"{tokens_gib:.2f}" + ("" if tokens_gib <= TOKEN_GOAL_GIB else " (!)"),
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", help=f"one of {', '.join(FAMILIES)}, or 'all'")
    parser.add_argument("--model", default="ViT-B-16",
                        help="an open_clip model name (when --family is not given)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="fp32", choices=DTYPES)
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated subset of {', '.join(MODES)}")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.family not in (None, "all", *FAMILIES):
        parser.error(f"--family must be one of {', '.join(FAMILIES)} or 'all', "
                     f"got {args.family!r}.")
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    families = FAMILIES if args.family == "all" else [args.family]
    modes = args.modes.split(",")
    import torch

    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else (
        f"CPU, {os.cpu_count()} cores, {threads} threads")
    print(f"random weights, batch {args.batch}, {args.dtype}, {where}, {args.texts} texts, "
          f"median (quartiles) of {args.repeats} interleaved pairs, the order alternating; "
          f"ratios to the backend's encode_image "
          f"(goals: heads <= {GOALS['heads']}, patches <= {GOALS['patches']}, tokens <= "
          f"{TOKEN_GOAL_GIB} GiB beyond the output; (!) marks a miss)\n")
    print("| family | encode_image s | control | layers | heads | patch maps | patch maps img/s "
          "| peak extra MiB heads / patches | tokens GiB beyond output |")
    print("|---|---|---|---|---|---|---|---|---|")
    for family in families:
        results = {mode: measure(args, family, mode) for mode in modes}
        if set(results) == set(MODES):
            print(_row(family or args.model, results, args.batch), flush=True)
        else:
            print(family or args.model, json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
