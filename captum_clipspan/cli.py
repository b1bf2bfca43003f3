"""The ``clipspan`` command: decompositions, TextSpan reports, heat maps, ablations, retrieval.

Every subcommand takes ``--model`` and ``--pretrained`` (open_clip names and tags; default: the
embedded toy model, which runs offline) and writes PNG, CSV and JSON files into ``--out``. The
commands that build a decomposition cache take ``--nproc N``: the cache pass then runs in N
processes of one machine under ``torchrun`` (``python -m torch.distributed.run --standalone
--nproc-per-node N -m captum_clipspan.cli COMMAND ...``, which may also be run directly), and
process 0 alone goes on with the rest of the command.

Long steps show a progress bar or a status line on stderr; encoded text banks are cached per
model (:mod:`captum_clipspan.text_cache`). Random weights (an open_clip ``--model`` without
``--pretrained``) are announced in the output and in the output folder. User errors (a missing or
unreadable file, a bad option, the library's own argument checks: see :func:`is_user_error`) are
one line on stderr with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  clipspan demo                                  # whole pipeline on synthetic scenes, toy model
  clipspan heads photos/ --layers -2 -1 --m 5    # label heads of the last layers with TextSpan
  clipspan heatmap photo.png --text "a dog" --text "a cat"
  clipspan ablate photos/ --classes dog cat      # class sub-folders give the labels
  clipspan retrieve photos/ --head 3.1 --query "a red object"
  clipspan segment-benchmark synthetic --n 500   # zero-shot segmentation, every heat-map method
  clipspan spurious synthetic --k 2              # remove the spurious toy's background cue
  clipspan cache photos/ --nproc 2 --granularity token --layers -1   # per-token terms, 2 processes
  clipspan heads photos/ --model ViT-B-16 --pretrained laion2b_s34b_b88k --bank general
"""


class CommandError(Exception):
    """A problem with the command line, reported without a traceback."""


PACKAGE_DIR = Path(__file__).resolve().parent
SKIP_HINT = "pass --skip-unreadable to leave unreadable images out"


