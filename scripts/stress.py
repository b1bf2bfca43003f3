"""Stress the decomposition cache for a bounded time and check every result against a
single-threaded recomputation.

On one model (the shipped toy) and one image folder, rounds of these scenarios run in random order
until the time is up, each checked bit for bit against a cache and a decomposition computed once,
single-threaded, at the start:

- ``threads``: one thread writes a cache while another decomposes a fixed batch, reads the
  partial cache (its committed rows) and tries a second pass into the same folder (refused, or
  given the finished cache);
- ``processes``: a pass in two processes of one torch.distributed (gloo) group;
- ``kill``: a pass of one or two processes SIGKILLed at a random moment, then resumed by one or
  two processes;
- ``writers``: two independent processes writing one folder at once (one is refused or finds it
  finished), then a resume;
- ``damage``: a flipped byte, two arrays swapped, a progress file claiming rows never written, a
  tampered text-embedding cache file: each detected (a ValueError, or the file replaced);
- ``full disk``: a pass on a small tmpfs that fills up during the pass (an OSError, no
  temporary file left), a text-embedding cache that cannot be written (a warning, no temporary
  file), then a resume on the freed disk. It needs root and permission to mount a tmpfs; it is
  skipped with a message otherwise.

Prints the checks per scenario and ``N passed, N failed``; exits 1 if any check failed.

Usage::

    python scripts/stress.py [--seconds 180] [--seed 0] [--images 24] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import captum_clipspan as cs
from captum_clipspan.text_cache import encode_texts_cached
from captum_clipspan.toy.scenes import write_image_folder

BATCH = 4
TEXTS = ["a red circle", "a blue square", "a striped background"]


class Stress:
    """The model, the images, the reference results and the tally of checks."""

    def __init__(self, workdir: Path, n_images: int, seed: int) -> None:
        self.workdir, self.random = workdir, random.Random(seed)
        self.clip = cs.HookedCLIP.from_pretrained("toy")
        self.images = write_image_folder(workdir / "images", n_images, seed=seed)
        self.reference = cs.cache_decomposition(self.clip, self.images, workdir / "reference",
                                                batch_size=BATCH, show_progress=False)
        self.batch = torch.stack([cs.ImageFolder(self.images, self.clip.preprocess)[i][0]
                                  for i in range(BATCH)])
        self.parts = cs.decompose(self.clip, self.batch)
        self.tally: Counter = Counter()
        self.failures: list[str] = []
        self.serial = 0

    def folder(self, name: str) -> Path:
        """A new folder under the work folder."""
        self.serial += 1
        return self.workdir / f"{name}-{self.serial}"

    def check(self, scenario: str, what: str, ok: bool, detail: str = "") -> None:
        self.tally[scenario, ok] += 1
        if not ok:
            self.failures.append(f"{scenario}: {what} {detail}".strip())

    def same_as_reference(self, scenario: str, path: Path) -> None:
        """Check that the cache at ``path`` is the reference, bit for bit, and verifies."""
        try:
            cache = cs.DecompositionCache.open(path)
            cache.verify()
            same = all(np.array_equal(np.asarray(getattr(cache, name)),
                                      np.asarray(getattr(self.reference, name)))
                       for name in self.reference.meta["fields"])
            self.check(scenario, f"the cache at {path.name} equals the reference", same)
        except (OSError, ValueError) as error:
            self.check(scenario, f"the cache at {path.name} opens", False, str(error))

    def run(self, path: Path, **kwargs: object) -> cs.DecompositionCache:
        return cs.cache_decomposition(self.clip, self.images, path, batch_size=BATCH,
                                      show_progress=False, **kwargs)


# Scenarios -----------------------------------------------------------------------------------

def threads(stress: Stress) -> None:
    path, errors = stress.folder("threads"), []
    writer = threading.Thread(target=lambda: _capture(errors, lambda: stress.run(path)))
    writer.start()
    while writer.is_alive():
        parts = cs.decompose(stress.clip, stress.batch)
        stress.check("threads", "a decomposition beside a pass equals the single-threaded one",
                     torch.equal(parts.heads, stress.parts.heads)
                     and torch.equal(parts.image_embed, stress.parts.image_embed))
        try:
            partial = cs.DecompositionCache.open(path, allow_partial=True)
            rows = len(partial)
            stress.check("threads", "the committed rows of a partial cache are the reference's",
                         np.array_equal(partial.tensor("heads"),
                                        stress.reference.tensor("heads", slice(0, rows))))
        except ValueError as error:  # not started yet, or no row committed
            stress.check("threads", "a partial cache opens or is said to be incomplete",
                         "incomplete" in str(error) or "not a decomposition cache" in str(error),
                         str(error))
        try:
            stress.run(path)
            stress.check("threads", "a second pass gets the finished cache", True)
        except RuntimeError as error:
            stress.check("threads", "a second writer is refused", "being written" in str(error),
                         str(error))
    writer.join()
    errors = [error for error in errors if "being written" not in error]  # the other went first
    stress.check("threads", "the writing thread finished", not errors, "; ".join(errors))
    stress.same_as_reference("threads", path)


def processes(stress: Stress) -> None:
    path = stress.folder("processes")
    codes = _group(stress, path, world=2)
    stress.check("processes", "both processes of a pass exit 0", codes == [0, 0], str(codes))
    stress.same_as_reference("processes", path)


def kill(stress: Stress) -> None:
    path = stress.folder("kill")
    world = stress.random.choice([1, 2])
    _group(stress, path, world=world, kill_after=stress.random.uniform(0.0, 1.5))
    resumers = stress.random.choice([1, 2])
    if resumers == 1:
        try:
            stress.run(path)
        except (OSError, ValueError, RuntimeError) as error:
            stress.check("kill", "a killed pass resumes in one process", False, str(error))
    else:
        codes = _group(stress, path, world=2)
        stress.check("kill", "a killed pass resumes in two processes", codes == [0, 0],
                     str(codes))
    stress.same_as_reference("kill", path)


def writers(stress: Stress) -> None:
    path = stress.folder("writers")
    outcomes = [stress.workdir / f"outcome-{stress.serial}-{index}" for index in range(2)]
    children = [_fork(lambda out=out: _write_outcome(stress, path, out)) for out in outcomes]
    for child in children:
        child.join(120)
    said = [out.read_text() if out.exists() else f"exit {child.exitcode}"
            for out, child in zip(outcomes, children, strict=True)]
    stress.check("writers", "each writer finishes or is refused as a second writer",
                 all(text in ("ok", "refused") for text in said) and "ok" in said, str(said))
    stress.run(path)
    stress.same_as_reference("writers", path)


def damage(stress: Stress) -> None:
    path = stress.folder("damage")
    shutil.copytree(stress.reference.path, path)
    kind = stress.random.choice(["flip", "swap", "claim", "text"])
    if kind == "text":
        _tampered_text_cache(stress)
        return
    if kind == "flip":
        name = stress.random.choice([n for n in stress.reference.meta["fields"]
                                     if n != "checksums"])
        file = path / f"{name}.npy"
        data = bytearray(file.read_bytes())
        at = len(data) - 1 - stress.random.randrange(np.load(file, mmap_mode="r").nbytes)
        data[at] ^= 1 << stress.random.randrange(8)
        file.write_bytes(bytes(data))
    elif kind == "swap":
        os.replace(path / "attns.npy", path / "swap")
        os.replace(path / "mlps.npy", path / "attns.npy")
        os.replace(path / "swap", path / "mlps.npy")
    else:  # a pass killed after its first batch, whose progress then claims every row
        shutil.rmtree(path)
        _group(stress, path, world=1, stop_at=BATCH + 1)
        progress = json.loads((path / "progress.json").read_text())
        progress["done"] = len(stress.reference)
        (path / "progress.json").write_text(json.dumps(progress))
    try:
        cs.DecompositionCache.open(path).verify()
        stress.check("damage", f"damage ({kind}) is detected", False, "verify() passed")
    except ValueError as error:
        stress.check("damage", f"damage ({kind}) is detected", "damaged" in str(error)
                     or "never written" in str(error), str(error))


def full_disk(stress: Stress) -> bool:
    """Run the full-disk scenario; ``False`` when a tmpfs cannot be mounted here."""
    mount = stress.folder("tmpfs")
    mount.mkdir()
    size = sum(file.stat().st_size for file in stress.reference.path.iterdir()) + (64 << 10)
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        return False
    try:
        path, filler = mount / "cache", mount / "filler"
        fill = _Filling(stress.images, stress.clip.preprocess, filler, at=BATCH + 1)
        try:
            cs.cache_decomposition(stress.clip, fill, path, batch_size=BATCH,
                                   show_progress=False)
            stress.check("full disk", "a pass on a full disk raises", False)
        except OSError as error:
            stress.check("full disk", "a pass on a full disk is an ENOSPC OSError",
                         error.errno == errno.ENOSPC, str(error))
        stress.check("full disk", "no temporary file is left in the cache folder",
                     not list(path.glob("*.tmp")), str(list(path.iterdir())))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            embeddings = encode_texts_cached(stress.clip, TEXTS, directory=mount / "text",
                                             show_progress=False)
        stress.check("full disk", "the text cache warns and leaves no temporary file",
                     any("could not be written" in str(w.message) for w in caught)
                     and not list((mount / "text").glob("*.tmp")))
        stress.check("full disk", "the texts are encoded anyway",
                     torch.equal(embeddings, stress.clip.encode_text(TEXTS).cpu()))
        filler.unlink()
        stress.run(path)
        stress.same_as_reference("full disk", path)
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    return True


# Helpers ---------------------------------------------------------------------------------------

class _Filling(cs.ImageFolder):
    """An image folder that fills the disk of ``filler`` when image ``at`` is read."""

    def __init__(self, root: Path, transform: object, filler: Path, at: int) -> None:
        super().__init__(root, transform)
        self.filler, self.at = filler, at

    def __getitem__(self, index: int) -> object:
        if index == self.at and not self.filler.exists():
            with open(self.filler, "wb") as handle:
                try:
                    while True:
                        handle.write(bytes(1 << 16))
                        handle.flush()
                except OSError:
                    pass
        return super().__getitem__(index)


def _capture(errors: list[str], work: Callable[[], object]) -> None:
    try:
        work()
    except Exception as error:  # noqa: BLE001 (the stress run reports any error as a failure)
        errors.append(f"{type(error).__name__}: {error}")


def _fork(target: Callable[[], None]) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=target)
    process.start()
    return process


def _write_outcome(stress: Stress, path: Path, out: Path) -> None:
    torch.set_num_threads(1)
    try:
        stress.run(path)
        out.write_text("ok")
    except RuntimeError as error:
        out.write_text("refused" if "being written" in str(error) else f"error: {error}")
    except Exception as error:  # noqa: BLE001
        out.write_text(f"error: {type(error).__name__}: {error}")


class _StopAt(cs.ImageFolder):
    """An image folder whose process kills itself when image ``at`` is read."""

    def __init__(self, root: Path, transform: object, at: int) -> None:
        super().__init__(root, transform)
        self.at = at

    def __getitem__(self, index: int) -> object:
        if index == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(index)


def _member(rank: int, world: int, store: str, stress: Stress, path: Path,
            stop_at: int | None) -> None:
    torch.set_num_threads(1)
    images = (stress.images if stop_at is None else
              _StopAt(stress.images, stress.clip.preprocess, stop_at))
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                             world_size=world,
                                             timeout=datetime.timedelta(seconds=60))
    try:
        cs.cache_decomposition(stress.clip, images, path, batch_size=BATCH, show_progress=False)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _group(stress: Stress, path: Path, world: int, kill_after: float | None = None,
           stop_at: int | None = None) -> list[int | None]:
    """Run a pass in ``world`` forked processes (one torch.distributed group); SIGKILL them all
    after ``kill_after`` seconds if given. Their exit codes."""
    store = str(stress.folder("store"))
    members = [_fork(lambda rank=rank: _member(rank, world, store, stress, path, stop_at))
               for rank in range(world)]
    if kill_after is not None:
        time.sleep(kill_after)
        for member in members:
            if member.is_alive():
                os.kill(member.pid, signal.SIGKILL)
    for member in members:
        member.join(120)
    return [member.exitcode for member in members]


def _tampered_text_cache(stress: Stress) -> None:
    folder = stress.folder("text")
    first = encode_texts_cached(stress.clip, TEXTS, directory=folder, show_progress=False)
    (file,) = folder.glob("*.pt")
    stored = torch.load(file, weights_only=True)
    stored["embeddings"] = stored["embeddings"].flip(0)
    torch.save(stored, file)
    again = encode_texts_cached(stress.clip, TEXTS, directory=folder, show_progress=False)
    stress.check("damage", "a tampered text cache file is encoded anew",
                 torch.equal(again, first)
                 and torch.equal(torch.load(file, weights_only=True)["embeddings"], first))


# Main -----------------------------------------------------------------------------------------

SCENARIOS = {"threads": threads, "processes": processes, "kill": kill, "writers": writers,
             "damage": damage}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180,
                        help="how long to run (default: 180); the running scenario finishes")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--images", type=int, default=24, help="images (default: 24)")
    parser.add_argument("--workdir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        stress = Stress(Path(workdir), args.images, args.seed)
        runs: Counter = Counter()
        scenarios: dict[str, Callable[[Stress], object]] = dict(SCENARIOS)
        if full_disk(stress):
            runs["full disk"] += 1
            scenarios["full disk"] = full_disk
        else:
            print("full disk: skipped (needs root and permission to mount a tmpfs)")
        order = list(SCENARIOS)
        while time.monotonic() - started < args.seconds or order:
            name = order.pop(0) if order else stress.random.choice(list(scenarios))
            scenarios[name](stress)
            runs[name] += 1
    for name in ["full disk", *SCENARIOS]:
        if runs[name]:
            print(f"{name}: {runs[name]} runs, {stress.tally[name, True]} checks passed, "
                  f"{stress.tally[name, False]} failed")
    for failure in stress.failures[:20]:
        print(f"FAILED {failure}")
    passed = sum(count for (_, ok), count in stress.tally.items() if ok)
    failed = sum(count for (_, ok), count in stress.tally.items() if not ok)
    print(f"{passed} passed, {failed} failed in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
