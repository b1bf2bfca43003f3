"""What the ``clipspan`` commands share: their common options, loading the model, the output
folder and its files, image folders and the decomposition cache."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..validation import check_count, output_file, read_lines
from .distributed import rank
from .errors import CommandError

PRECISIONS = ("fp32", "bf16", "fp16")
RANDOM_WEIGHTS_FILE = "WARNING_RANDOM_WEIGHTS.txt"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
"""What ``--name`` of a figure may end with (none: ``.png`` is added)."""
COUNTS = "_counts"  # parser default: {dest: (flag, minimum)} of the options check_counts checks


def add_count(parser: argparse.ArgumentParser, flag: str, default: int | None, help: str,
              minimum: int = 1, **kwargs: Any) -> None:
    """An int option that counts something (images, texts, heads, processes): refused below
    ``minimum`` by :func:`check_counts`, in one line, like every other user error.

    Args:
        parser: A command's parser.
        flag: The option, e.g. ``"--batch-size"``.
        default: Its default (``None``: not given).
        help: Its help text.
        minimum: The smallest value accepted.
        **kwargs: Further ``add_argument`` arguments (e.g. ``dest``).
    """
    action = parser.add_argument(flag, type=int, default=default, help=help, **kwargs)
    counts = dict(parser.get_default(COUNTS) or {})
    counts[action.dest] = (flag, minimum)
    parser.set_defaults(**{COUNTS: counts})


def check_counts(args: argparse.Namespace) -> None:
    """Refuse a count option below its minimum (see :func:`add_count`).

    Raises:
        ValueError: ``--FLAG must be at least N, got M.``
    """
    for dest, (flag, minimum) in getattr(args, COUNTS, {}).items():
        if getattr(args, dest, None) is not None:
            check_count(getattr(args, dest), flag, minimum)


def add_common_options(parser: argparse.ArgumentParser, out: str | None,
                       batch_size: int | None = 64, model: str = "toy") -> None:
    """``--model``, ``--pretrained`` and ``--device``; ``--out`` for commands that write files
    (``out`` is its default) and ``--batch-size`` for those that run batches (``batch_size``
    is its default).

    Args:
        parser: A command's parser.
        out: Default output folder; ``None``: no ``--out``.
        batch_size: Default batch size; ``None``: no ``--batch-size``.
        model: Default model name.
    """
    parser.add_argument("--model", default=model,
                        help=f"open_clip model name (e.g. ViT-B-16), 'toy' (the embedded model "
                             f"trained on synthetic scenes; runs offline), 'toy-spurious' (a "
                             f"toy trained with shape and background texture paired), or the "
                             f"second generation of both, 'toy-clutter' and "
                             f"'toy-clutter-spurious' (6 x 8 heads, cluttered scenes); default: "
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
        add_count(parser, "--batch-size", batch_size,
                  f"images per forward pass (default: {batch_size})")


def add_layers_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--layers``, whose help starts with ``what`` the layers are."""
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help=f"{what} (negative counts from the end; default: all)")


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that builds a decomposition cache (see :func:`build_cache`)."""
    parser.add_argument("--cache", default=None, help="cache folder (default: OUT/cache)")
    add_count(parser, "--nproc", 1, "processes for the cache pass, on this machine under "
              "torchrun (with --device cuda, one GPU each); default: 1")
    add_count(parser, "--num-workers", 0, "DataLoader workers loading images while the model "
              "runs (default: 0)", minimum=0)
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="leave out (and list) images that cannot be decoded instead of "
                             "stopping at the first one")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="run the model in this precision; the terms accumulate in fp32 "
                             "(default: fp32; bf16 or fp16 for GPUs)")


def status(message: str) -> None:
    """A status line on stderr (process 0 only), for steps without a progress bar."""
    if rank() == 0:
        print(f"clipspan: {message}", file=sys.stderr, flush=True)


def is_toy(args: argparse.Namespace) -> bool:
    """Whether ``--model`` names a registered model (the toys), which ships its own weights."""
    from .. import registry

    return args.model in registry.names("model")


def synthetic_world(args: argparse.Namespace) -> str:
    """The world of the synthetic scenes for ``--model``: the one its toy was trained on
    (``"clutter"`` for the second-generation toys), ``"simple"`` for any other model."""
    from ..toy.model import TOY_MODELS, toy_world

    return toy_world(args.model) if args.model in TOY_MODELS else "simple"


def class_templates(args: argparse.Namespace) -> list[str] | None:
    """Zero-shot templates for ``--model``: a toy's own (its tokenizer knows only the scenes'
    words), ``None`` (the package's templates) for any other model."""
    from ..toy.model import TOY_MODELS
    from ..toy.scenes import TEMPLATES

    return list(TEMPLATES) if args.model in TOY_MODELS else None


def weights_note(args: argparse.Namespace) -> str | None:
    """The warning for a run with random weights (``None`` for trained ones)."""
    if is_toy(args) or args.pretrained is not None:
        return None
    return (f"WARNING: {args.model} has RANDOM weights (no --pretrained given): every head "
            f"label, map and score is meaningless. Pass --pretrained TAG "
            f"(open_clip.list_pretrained()) or a checkpoint file.")


def describe_weights(args: argparse.Namespace) -> str:
    """Where the weights come from, in words."""
    if is_toy(args):
        return "the toy model's shipped weights"
    return "RANDOM weights" if args.pretrained is None else f"pretrained {args.pretrained!r}"


def default_bank(args: argparse.Namespace) -> str:
    """``--bank``, by default ``toy`` for the toy models and ``general`` for the others."""
    return args.bank or ("toy" if is_toy(args) else "general")


def load_bank(args: argparse.Namespace, per_head: int | None = None) -> list[str]:
    """The texts of ``--bank`` (see :func:`default_bank`), read before any expensive step so a
    bad bank, or ``--m`` larger than it, fails at once.

    Args:
        args: The parsed command line.
        per_head: ``--m``, the texts wanted per head; checked against the bank's size.

    Raises:
        CommandError: An unknown bank, an unreadable bank file, or ``--m`` above its size.
    """
    from ..text import text_bank

    name = default_bank(args)
    try:
        bank = text_bank(name)
    except (ValueError, TypeError, OSError) as error:
        raise CommandError(f"--bank {name!r}: {error}") from error
    if per_head is not None and per_head > len(bank):
        raise CommandError(f"--m {per_head} is more texts than the bank {name!r} holds "
                           f"({len(bank)}); pass --m {len(bank)} or less.")
    return bank


def load_model(args: argparse.Namespace, texts: bool = True) -> Any:
    """The :class:`~captum_clipspan.HookedCLIP` of ``--model`` and ``--pretrained`` on
    ``--device`` (one GPU per process under torchrun), in ``--precision``.

    Args:
        args: The parsed command line.
        texts: Whether the command encodes texts: then a tokenizer that would have to come from
            an unreachable Hub fails here, before the model loads.

    Raises:
        CommandError: A tag for the toy, a model that cannot be loaded, or (with ``texts``) a
            tokenizer that cannot be downloaded.
    """
    import captum_clipspan as cs

    if is_toy(args) and args.pretrained is not None:
        raise CommandError(f"--pretrained {args.pretrained!r} does not apply to the toy model, "
                           "which ships its own weights; drop --pretrained, or pick an open_clip "
                           "--model.")
    if texts:
        _check_tokenizer(args)
    status(f"loading {args.model} ({describe_weights(args)}) on {args.device}")
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process under torchrun
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    precision = getattr(args, "precision", "fp32")  # the terms accumulate in fp32 regardless
    try:
        clip = cs.HookedCLIP.from_pretrained(
            args.model, pretrained=args.pretrained, device=device,
            precision=precision if precision == "fp32" else f"pure_{precision}")
    except (RuntimeError, FileNotFoundError) as error:
        raise CommandError(f"could not load model {args.model!r} "
                           f"(pretrained={args.pretrained!r}): {error}") from error
    note = weights_note(args)
    if note and rank() == 0:
        print(f"clipspan: {note}", file=sys.stderr, flush=True)
    return clip


def _check_tokenizer(args: argparse.Namespace) -> None:
    """Fail before loading when the model's tokenizer would wait on an unreachable Hub."""
    from ..hooked.backends.hub import tokenizer_unreachable

    if is_toy(args):
        return
    unreachable = tokenizer_unreachable(args.model)
    if unreachable is not None:
        repo, reason = unreachable
        raise CommandError(f"--model {args.model} reads texts with the tokenizer {repo!r} from "
                           f"the Hugging Face Hub, which is not cached here and cannot be "
                           f"downloaded ({reason}); run once with network access to cache it, "
                           "or pick a --model with open_clip's own tokenizer (e.g. ViT-B-16).")


def out_dir(args: argparse.Namespace) -> Path:
    """The output folder, created; it holds a warning file when the weights are random."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {args.out!r} is a file; give a folder (created if needed).")
    out.mkdir(parents=True, exist_ok=True)
    note = weights_note(args)
    if note:
        (out / RANDOM_WEIGHTS_FILE).write_text(note + "\n")
    return out


def existing(path: str, kind: str = "path", want: str | None = None) -> Path:
    """``path`` as a Path.

    Args:
        path: A path from the command line.
        kind: What it is, for the message.
        want: ``"file"``, ``"folder"`` or ``None`` (either).

    Raises:
        CommandError: It is missing, or not a ``want``.
    """
    resolved = Path(path)
    if not resolved.exists():
        raise CommandError(f"{kind} {path!r} does not exist.")
    if want == "file" and not resolved.is_file():
        raise CommandError(f"{kind} {path!r} is a folder; give one image file.")
    if want == "folder" and not resolved.is_dir():
        raise CommandError(f"{kind} {path!r} is not a folder.")
    return resolved


def open_rgb(path: str | Path) -> Any:
    """The image file at ``path`` as an RGB PIL image (an unreadable one: one line naming it)."""
    from ..sources import open_image

    return open_image(path)


def _readable(file: Path) -> bool:
    from ..sources import UnreadableImageError

    try:
        open_rgb(file)
    except UnreadableImageError:
        return False
    return True


def names_or_file(values: Sequence[str], what: str) -> list[str]:
    """Names from the command line, or the lines of the one UTF-8 text file given instead."""
    if len(values) == 1 and Path(values[0]).is_file():
        return read_lines(values[0], what)
    return list(values)


def figure_path(out: Path, name: str) -> Path:
    """Where a figure named ``name`` is written in ``out``: ``.png`` added when it has no
    extension, so the path reported is the file written."""
    return out / output_file(name, FIGURE_SUFFIXES, "--name")


def image_folder(args: argparse.Namespace, clip: Any) -> Any:
    """The ``ImageFolder`` of ``args.images``; with ``--skip-unreadable``, without the files
    that cannot be decoded (listed on stderr)."""
    from tqdm.auto import tqdm

    import captum_clipspan as cs

    data = cs.ImageFolder(existing(args.images, "image folder", "folder"), clip.preprocess)
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


def build_cache(args: argparse.Namespace, clip: Any, images: Any,
                layers: Sequence[int] | None, **kwargs: Any) -> Any:
    """The decomposition cache of ``images`` in ``--cache`` (default: OUT/cache); every process
    of a distributed pass writes its share.

    Args:
        args: The parsed command line (:func:`add_cache_options`).
        clip: The hooked model.
        images: What :func:`~captum_clipspan.cache_decomposition` accepts.
        layers: Layers of the per-head terms (``None``: all).
        **kwargs: Further arguments of :func:`~captum_clipspan.cache_decomposition`.

    Returns:
        The cache, or ``None`` in processes other than 0, which have nothing more to do.
    """
    from ..cache import cache_decomposition

    path = args.cache or out_dir(args) / "cache"
    status(f"decomposition cache in {path} (resumes a finished or interrupted pass)")
    cache = cache_decomposition(clip, images, path, layers=layers, batch_size=args.batch_size,
                                num_workers=args.num_workers, **kwargs)
    return None if rank() else cache


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure to ``path`` (PNG) and return the path."""
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` (dicts with the same keys) as a CSV file and return its path."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