def _raised_here(error: BaseException) -> bool:
    """Whether ``error`` was raised by captum_clipspan's own code (its innermost frame)."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(
        PACKAGE_DIR)


def is_user_error(error: BaseException) -> bool:
    """The errors ``clipspan`` reports in one line (exit code 2); anything else is a bug and
    keeps its traceback.

    User errors are: :class:`CommandError`; ``OSError`` (missing, unreadable or corrupt files,
    including PIL's ``UnidentifiedImageError``); and ``ValueError``/``TypeError`` with a message
    raised by captum_clipspan itself (its argument checks).
    """
    if isinstance(error, (CommandError, OSError)):
        return True
    return isinstance(error, (ValueError, TypeError)) and bool(str(error)) and _raised_here(error)


def _error_line(error: BaseException, args: argparse.Namespace) -> str:
    """One line for a user error, with what to do about an unreadable image."""
    from PIL import UnidentifiedImageError

    message = str(error).strip()
    if "Original Traceback" in message:  # re-raised from a DataLoader worker: its last line
        message = message.splitlines()[-1].split(": ", 1)[-1]
    message = " ".join(message.split()) or type(error).__name__
    if isinstance(error, UnidentifiedImageError):
        message += " (not an image, or a corrupt file)"
        if hasattr(args, "skip_unreadable"):
            message += f"; {SKIP_HINT}"
    return message


PRECISIONS = ("fp32", "bf16", "fp16")


RANDOM_WEIGHTS_FILE = "WARNING_RANDOM_WEIGHTS.txt"


def _status(message: str) -> None:
    """A status line on stderr (process 0 only), for steps without a progress bar."""
    if _rank() == 0:
        print(f"clipspan: {message}", file=sys.stderr, flush=True)


def _is_toy(args: argparse.Namespace) -> bool:
    from .toy import TOY_MODELS

    return args.model in TOY_MODELS


def _random_weights(args: argparse.Namespace) -> bool:
    return not _is_toy(args) and args.pretrained is None


def weights_note(args: argparse.Namespace) -> str | None:
    """The warning for a run with random weights (``None`` for trained ones)."""
    if not _random_weights(args):
        return None
    return (f"WARNING: {args.model} has RANDOM weights (no --pretrained given): every head "
            f"label, map and score is meaningless. Pass --pretrained TAG "
            f"(open_clip.list_pretrained()) or a checkpoint file.")


def _describe_weights(args: argparse.Namespace) -> str:
    if _is_toy(args):
        return "the toy model's shipped weights"
    return "RANDOM weights" if args.pretrained is None else f"pretrained {args.pretrained!r}"


def _load_model(args: argparse.Namespace) -> Any:
    import torch

    import captum_clipspan as cs

    if _is_toy(args) and args.pretrained is not None:
        raise CommandError(f"--pretrained {args.pretrained!r} does not apply to the toy model, "
                           "which ships its own weights; drop --pretrained, or pick an open_clip "
                           "--model.")
    _status(f"loading {args.model} ({_describe_weights(args)}) on {args.device}")
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process under torchrun
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    try:
        clip = cs.HookedCLIP.from_pretrained(args.model, pretrained=args.pretrained,
                                             device=device)
    except (RuntimeError, FileNotFoundError) as error:
        raise CommandError(f"could not load model {args.model!r} "
                           f"(pretrained={args.pretrained!r}): {error}") from error
    precision = getattr(args, "precision", "fp32")
    if precision != "fp32":  # the decomposition accumulates in fp32 for half-precision models
        clip.model.to({"bf16": torch.bfloat16, "fp16": torch.float16}[precision])
    note = weights_note(args)
    if note and _rank() == 0:
        print(f"clipspan: {note}", file=sys.stderr, flush=True)
    return clip


def _rank() -> int:
    """This process's rank in a distributed cache pass (0 in one process)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _build_cache(args: argparse.Namespace, clip: Any, images: Any,
                 layers: Sequence[int] | None, **kwargs: Any) -> Any:
    """The decomposition cache of ``images`` (every process of a distributed pass writes its
    share); ``None`` in processes other than 0, which have nothing more to do."""
    import captum_clipspan as cs

    path = args.cache or _out_dir(args) / "cache"
    _status(f"decomposition cache in {path} (resumes a finished or interrupted pass)")
    cache = cs.cache_decomposition(clip, images, path,
                                   layers=layers, batch_size=args.batch_size,
                                   num_workers=args.num_workers, **kwargs)
    return None if _rank() else cache


@contextmanager
def _process_group(args: argparse.Namespace) -> Iterator[None]:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1): NCCL on CUDA, else
    gloo."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _launch(argv: list[str], nproc: int) -> int:
    """Run the same command in ``nproc`` processes of this machine under torchrun."""
    rest, skip = [], False
    for arg in argv:
        if skip or arg == "--nproc" or arg.startswith("--nproc="):
            skip = arg == "--nproc"
            continue
        rest.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "captum_clipspan.cli", *rest]
    return subprocess.run(command, check=False).returncode


