"""Build the tutorial notebooks ``tutorials/*.ipynb`` from their sources ``tutorials/*.py``.

The sources are jupytext percent files (``# %%`` code cells, ``# %% [markdown]`` text cells), linted
with the rest of the repository. Each one is converted with jupytext, executed top to bottom in a
fresh kernel (nbclient) from the ``tutorials/`` folder, and written with its outputs, figures as
PNG, so that GitHub and the docs show them without running anything. The notebook records the
SHA-256 of its source (``metadata.clipspan.source_sha256``); ``tests/test_tutorials.py`` checks it,
so a source edited without a rebuild fails the tests.

Needs ``pip install -e ".[tutorials]"`` (jupytext, nbclient, ipykernel)::

    python scripts/build_tutorials.py                 # every tutorial
    python scripts/build_tutorials.py 02_textspan     # one (a name or a path)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def source_sha256(source: Path) -> str:
    """The hash a notebook records of the source it was built from."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def sources() -> list[Path]:
    """Every tutorial source, in order."""
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def build_one(source: Path, timeout: int = 600) -> Path:
    """Convert, execute and write the notebook of one source; returns its path."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    notebook = jupytext.read(source, fmt="py:percent")
    notebook.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"},
                         "clipspan": {"source": source.name,
                                      "source_sha256": source_sha256(source)}}
    for index, cell in enumerate(notebook.cells):
        cell.id = f"{source.stem}-{index}"
        cell.metadata = {}
    # tqdm.auto warns in a kernel without ipywidgets; the warning is not part of the tutorial
    os.environ.setdefault("PYTHONWARNINGS", "ignore:IProgress not found")
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            record_timing=False, allow_errors=False,
                            resources={"metadata": {"path": str(source.parent)}})
    client.execute()
    notebook.metadata = {key: notebook.metadata[key]
                         for key in ("kernelspec", "language_info", "clipspan")}
    path = source.with_suffix(".ipynb")
    nbformat.validate(notebook)
    nbformat.write(notebook, path)
    return path


def resolve(name: str) -> Path:
    """A tutorial source from its name (``02_textspan``, or a prefix: ``02``) or path."""
    path = Path(name)
    candidates = [path, TUTORIALS / path.name, TUTORIALS / f"{path.stem}.py"]
    for candidate in candidates:
        if candidate.suffix == ".py" and candidate.is_file():
            return candidate.resolve()
    matches = [source for source in sources() if source.stem.startswith(path.stem)]
    if len(matches) == 1:
        return matches[0]
    raise SystemExit(f"no tutorial source {name!r}; the sources are: "
                     f"{', '.join(p.stem for p in sources())}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="tutorials to build (default: all)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    chosen = [resolve(name) for name in args.names] or sources()
    total = time.perf_counter()
    for source in chosen:
        start = time.perf_counter()
        path = build_one(source, timeout=args.timeout)
        print(f"built {path.relative_to(ROOT)} in {time.perf_counter() - start:.1f} s",
              flush=True)
    print(f"{len(chosen)} tutorial(s) in {time.perf_counter() - total:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
