"""Every tutorial runs top to bottom on the toy model, and the notebooks match their source."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))


def _builder():
    spec = importlib.util.spec_from_file_location("build_tutorials",
                                                  ROOT / "scripts" / "build_tutorials.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_tutorials"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_notebooks_are_built_from_the_script(tmp_path):
    built = _builder().build(tmp_path)
    assert [p.name for p in built] == [p.name for p in NOTEBOOKS]
    for path in built:
        assert path.read_text() == (ROOT / "tutorials" / path.name).read_text(), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_executes(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert not errors
