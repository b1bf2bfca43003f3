"""The shipped tutorial notebooks are built from their sources, executed, with their figures.

``scripts/build_tutorials.py`` executes the notebooks (too slow for the test suite); these tests
read what it wrote, without jupytext or a kernel.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
FIGURE_CELL = re.compile(r"(^|\n)(fig|display\(fig\))\s*$")


def _notebook(source: Path) -> dict:
    path = source.with_suffix(".ipynb")
    assert path.is_file(), f"{path.name} missing: run python scripts/build_tutorials.py"
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_tutorial_has_a_source_and_a_notebook():
    notebooks = sorted((ROOT / "tutorials").glob("*.ipynb"))
    assert len(SOURCES) >= 5
    assert [p.stem for p in notebooks] == [p.stem for p in SOURCES]


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_is_built_from_its_current_source(source):
    notebook = _notebook(source)
    recorded = notebook["metadata"].get("clipspan", {}).get("source_sha256")
    assert recorded == hashlib.sha256(source.read_bytes()).hexdigest(), (
        f"{source.name} changed since its notebook was built: python scripts/build_tutorials.py "
        f"{source.stem}")
    text = source.read_text(encoding="utf-8")
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            code = "".join(cell["source"]).replace("%matplotlib", "# %matplotlib")
            assert code in text, code[:80]


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_is_executed_with_a_png_for_every_figure(source):
    cells = [c for c in _notebook(source)["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in cells), "not executed"
    errors = [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors
    figure_cells = [c for c in cells if FIGURE_CELL.search("".join(c["source"]))]
    assert figure_cells, "every tutorial draws at least one figure"
    for cell in figure_cells:
        pngs = [o for o in cell["outputs"] if "image/png" in o.get("data", {})]
        assert pngs, "".join(cell["source"])[-200:]
        assert not any("<Figure size" in "".join(o.get("data", {}).get("text/plain", ""))
                       and "image/png" not in o.get("data", {}) for o in cell["outputs"])


def test_library_figures_display_as_png_in_ipython():
    formatters = pytest.importorskip("IPython.core.formatters")
    from captum_clipspan.visualization import plot_head_grid

    fig, _ = plot_head_grid([[0.1, 0.2], [0.3, 0.4]])
    png = formatters.PNGFormatter()(fig)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
