"""The explorer's files: the page and its script and style (shipped in ``static/``), the data
as a script (a ``fetch`` of a local file fails under ``file://``) and the thumbnails."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["DATA_FILE", "STATIC", "THUMBS", "clear_thumbnails", "write_site"]

STATIC = Path(__file__).resolve().parent / "static"
THUMBS = "thumbs"
DATA_FILE = "explorer-data.js"
PAGE_FILES = ("index.html", "explorer.js", "explorer.css")


def clear_thumbnails(out: Path, keep: Iterable[str] = ()) -> None:
    """Remove the thumbnails of an earlier build in ``out`` (only where ``out`` holds an
    explorer: its data file), so the folder holds only what the new build references.

    Thumbnails named in ``keep`` (file names, ``"12.jpg"``) stay: the new build writes them
    again, or leaves them when their bytes are unchanged (:func:`~.images.write_thumbnail`),
    which costs far less than removing them (milliseconds a file on some disks).
    """
    if (out / DATA_FILE).is_file():
        kept = set(keep)
        for thumbnail in (out / THUMBS).glob("*.jpg"):
            if thumbnail.name not in kept:
                thumbnail.unlink()


def write_site(out: Path, data: dict[str, Any]) -> Path:
    """Write the page files and ``data`` (as ``window.EXPLORER_DATA``) into ``out``; return the
    path of ``index.html``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copyfile(STATIC / name, out / name)
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    (out / DATA_FILE).write_text(f"window.EXPLORER_DATA = {payload};\n", encoding="utf-8")
    return out / "index.html"