def _out_dir(args: argparse.Namespace) -> Path:
    """The output folder, created; it holds a warning file when the weights are random."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    note = weights_note(args)
    if note:
        (out / RANDOM_WEIGHTS_FILE).write_text(note + "\n")
    return out


def _existing(path: str, kind: str = "path", want: str | None = None) -> Path:
    """``path`` as a Path; a CommandError when it is missing, or not a ``want`` ("file" or
    "folder")."""
    resolved = Path(path)
    if not resolved.exists():
        raise CommandError(f"{kind} {path!r} does not exist.")
    if want == "file" and not resolved.is_file():
        raise CommandError(f"{kind} {path!r} is a folder; give one image file.")
    if want == "folder" and not resolved.is_dir():
        raise CommandError(f"{kind} {path!r} is not a folder.")
    return resolved


def _image_folder(args: argparse.Namespace, clip: Any) -> Any:
    """The ``ImageFolder`` of ``args.images``; with ``--skip-unreadable``, without the files
    that cannot be decoded (listed on stderr)."""
    from tqdm.auto import tqdm

    import captum_clipspan as cs

    data = cs.ImageFolder(_existing(args.images, "image folder", "folder"), clip.preprocess)
    if not getattr(args, "skip_unreadable", False):
        return data
    unreadable = [file for file in tqdm(data.files, desc="checking images", unit="img")
                  if not _readable(file)]
    if unreadable:
        print(f"clipspan: skipping {len(unreadable)} unreadable image(s): "
              f"{', '.join(str(file) for file in unreadable)}", file=sys.stderr)
        data.files = [file for file in data.files if file not in set(unreadable)]
        if not data.files:
            raise CommandError(f"no readable image in {args.images}.")
    return data


def _readable(file: Path) -> bool:
    try:
        _open_rgb(file)
    except OSError:
        return False
    return True


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _write_rows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _default_bank(args: argparse.Namespace) -> str:
    return args.bank or ("toy" if _is_toy(args) else "general")


def _heads(args: argparse.Namespace) -> int:
    import captum_clipspan as cs

    clip, out = _load_model(args), _out_dir(args)
    cache = _build_cache(args, clip, _image_folder(args, clip), args.layers)
    if cache is None:
        return 0
    from captum_clipspan.text_cache import encode_texts_cached

    bank = cs.text_bank(_default_bank(args))
    _status(f"text bank {_default_bank(args)!r}: {len(bank)} texts (encoded once per model, "
            "then read from the cache)")
    embeddings = encode_texts_cached(clip, bank).float().to(clip.device)
    report = cs.TextSpan(clip, bank=bank, text_embeddings=embeddings).fit(cache, m=args.m)
    for layer, head in report.results:
        print(report.describe(layer, head))
    report.to_frame().to_csv(out / "textspan.csv", index=False)
    report.save(out / "textspan.pt")
    fig, _ = report.plot(max_texts=args.m)
    _save(fig, out / "textspan.png")
    print(f"wrote {out / 'textspan.csv'}, {out / 'textspan.png'}, {out / 'textspan.pt'}")
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    import captum_clipspan as cs
    from captum_clipspan.visualization import model_view, plot_patch_maps

    clip, out = _load_model(args), _out_dir(args)
    if clip.preprocess is None:
        raise CommandError("this model has no preprocess transform.")
    image = _open_rgb(_existing(args.image, "image", "file"))
    batch = clip.preprocess_images([image])
    maps = cs.PatchContribution(clip, layers=args.layers, heads=args.heads).attribute(
        batch, texts=args.text, interpolate=True)
    view = model_view(clip.preprocess, image)  # the maps are drawn over what the model saw
    title = (f"{Path(args.image).name} as the model saw it ({image.width}x{image.height} -> "
             f"{view.shape[2]}x{view.shape[1]})")
    if weights_note(args):
        title += ", RANDOM weights"
    fig, _ = plot_patch_maps(view, maps[0], titles=args.text, title=title)
    path = _save(fig, out / (args.name or f"{Path(args.image).stem}_heatmap.png"))
    print(f"wrote {path}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    import captum_clipspan as cs
    from captum_clipspan.visualization import plot_ablation_bars, plot_ablation_curve

    clip, out = _load_model(args), _out_dir(args)
    folder = _image_folder(args, clip)
    classes = folder.classes
    names = args.classes or classes
    if not classes:
        raise CommandError(f"{folder.root} has no class sub-folders: put each class's images in a "
                           "sub-folder named after it (labels come from the sub-folders).")
    if len(names) != len(classes):
        raise CommandError(f"--classes gives {len(names)} names but {folder.root} has "
                           f"{len(classes)} class sub-folders ({', '.join(classes)}).")
    _status(f"encoding the prompts of {len(names)} classes")
    classifier = cs.ZeroShotClassifier(clip, names)
    if args.mode == "direct":
        cache = _build_cache(args, clip, folder, [-1])
        if cache is None:
            return 0
        means, data = cs.ComponentMeans.from_cache(cache), cache
    else:
        if args.nproc > 1 or _rank():
            raise CommandError("--mode total builds no cache, so it runs in one process; drop "
                               "--nproc (or use --mode direct).")
        means = cs.component_means(clip, folder, batch_size=args.batch_size)
        data = folder
    study = cs.MeanAblation(clip, means, mode=args.mode).study(data, classifier,
                                                               batch_size=args.batch_size)
    _write_ablation(study, out, _describe_weights(args))
    task = (f"zero-shot classification of {len(names)} classes, {args.mode} effects"
            + (" (RANDOM weights)" if weights_note(args) else ""))
    figure = {"title": task, "chance": 1 / len(names)}
    _save(plot_ablation_curve(study.accumulated, baseline=study.baseline, **figure)[0],
          out / "ablation_curve.png")
    _save(plot_ablation_bars(study.table(), **figure)[0], out / "ablation_table.png")
    print(study.to_frame().to_string())
    print(f"wrote {out / 'ablation.csv'}, {out / 'ablation.json'} and two PNG files")
    return 0


def _write_ablation(study: Any, out: Path, weights: str) -> None:
    study.to_frame().to_csv(out / "ablation.csv")
    (out / "ablation.json").write_text(json.dumps({**vars(study), "weights": weights}, indent=1))


def _retrieve(args: argparse.Namespace) -> int:
    import captum_clipspan as cs
    from captum_clipspan.visualization import plot_top_images

    clip, out = _load_model(args), _out_dir(args)
    folder = _image_folder(args, clip)
    try:
        layer, head = (int(part) for part in args.head.split("."))
    except ValueError:
        raise CommandError(f"--head must look like LAYER.HEAD (e.g. 11.4), got {args.head!r}."
                           ) from None
    cache = _build_cache(args, clip, folder, [layer])
    if cache is None:
        return 0
    query: Any = args.query
    if Path(args.query).is_file():
        query = clip.preprocess_images([_open_rgb(args.query)])[0]
    top = cs.retrieve(cache, layer, head, query, k=args.k, clip=clip)
    files = folder.files
    rows = [{"rank": rank + 1, "file": str(files[i]), "score": float(s)}
            for rank, (i, s) in enumerate(zip(top.indices.tolist(), top.scores, strict=True))]
    _write_rows(out / "retrieval.csv", rows)
    fig, _ = plot_top_images([_open_rgb(row["file"]) for row in rows], scores=top.scores,
                             title=f"layer {layer}, head {head}: {args.query}",
                             score_label="dot" if query is args.query else "cosine")
    _save(fig, out / "retrieval.png")
    for row in rows:
        print(f"{row['rank']:3d}  {row['score']:+.4f}  {row['file']}")
    print(f"wrote {out / 'retrieval.csv'}, {out / 'retrieval.png'}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    clip = _load_model(args)
    cache = _build_cache(args, clip, _image_folder(args, clip), args.layers,
                         granularity=args.granularity, dtype=args.dtype,
                         convention=args.convention, overwrite=args.overwrite)
    if cache is None:
        return 0
    arrays = ", ".join(f"{name} {list(getattr(cache, name).shape)}"
                       for name in cache.meta["fields"] if name not in ("labels", "digests"))
    print(f"cached {len(cache)} images in {cache.path}: {arrays}")
    return 0


def _segment_benchmark(args: argparse.Namespace) -> int:
    import captum_clipspan as cs
    from captum_clipspan import segmentation as seg

    clip, out = _load_model(args), _out_dir(args)
    prepare = seg.for_model(clip)
    if args.data == "synthetic":
        data = seg.SceneSegmentation(500 if args.n is None else args.n, seed=args.seed,
                                     **prepare)
        texts = cs.ZeroShotClassifier.from_prompts(clip, seg.SceneSegmentation.class_prompts())
    else:
        source = _existing(args.data, "segmentation data")
        data = (seg.MaskFolder(source, **prepare) if source.is_dir()
                else seg.ImagenetSegmentation(source, **prepare))
        names = _class_names(args, source)
        _status(f"encoding the prompts of {len(names)} classes")
        texts = cs.ZeroShotClassifier(clip, names)
    if args.data != "synthetic" and args.n is not None:
        import torch.utils.data

        data = torch.utils.data.Subset(data, range(min(args.n, len(data))))
    methods = args.method or list(seg.HEATMAP_METHODS)
    rows = seg.benchmark(clip, data, texts, methods=methods, batch_size=args.batch_size,
                         show_progress=True)
    table = seg.markdown_table(rows)
    note = weights_note(args)
    (out / "segmentation.md").write_text((f"**{note}**\n\n" if note else "") + table + "\n")
    _write_rows(out / "segmentation.csv", rows)
    print(table)
    print(f"wrote {out / 'segmentation.md'}, {out / 'segmentation.csv'}")
    return 0


def _spurious(args: argparse.Namespace) -> int:
    import captum_clipspan as cs

    if args.k is None:
        args.k = 2 if args.data == "synthetic" else 4
    for name in ("k", "draws", "m", "n_per_group", "n_reference"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got "
                               f"{getattr(args, name)}.")
    concept = args.concept
    center = not args.no_center and (concept is None or len(concept) > 1)
    if args.data == "synthetic":
        if not _is_toy(args):
            raise CommandError(f"'synthetic' runs on a toy model (toy-spurious, or toy as a "
                               f"control), got --model {args.model}; give a Waterbirds folder "
                               f"for open_clip models.")
        from .toy.spurious import spurious_benchmark

        clip, out = _load_model(args), _out_dir(args)
        study = spurious_benchmark(clip, concept=concept, k=args.k, draws=args.draws,
                                   n_reference=args.n_reference, n_per_group=args.n_per_group,
                                   m=args.m, center=center, seed=args.seed,
                                   batch_size=args.batch_size)
        groups = study["groups"]
        concept = concept or ["the toy's background-texture prompts"]
    else:
        if concept is None:
            raise CommandError("a data folder needs --concept: the spurious cue as one or more "
                               "texts, e.g. --concept 'a photo of water' --concept 'a photo of "
                               "a forest'.")
        source = _existing(args.data, "Waterbirds folder", "folder")
        clip, out = _load_model(args), _out_dir(args)
        if clip.preprocess is None:
            raise CommandError("this model has no preprocess transform.")
        data = cs.WaterbirdsDataset(source, args.split, transform=clip.preprocess)
        reference = (cs.WaterbirdsDataset(source, args.reference, transform=clip.preprocess)
                     if args.reference in ("train", "val", "test") else
                     cs.ImageFolder(_existing(args.reference, "reference folder", "folder"),
                                    clip.preprocess))
        names = list(args.classes or cs.WaterbirdsDataset.classes)
        if len(names) != 2:
            raise CommandError(f"Waterbirds has 2 classes (y = 0, 1); got --classes {names}.")
        from .text_cache import encode_texts_cached

        bank = cs.text_bank(_default_bank(args))
        study = cs.spurious_cue_study(
            clip, reference, data, cs.ZeroShotClassifier(clip, names), concept, None,
            data.groups, k=args.k, draws=args.draws, seed=args.seed, bank=bank,
            text_embeddings=encode_texts_cached(clip, bank).float().to(clip.device), m=args.m,
            center=center, n_groups=data.n_groups, batch_size=args.batch_size)
        groups = [f"{names[g // 2]} on {('land', 'water')[g % 2]}" for g in range(4)]
    table = cs.spurious_table(study)
    note = weights_note(args)
    per_group = "\n".join(
        f"| {name} | {study['before']['per_group'].get(g, float('nan')):.3f} | "
        f"{study['after']['per_group'].get(g, float('nan')):.3f} | "
        f"{study['random']['after']['per_group'].get(g, float('nan')):.3f} |"
        for g, name in enumerate(groups))
    (out / "spurious.md").write_text(
        (f"**{note}**\n\n" if note else "") + f"Concept: {'; '.join(concept)}\n\n{table}\n\n"
        "| group | unmodified | concept heads ablated | random heads ablated |\n"
        f"|---|---:|---:|---:|\n{per_group}\n")
    summary = {key: study[key] for key in ("heads", "before", "after")}
    summary["random"] = {key: study["random"][key] for key in ("heads", "after", "draws")}
    summary["concept_scores"] = {f"{layer}.{head}": score
                                 for (layer, head), score in study["concept_scores"].items()}
    summary["groups"], summary["concept"], summary["center"] = groups, concept, center
    (out / "spurious.json").write_text(json.dumps(summary, indent=1))
    study["report"].to_frame().to_csv(out / "textspan.csv", index=False)
    print(table)
    print(f"wrote {out / 'spurious.md'}, {out / 'spurious.json'}, {out / 'textspan.csv'}")
    return 0


def _class_names(args: argparse.Namespace, source: Path) -> list[str]:
    if args.classes:
        if len(args.classes) == 1 and Path(args.classes[0]).is_file():
            return [line.strip() for line in Path(args.classes[0]).read_text().splitlines()
                    if line.strip()]
        return list(args.classes)
    if source.is_dir():
        raise CommandError("a mask folder needs --classes (class names, or a text file with "
                           "one per line); each image's map is for its zero-shot prediction.")
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def _open_rgb(path: str | Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    clip, out = _load_model(args), _out_dir(args)
    report = run_demo(clip, out, n=args.n, seed=args.seed, batch_size=args.batch_size,
                      note=weights_note(args))
    print(report.read_text())
    print(f"wrote the report to {report}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    import torch

    import captum_clipspan as cs

    torch.manual_seed(args.seed)
    clip = _load_model(args)
    images = torch.randn(args.n, 3, *clip.visual.image_size)
    texts = ["a photo of a dog", "a red circle", "a striped background"]
    parts = cs.decompose(clip, images, granularity="head", text_embeddings=clip.encode_text(texts))
    error = parts.convergence_delta().abs().max().item()
    print(f"{args.model} ({_describe_weights(args)}): "
          f"{clip.visual.n_layers} layers x {clip.visual.n_heads} heads, "
          f"{args.n} random images, {len(texts)} texts")
    print(f"terms sum to the image-text cosine; largest completeness error: {error:.2e}")
    return 0


def _add_common(parser: argparse.ArgumentParser, out: str | None,
                batch_size: int | None = 64, model: str = "toy") -> None:
    """``--model``, ``--pretrained`` and ``--device``; ``--out`` for commands that write files
    (``out`` is its default) and ``--batch-size`` for those that run batches (``batch_size``
    is its default)."""
    parser.add_argument("--model", default=model,
                        help=f"open_clip model name (e.g. ViT-B-16), 'toy' (the embedded model "
                             f"trained on synthetic scenes; runs offline) or 'toy-spurious' (a "
                             f"toy trained with shape and background texture paired); default: "
                             f"{model}")
    parser.add_argument("--pretrained", default=None,
                        help="open_clip pretrained tag or checkpoint path (e.g. "
                             "laion2b_s34b_b88k); default: none (random weights for open_clip "
                             "names, announced in the output and reports; the toy has its own "
                             "weights and refuses a tag). Fails at once when the weights are "
                             "not cached and the Hub cannot be reached")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    if out is not None:
        parser.add_argument("--out", default=out, help=f"output folder (default: {out})")
    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size,
                            help=f"images per forward pass (default: {batch_size})")


def _add_layers_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help=f"{what} (negative counts from the end; default: all)")


def _add_cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", default=None, help="cache folder (default: OUT/cache)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes for the cache pass, on this machine under torchrun "
                             "(with --device cuda, one GPU each); default: 1")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="DataLoader workers loading images while the model runs "
                             "(default: 0)")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="leave out (and list) images that cannot be decoded instead of "
                             "stopping at the first one")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="run the model in this precision; the terms accumulate in fp32 "
                             "(default: fp32; bf16 or fp16 for GPUs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipspan", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Read CLIP's image representation in words. The image embedding of an "
                    "open_clip ViT is split exactly into direct contributions of layers, "
                    "attention heads and patches (Gandelsman et al., ICLR 2024); these commands "
                    "label heads with text (TextSpan), draw patch heat maps, measure which "
                    "layers matter (mean-ablation) and retrieve images by head.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the whole pipeline on synthetic scenes",
                               description="Render synthetic scenes, then cache their "
                               "decomposition, probe every head per attribute, label heads with "
                               "TextSpan, run the mean-ablation study, draw heat maps and "
                               "retrieve images by head. Writes report.md with figures.")
    _add_common(demo, "clipspan-demo")
    demo.add_argument("--n", type=int, default=1000, help="number of scenes (default: 1000)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the synthetic scenes (default: 0)")
    demo.set_defaults(run=_demo)

    heads = commands.add_parser("heads", help="label heads with TextSpan texts",
                                description="Cache the decomposition of a folder of images and "
                                "run TextSpan on every head of the chosen layers.")
    heads.add_argument("images", help="folder of images (searched recursively)")
    _add_common(heads, "clipspan-heads")
    _add_layers_option(heads, "layers to explain")
    heads.add_argument("--m", type=int, default=5, help="texts per head (default: 5)")
    heads.add_argument("--bank", default=None,
                       help="text bank: general, words, toy or a text file with one description "
                            "per line (default: toy for the toy model, else general)")
    _add_cache_options(heads)
    heads.set_defaults(run=_heads)

    heatmap = commands.add_parser("heatmap", help="patch heat maps of one image for texts",
                                  description="Draw each text's per-patch direct effect on the "
                                  "image (summed over the chosen layers and heads) as a PNG, "
                                  "over exactly what the model saw (its resize and center "
                                  "crop).")
    heatmap.add_argument("image", help="an image file")
    heatmap.add_argument("--text", action="append", required=True,
                         help="a text to map (repeat for several)")
    _add_common(heatmap, "clipspan-heatmap", batch_size=None)
    _add_layers_option(heatmap, "layers whose patch terms are summed")
    heatmap.add_argument("--heads", type=int, nargs="+", default=None,
                         help="heads summed in each chosen layer (default: all)")
    heatmap.add_argument("--name", default=None,
                         help="output file name (default: IMAGE-STEM_heatmap.png)")
    heatmap.set_defaults(run=_heatmap)

    ablate = commands.add_parser("ablate", help="mean-ablation study (accuracy per setting)",
                                 description="Zero-shot accuracy with all MLPs, all MSAs, and "
                                 "MSA layers 0..l mean-ablated (the paper's Table 1 and "
                                 "Figure 2). Labels come from class sub-folders.")
    ablate.add_argument("images", help="folder with one sub-folder of images per class")
    ablate.add_argument("--classes", nargs="+", default=None,
                        help="class names for the prompts, in sub-folder order (default: the "
                             "sub-folder names)")
    ablate.add_argument("--mode", choices=["direct", "total"], default="direct",
                        help="direct: replace each component's direct effect by its mean, from "
                             "the cached decomposition (no re-run); total: replace its output "
                             "inside the network and re-run, so later layers see the change "
                             "(default: direct)")
    _add_common(ablate, "clipspan-ablate")
    _add_cache_options(ablate)
    ablate.set_defaults(run=_ablate)

    retrieve = commands.add_parser("retrieve", help="top images of a folder for one head",
                                   description="Rank the images of a folder by one head's "
                                   "direct effect on a text query (dot product), or by its "
                                   "similarity to the same head's effect on a query image.")
    retrieve.add_argument("images", help="folder of images")
    retrieve.add_argument("--head", required=True, help="LAYER.HEAD, e.g. 3.1")
    retrieve.add_argument("--query", required=True, help="a text, or the path of an image")
    retrieve.add_argument("--k", type=int, default=8,
                          help="number of top images listed and drawn (default: 8)")
    _add_common(retrieve, "clipspan-retrieve")
    _add_cache_options(retrieve)
    retrieve.set_defaults(run=_retrieve)

    cache = commands.add_parser(
        "cache", help="cache the decomposition of a folder of images",
        description="Decompose every image of a folder into a resumable, memory-mapped cache "
        "(DecompositionCache): per-head terms of the chosen layers, and with --granularity "
        "token per (token, head) terms. With --nproc N the pass runs in N processes and the "
        "cache is the same bit for bit.")
    cache.add_argument("images", help="folder of images (searched recursively)")
    _add_common(cache, "clipspan-cache")
    _add_cache_options(cache)
    _add_layers_option(cache, "layers of the per-head terms")
    cache.add_argument("--granularity", choices=["head", "token"], default="head",
                       help="token: also store per-token head terms (N_tokens times the disk)")
    cache.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                       help="storage dtype of the terms (default: float16)")
    cache.add_argument("--convention", choices=["reference", "centered"], default="reference",
                       help="reference: the paper's code, the final norm's constants shared by "
                            "the terms; centered: every term centered on its own, biases kept "
                            "as separate terms (default: reference)")
    cache.add_argument("--overwrite", action="store_true",
                       help="delete the cache files in the folder and build it anew")
    cache.set_defaults(run=_cache)

    segbench = commands.add_parser(
        "segment-benchmark", help="zero-shot segmentation scores of heat-map methods",
        description="Pixel accuracy, mIoU and mAP of heat maps against foreground masks "
        "(Chefer et al.'s ImageNet-segmentation protocol, per image), for the decomposition's "
        "patch map and attention- and gradient-based baselines. Each image is mapped for its "
        "zero-shot prediction. Writes segmentation.md and segmentation.csv.")
    segbench.add_argument("data", help="'synthetic' (held-out synthetic scenes and their object "
                          "masks), gtsegs_ijcv.mat (needs h5py), or a folder with images/ and "
                          "masks/<name>.png")
    segbench.add_argument("--method", nargs="+", default=None,
                          help="heat-map methods: decomposition, raw_attention, rollout, gradcam, "
                               "chefer (default: all)")
    segbench.add_argument("--n", type=int, default=None,
                          help="number of images (synthetic: default 500; files: default all)")
    segbench.add_argument("--seed", type=int, default=2024,
                          help="synthetic scenes' seed (default 2024, held out from the toy's "
                               "training)")
    segbench.add_argument("--classes", nargs="+", default=None,
                          help="class names for the zero-shot prediction, or one text file with a "
                               "name per line (default: the scenes' color-shape classes, or "
                               "ImageNet's 1000 classes for the .mat file)")
    _add_common(segbench, "clipspan-segmentation", batch_size=16)
    segbench.set_defaults(run=_segment_benchmark)

    spurious = commands.add_parser(
        "spurious", help="remove a spurious cue by ablating the heads TextSpan labels with it",
        description="The paper's Waterbirds experiment: label every head with TextSpan on "
        "reference images, mean-ablate the K heads whose texts best span the cue (--concept), "
        "and report average and worst-group zero-shot accuracy before, after, and for the best "
        "of several random choices of K heads. Writes spurious.md, spurious.json and "
        "textspan.csv.")
    spurious.add_argument("data", help="'synthetic' (the spurious toy's held-out shape x "
                          "texture groups) or a Waterbirds folder (metadata.csv with "
                          "img_filename, y, place, split)")
    spurious.add_argument("--concept", action="append", default=None,
                          help="a text describing the cue (repeat for several; with two or "
                               "more, heads are scored on their differences). Default for "
                               "synthetic: the background-texture prompts; required for a "
                               "folder")
    spurious.add_argument("--no-center", action="store_true",
                          help="score heads on the concept texts as given, not on their "
                               "differences")
    spurious.add_argument("--k", type=int, default=None,
                          help="heads to ablate (default: 2 for synthetic, whose toy has 16 "
                               "heads; else 4)")
    spurious.add_argument("--draws", type=int, default=5,
                          help="random draws of K heads for the baseline (default: 5)")
    spurious.add_argument("--seed", type=int, default=0,
                          help="seed of the random draws (default: 0)")
    spurious.add_argument("--m", type=int, default=8, help="TextSpan texts per head (default: 8)")
    spurious.add_argument("--bank", default=None,
                          help="TextSpan's text bank (default: toy for the toy models, else "
                               "general)")
    spurious.add_argument("--split", default="test",
                          help="Waterbirds split to score (default: test)")
    spurious.add_argument("--reference", default="val",
                          help="images for TextSpan and the means: a Waterbirds split name or "
                               "an image folder (default: val)")
    spurious.add_argument("--classes", nargs=2, default=None,
                          help="the two class names (default: landbird waterbird)")
    spurious.add_argument("--n-per-group", type=int, default=100,
                          help="synthetic: held-out scenes per group (default: 100)")
    spurious.add_argument("--n-reference", type=int, default=2000,
                          help="synthetic: reference scenes (default: 2000)")
    _add_common(spurious, "clipspan-spurious", batch_size=200, model="toy-spurious")
    spurious.set_defaults(run=_spurious)

    quick = commands.add_parser("quickstart", help="decompose random images and check the sum",
                                description="Decompose a batch of random images and print the "
                                "completeness error (terms minus the model's cosine).")
    _add_common(quick, None, batch_size=None)
    quick.add_argument("--n", type=int, default=2, help="number of random images (default: 2)")
    quick.add_argument("--batch", dest="n", type=int, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)  # the old name of --n
    quick.add_argument("--seed", type=int, default=0,
                       help="seed of the random images (default: 0)")
    quick.set_defaults(run=_quickstart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        nproc = getattr(args, "nproc", 1)
        if nproc < 1:
            raise CommandError(f"--nproc must be at least 1, got {nproc}.")
        if nproc > 1 and "LOCAL_RANK" not in os.environ:
            return _launch(argv, nproc)
        with _process_group(args):
            code = args.run(args)
            rank = _rank()
        note = weights_note(args)
        if note and rank == 0:  # again after the output, where it cannot be missed
            print(f"clipspan: {note}", file=sys.stderr)
        return code
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"clipspan {args.command}: error: {_error_line(error, args)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
