"""What ``clipspan`` reports in one line (exit code 2) and what keeps its traceback."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SKIP_HINT = "pass --skip-unreadable to leave unreadable images out"
# The library's advice names Python arguments ("pass overwrite=True to cache_decomposition");
# on the command line the same advice is a flag.
_API_ADVICE = re.compile(r"pass (\w+)=True(?: to (?!rebuild)\w+)?")
_REBUILD_ADVICE = re.compile(r"pass overwrite=True(?: to (?!rebuild)\w+)? to rebuild (?:it|the "
                             r"cache), or use (?:a new|another) folder\.?")
_NO_OVERWRITE = ("to rebuild it, delete that folder or give a new one (--cache for a decomposition "
                 "cache), then run again.")


class CommandError(Exception):
    """A problem with the command line, reported without a traceback."""


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

    Args:
        error: The exception a command raised.

    Returns:
        ``True`` for a user error.
    """
    if isinstance(error, (CommandError, OSError)):
        return True
    return isinstance(error, (ValueError, TypeError)) and bool(str(error)) and _raised_here(error)


def error_line(error: BaseException, args: argparse.Namespace) -> str:
    """One line for a user error, with what to do about an unreadable image.

    Args:
        error: A user error (see :func:`is_user_error`).
        args: The parsed command line (an unreadable image gets a hint when the command takes
            ``--skip-unreadable``).

    Returns:
        The message, on one line.
    """
    from PIL import UnidentifiedImageError

    from ..sources import UnreadableImageError

    message = str(error).strip()
    if "Original Traceback" in message:  # re-raised from a DataLoader worker: its last line
        message = message.splitlines()[-1].split(": ", 1)[-1]
    message = " ".join(message.split()) or type(error).__name__
    message = in_cli_words(message, args)
    if isinstance(error, UnidentifiedImageError):
        message += " (not an image, or a corrupt file)"
    if isinstance(error, (UnidentifiedImageError, UnreadableImageError)) and hasattr(
            args, "skip_unreadable"):
        message = f"{message.rstrip('.')}; {SKIP_HINT}"
    return message


def in_cli_words(message: str, args: argparse.Namespace) -> str:
    """The library's advice in command-line words: ``pass overwrite=True to
    cache_decomposition`` becomes ``pass --overwrite`` for a command with that flag (and, for a
    cache the command has no flag to rebuild, how to start afresh).

    Args:
        message: A user error's message.
        args: The parsed command line (its options say which flags exist).

    Returns:
        The message with every Python-argument advice the command can follow as a flag.
    """
    def flag(match: re.Match) -> str:
        name = match.group(1)
        if isinstance(getattr(args, name, None), bool):
            return f"pass --{name.replace('_', '-')}"
        return match.group(0)

    if not isinstance(getattr(args, "overwrite", None), bool):
        message = _REBUILD_ADVICE.sub(_NO_OVERWRITE, message)
    return _API_ADVICE.sub(flag, message)
