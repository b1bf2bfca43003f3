"""What a pass has committed: ``progress.json`` (``{"done", "meta"}``: rows ``0..done``), or under
torch.distributed one ``progress.rank{r}.json`` per process (``{"rows", "meta"}``: its spans), each
replaced atomically after every batch and tagged with the identity of the pass."""

from __future__ import annotations

from pathlib import Path

from .batches import Rows, merge_spans
from .format import (
    PROGRESS_FILE,
    RANK_FILE_PATTERN,
    DamagedFile,
    pass_identity,
    read_json,
    write_json_atomic,
)


def rank_progress_name(rank: int) -> str:
    """The name of the progress file of process ``rank`` of a distributed pass."""
    return f"progress.rank{rank}.json"


def rank_progress_files(path: Path) -> list[Path]:
    """The per-process progress files in ``path`` (and their temporary files), sorted."""
    return sorted(file for file in path.glob("progress.rank*")
                  if RANK_FILE_PATTERN.fullmatch(file.name) and file.name.startswith("progress"))


def _read_progress_file(file: Path) -> tuple[Rows, str | None]:
    """The committed spans and the pass identity of ``progress.json`` (``{"done", "meta"}``) or
    of one process's ``progress.rank{r}.json`` (``{"rows", "meta"}``)."""
    value = read_json(file)
    meta = value.get("meta")
    if file.name == PROGRESS_FILE:
        done = value.get("done")
        if type(done) is not int or done < 0 or not isinstance(meta, (str, type(None))):
            raise DamagedFile(file, "damaged (no valid 'done' count)")
        return ([(0, done)] if done else []), meta
    rows = value.get("rows")
    valid = isinstance(rows, list) and all(
        isinstance(span, list) and len(span) == 2 and all(type(end) is int for end in span)
        and 0 <= span[0] < span[1] for span in rows)
    if not valid or not isinstance(meta, str):
        raise DamagedFile(file, "damaged (no valid 'rows' list of [start, stop] spans)")
    return merge_spans(rows), meta


def load_progress(path: Path) -> dict | None:
    """What is committed, from ``progress.json`` and every process's ``progress.rank{r}.json``.

    Returns:
        ``None`` when there is no progress file, else ``{"rows": the committed spans, "done": how
        many rows from row 0 on are committed, "meta": the identity of the pass that committed
        them, "file": the file to name in errors, "sharded": whether per-process files exist}``.
    """
    files = [path / PROGRESS_FILE] if (path / PROGRESS_FILE).exists() else []
    files += [file for file in rank_progress_files(path) if file.suffix == ".json"]
    if not files:
        return None
    rows: Rows = []
    identity, named = None, files[0]
    for file in files:
        spans, meta = _read_progress_file(file)
        if not spans:
            continue
        if rows and meta != identity:
            raise DamagedFile(file, f"damaged (its rows are from another pass than those of "
                                    f"{named.name})")
        rows, identity, named = rows + spans, meta, named if rows else file
    rows = merge_spans(rows)
    done = rows[0][1] if rows and rows[0][0] == 0 else 0
    return {"rows": rows, "done": done, "meta": identity, "file": named,
            "sharded": any(file.name != PROGRESS_FILE for file in files)}


def check_progress(progress: dict, meta: dict) -> None:
    """Raise unless ``progress`` is that of the pass described by ``meta``."""
    stop = progress["rows"][-1][1] if progress["rows"] else 0
    if progress["meta"] != pass_identity(meta) or stop > meta["n"]:
        raise DamagedFile(progress["file"], "not the progress of the pass in meta.json")


class Commits:
    """Records the rows one process committed, after each batch: ``progress.json``'s count in a
    one-process pass from row 0, else the process's own ``progress.rank{r}.json``."""

    def __init__(self, path: Path, identity: str, rank: int, sharded: bool) -> None:
        self.identity = identity
        self.file = path / (rank_progress_name(rank) if sharded else PROGRESS_FILE)
        self.rows: Rows | None = None
        if sharded:  # keep what this rank's file already holds, from an earlier pass
            self.rows = _read_progress_file(self.file)[0] if self.file.exists() else []

    def add(self, start: int, stop: int) -> None:
        """Record rows ``start..stop`` as committed (their arrays already flushed)."""
        if self.rows is None:
            write_json_atomic(self.file, {"done": stop, "meta": self.identity})
            return
        self.rows = merge_spans([*self.rows, (start, stop)])
        write_json_atomic(self.file, {"rows": [list(span) for span in self.rows],
                                      "meta": self.identity})


def fold_rank_progress(path: Path, n: int, identity: str) -> None:
    """Replace the per-process progress files of a finished distributed pass by one
    ``progress.json`` of its ``n`` rows, which marks the cache complete."""
    write_json_atomic(path / PROGRESS_FILE, {"done": n, "meta": identity})
    for file in rank_progress_files(path):
        file.unlink(missing_ok=True)
