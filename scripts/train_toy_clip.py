"""Train the toy CLIP of ``captum_clipspan.toy`` on freshly generated synthetic scenes.

Contrastive image-text training (CLIP InfoNCE, learnable logit scale) where every caption names
a random subset of the scene's attributes (half of them a single family, with prompt-like
prefixes such as "a photo of"). Each image gets ``--captions-per-image`` captions (text is cheap
next to the vision tower) and identical captions are merged. Because a caption such as "a red
object" is true of several images of a batch, the InfoNCE targets spread uniformly over every
true image-caption pair instead of the diagonal only (with one distinct caption per image this
is exactly CLIP's loss).

Two settings keep the text tower from collapsing words the image tower cannot see yet (early on,
"on the left" and "on the right" are best mapped to the same embedding, which then removes any
gradient that would teach the image tower position): the text tower stays at its random
initialisation for the first ``--freeze-text-steps`` and then learns at ``--text-lr-mult`` times
the image tower's rate. Learning rate: linear warmup, constant, cosine decay over the last
``--cooldown-frac`` of the steps; ``--time-budget`` places the decay so the run ends on time on
a shared machine and records the equivalent ``--steps/--decay-start`` for a reproduction.

Writes ``toy_clip.safetensors`` (fp16), ``toy_tokenizer.json`` and ``toy_clip.json`` (config,
training settings, held-out zero-shot accuracy per family) into ``--out-dir``. Training reads the
``"train"`` split of the scenes only (stream ``--seed``); every evaluation here reads the
``"validation"`` split, which :mod:`captum_clipspan.toy.scenes` keeps apart from stream 0's
training scenes by construction.

``--spurious P`` trains the spurious-cue toy instead: each scene's shape is one of
:data:`~captum_clipspan.toy.scenes.SPURIOUS_PAIRS` and its background texture the paired one with
probability ``P`` (:class:`~captum_clipspan.toy.scenes.SpuriousCue`), so that zero-shot shape
prediction can lean on the background; the final evaluation adds worst-group shape accuracy on
balanced groups (:mod:`captum_clipspan.toy.spurious`).

Usage::

    nohup nice -n 10 /work/venv/bin/python scripts/train_toy_clip.py --steps 20000 \
        --time-budget 45 --checkpoint /work/toy_ckpt.pt > /work/toy_train.log 2>&1 &
    python scripts/train_toy_clip.py --bench 10        # time 10 steps and exit
    python scripts/train_toy_clip.py --spurious 0.95 --lr 1e-3 --warmup 100 --steps 4800 \
        --freeze-text-steps 300 --text-lr-mult 0.2 --eval-every 600 --eval-n 320 \
        --final-eval-n 800 --out-dir captum_clipspan/toy/spurious   # spurious toy, 26 min
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from captum_clipspan.toy.model import (  # noqa: E402
    TOY_MODEL_CONFIG,
    TOY_PREPROCESS_CONFIG,
    build_toy_clip,
    toy_preprocess,
    zero_shot_accuracy,
)
from captum_clipspan.toy.scenes import (  # noqa: E402
    ATTRIBUTES,
    FAMILIES,
    PREFIXES,
    WORLDS,
    SpuriousCue,
    caption,
    make_scenes,
    sample_families,
)
from captum_clipspan.toy.tokenizer import WordTokenizer  # noqa: E402

EVAL_SEED = 12345


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="total steps (max with --time-budget)")
    p.add_argument(
        "--decay-start",
        type=int,
        default=None,
        help="step where the cosine decay starts (default: steps * (1 - cooldown-frac))",
    )
    p.add_argument("--cooldown-frac", type=float, default=0.25)
    p.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        help="minutes; start the decay at (1 - cooldown-frac) of it, with a cooldown of "
        "done * cooldown-frac / (1 - cooldown-frac) steps (the run records the resulting "
        "--steps/--decay-start, which reproduce it without a budget)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument(
        "--freeze-text-steps",
        type=int,
        default=300,
        help="keep the text tower at its random init for this many steps (its distinct "
        "random word embeddings act as fixed targets while the image tower learns)",
    )
    p.add_argument("--text-lr-mult", type=float, default=0.2, help="text tower lr factor")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--p-single", type=float, default=0.5, help="P(caption names one family)")
    p.add_argument(
        "--family-weights",
        type=str,
        default="shape=1.5,position=1.5,count=1.5,texture=1.5,size=1,color=0.5,background=0.5",
        help="relative frequency of each family in captions (slow-to-learn ones up)",
    )
    p.add_argument(
        "--p-each",
        type=float,
        default=0.5,
        help="P(a family is named) otherwise, times its weight / mean weight",
    )
    p.add_argument("--captions-per-image", type=int, default=6)
    p.add_argument(
        "--spurious",
        type=float,
        default=0.0,
        help="train on scenes whose shape and background texture co-occur with this "
        "probability (datasets.SpuriousCue; 0: independent attributes, the default toy)",
    )
    p.add_argument("--world", choices=WORLDS, default="simple",
                   help="the scenes: 'simple', or 'clutter' (distractors and confetti in the "
                   "objects' colors, scenes.WORLDS)")
    p.add_argument("--layers", type=int, default=None,
                   help="vision layers (default: TOY_MODEL_CONFIG's 4)")
    p.add_argument("--heads", type=int, default=None,
                   help="vision heads per layer at the config's width (default: 4)")
    p.add_argument("--amp", choices=("none", "bf16"), default="bf16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-n", type=int, default=500)
    p.add_argument("--final-eval-n", type=int, default=1000)
    p.add_argument("--out-dir", type=Path, default=REPO / "captum_clipspan" / "toy")
    p.add_argument("--checkpoint", type=Path, default=None, help="resumable state file")
    p.add_argument("--bench", type=int, default=0, help="time this many steps and exit")
    return p.parse_args()


def model_config(args: argparse.Namespace) -> dict:
    """TOY_MODEL_CONFIG with ``--layers`` and ``--heads`` (head width = width / heads)."""
    config = copy.deepcopy(TOY_MODEL_CONFIG)
    vision = config["vision_cfg"]
    if args.layers is not None:
        vision["layers"] = args.layers
    if args.heads is not None:
        if vision["width"] % args.heads:
            raise SystemExit(f"--heads {args.heads} does not divide the width {vision['width']}")
        vision["head_width"] = vision["width"] // args.heads
    return config


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warmup, constant until ``args.decay_start``, cosine decay to ``min_lr`` at the end."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.decay_start is None or step < args.decay_start:
        return args.lr
    t = (step - args.decay_start) / max(1, args.steps - args.decay_start)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def make_batch(step: int, args: argparse.Namespace, rng: np.random.Generator, tokenizer):
    """Scenes of this step plus ``--captions-per-image`` captions each, deduplicated.

    Returns images ``[B, 3, 64, 64]``, tokens ``[C, L]`` of the C distinct captions, and the
    bool matrix ``match [C, B]``: every attribute caption c names holds for image i.
    """
    cue = SpuriousCue(p=args.spurious) if args.spurious else None
    # The train split only: validation and test scenes are other indices of stream 0 (scenes.py).
    scenes = make_scenes(args.batch_size, seed=args.seed, start=step * args.batch_size,
                         split="train", spurious=cue, world=args.world)
    labels = np.stack([scenes.labels(f) for f in FAMILIES], axis=1)  # [B, F]
    texts: dict[str, tuple[int, np.ndarray]] = {}
    for i, attrs in enumerate(scenes.attributes):
        for _ in range(args.captions_per_image):
            fams = sample_families(rng, args.p_single, args.p_each_map, args.weights)
            text = caption(attrs, families=fams, prefix=PREFIXES[rng.integers(len(PREFIXES))])
            named = np.zeros(len(FAMILIES), dtype=bool)
            named[[FAMILIES.index(f) for f in fams]] = True
            texts.setdefault(text, (i, named))
    owner = np.array([i for i, _ in texts.values()])
    named = np.stack([m for _, m in texts.values()])  # [C, F]
    same = labels[owner][:, None, :] == labels[None, :, :]  # [C, B, F]
    match = (same | ~named[:, None, :]).all(-1)
    images = toy_preprocess(scenes.tensors())
    return images, tokenizer(list(texts)), torch.from_numpy(match), list(texts)


def contrastive_loss(img, txt, logit_scale, match) -> torch.Tensor:
    """Symmetric CLIP InfoNCE whose targets spread uniformly over all true pairs.

    With one distinct caption per image, ``match`` is the identity and this is plain InfoNCE.
    """
    logits = logit_scale * img @ txt.T  # [images, captions]
    m = match.T.float()  # [images, captions]
    t_i2t = m / m.sum(1, keepdim=True)
    t_t2i = m.T / m.T.sum(1, keepdim=True)
    loss_i = -(t_i2t * F.log_softmax(logits, 1)).sum(1).mean()
    loss_t = -(t_t2i * F.log_softmax(logits.T, 1)).sum(1).mean()
    return 0.5 * (loss_i + loss_t)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: (vision+scale | text) x (decay | no decay); ``text`` marks the text tower."""
    groups = {(t, d): [] for t in (False, True) for d in (False, True)}
    for name, p in model.named_parameters():
        text = not name.startswith("visual.") and name != "logit_scale"
        skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name or ".ln" in name
        groups[(text, not skip)].append(p)
    return [
        {"params": ps, "weight_decay": weight_decay if d else 0.0, "text": t}
        for (t, d), ps in groups.items()
        if ps
    ]


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line that replays this run step for step, without a time budget."""
    skip = {"--time-budget", "--steps", "--decay-start", "--checkpoint"}
    argv, kept = sys.argv[1:], []
    i = 0
    while i < len(argv):
        name = argv[i].split("=")[0]
        if name in skip:
            i += 1 if "=" in argv[i] else 2
            continue
        kept.append(argv[i])
        i += 1
    kept += ["--steps", str(args.steps), "--decay-start", str(args.decay_start)]
    return "python scripts/train_toy_clip.py " + " ".join(kept)


def evaluate(model, tokenizer, n: int, spurious: bool = False,
             world: str = "simple") -> dict[str, float]:
    model.eval()
    acc = zero_shot_accuracy(model, tokenizer, toy_preprocess, n=n, seed=EVAL_SEED, world=world)
    if spurious:
        from captum_clipspan.toy.spurious import group_shape_accuracy

        acc.update(group_shape_accuracy(model, tokenizer, n_per_group=max(1, n // 16),
                                        world=world))
    model.train()
    return acc


def fmt(acc: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in acc.items())


def main() -> None:
    args = parse_args()
    pairs = (kv.split("=") for kv in args.family_weights.split(","))
    args.weights = {k: float(v) for k, v in pairs}
    mean_w = sum(args.weights.values()) / len(args.weights)
    args.p_each_map = {f: min(1.0, args.p_each * w / mean_w) for f, w in args.weights.items()}
    if args.decay_start is None and not args.time_budget:
        args.decay_start = int(args.steps * (1 - args.cooldown_frac))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)

    tokenizer = WordTokenizer(context_length=TOY_MODEL_CONFIG["text_cfg"]["context_length"])
    assert tokenizer.vocab_size == TOY_MODEL_CONFIG["text_cfg"]["vocab_size"], tokenizer.vocab_size
    config = model_config(args)
    model = build_toy_clip(config)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params={n_params} vision={sum(p.numel() for p in model.visual.parameters())}")
    print(f"args={vars(args)}", flush=True)

    start_step, elapsed_before = 0, 0.0
    if args.checkpoint is not None and args.checkpoint.exists():
        state = torch.load(args.checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        rng = state["rng"]
        start_step, elapsed_before = state["step"], state["elapsed"]
        args.decay_start, args.steps = state["decay_start"], state["steps"]
        print(f"resumed at step {start_step}", flush=True)

    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp == "bf16")
    history = []
    t0 = time.perf_counter()
    t_last, loss_avg = t0, None
    total = args.bench or args.steps
    step = start_step
    while step < total:
        for g in opt.param_groups:
            frozen = g["text"] and step < args.freeze_text_steps
            mult = args.text_lr_mult if g["text"] else 1.0
            g["lr"] = 0.0 if frozen else mult * lr_at(step, args)
        images, tokens, match, _ = make_batch(step, args, rng, tokenizer)
        with amp:
            img, txt = model.encode_image(images), model.encode_text(tokens)
        img, txt = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
        loss = contrastive_loss(img, txt, model.logit_scale.exp(), match)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        done = step = step + 1
        if done % 25 == 0 or done == total:
            now = time.perf_counter()
            rate = 25 / (now - t_last) if done % 25 == 0 else float("nan")
            t_last = now
            print(
                f"step {done}/{total} loss {loss_avg:.4f} lr {lr_at(done - 1, args):.2e} "
                f"scale {model.logit_scale.exp().item():.1f} {rate:.2f} it/s "
                f"elapsed {elapsed_before + now - t0:.0f}s",
                flush=True,
            )
        if args.bench:
            continue
        elapsed = elapsed_before + time.perf_counter() - t0
        if (
            args.time_budget
            and args.decay_start is None
            and (
                elapsed > 60 * args.time_budget * (1 - args.cooldown_frac)
                or done >= args.steps * (1 - args.cooldown_frac)
            )
        ):
            args.decay_start = done
            cooldown = round(done * args.cooldown_frac / (1 - args.cooldown_frac))
            total = args.steps = min(args.steps, done + max(1, cooldown))
            print(f"decay starts at step {done}; total steps {total}", flush=True)
        if done % args.eval_every == 0 and done < total:
            acc = evaluate(model, tokenizer, args.eval_n, bool(args.spurious), args.world)
            history.append({"step": done, **acc})
            print(f"eval step {done}: {fmt(acc)}", flush=True)
            if args.checkpoint is not None:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "opt": opt.state_dict(),
                        "rng": rng,
                        "step": done,
                        "elapsed": elapsed,
                        "decay_start": args.decay_start,
                        "steps": args.steps,
                    },
                    args.checkpoint,
                )
    wall = elapsed_before + time.perf_counter() - t0
    if args.bench:
        print(f"bench: {args.bench} steps in {wall:.1f}s = {args.bench / wall:.3f} it/s")
        return

    from safetensors.torch import load_file, save_file

    args.out_dir.mkdir(parents=True, exist_ok=True)
    weights = args.out_dir / "toy_clip.safetensors"
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": "pt", "dtype": "float16"})
    tokenizer.save(args.out_dir / "toy_tokenizer.json")

    # Score the weights as shipped (fp16 round trip).
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    model.eval()
    acc = zero_shot_accuracy(model, tokenizer, toy_preprocess, n=args.final_eval_n, seed=EVAL_SEED,
                             world=args.world)
    acc_ens = zero_shot_accuracy(
        model, tokenizer, toy_preprocess, n=args.final_eval_n, seed=EVAL_SEED, ensemble=True,
        world=args.world,
    )
    if args.spurious:
        from captum_clipspan.toy.spurious import group_shape_accuracy

        acc.update(group_shape_accuracy(model, tokenizer, n_per_group=args.final_eval_n // 16,
                                        world=args.world))
    print(f"final zero-shot (mean over templates): {fmt(acc)}")
    print(f"final zero-shot (prompt ensemble):     {fmt(acc_ens)}")
    info = {
        "model_config": config,
        "world": args.world,
        "preprocess_config": TOY_PREPROCESS_CONFIG,
        "tokenizer": "toy_tokenizer.json",
        "vocab": list(tokenizer.words),
        "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
        "n_params": n_params,
        "weights_bytes": weights.stat().st_size,
        "training": {
            **{
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()
                if k not in ("out_dir", "checkpoint", "bench", "weights", "p_each_map")
            },
            "scene_seed": args.seed,
            "caption_rng_seed": args.seed + 1,
            "optimizer": "AdamW(betas=(0.9, 0.98)), warmup-constant-cosine lr, grad clip 1.0",
            "final_loss_ema": loss_avg,
            "final_logit_scale": model.logit_scale.exp().item(),
            "wall_time_s": round(wall, 1),
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}",
            "command": "python scripts/train_toy_clip.py " + " ".join(sys.argv[1:]),
            "reproduce": reproduce_command(args),
        },
        "eval": {
            "n": args.final_eval_n,
            "seed": EVAL_SEED,
            "split": "validation",
            "prompts": "datasets.zero_shot_prompts",
        },
        "zero_shot_accuracy": acc,
        "zero_shot_accuracy_ensemble": acc_ens,
        "history": history,
    }
    (args.out_dir / "toy_clip.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {weights} ({weights.stat().st_size} bytes) in {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
