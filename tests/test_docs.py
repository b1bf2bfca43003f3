"""The Sphinx documentation builds with warnings as errors, tutorial notebooks included."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")

ROOT = Path(__file__).resolve().parents[1]

# A notebook as the tutorials are stored: a title cell, code and saved outputs (never executed).
NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    },
    "cells": [
        {"cell_type": "markdown", "id": "title", "metadata": {},
         "source": ["# Docs build check\n", "\n", "Math renders: $\\cos(y, t)$."]},
        {"cell_type": "code", "id": "code", "metadata": {}, "execution_count": 1,
         "source": ["import captum_clipspan as cs\n", "print(cs.__version__)"],
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["0.1.0\n"]}]},
    ],
}


def test_docs_build_with_warnings_as_errors(tmp_path):
    # Build a copy, so that the build-time copies of the notebooks stay out of the working tree.
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs",
                    ignore=shutil.ignore_patterns("_build", "tutorials", "__pycache__"))
    tutorials = project / "tutorials"
    tutorials.mkdir()
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        shutil.copy2(notebook, tutorials / notebook.name)
    (tutorials / "zz_docs_build_check.ipynb").write_text(json.dumps(NOTEBOOK), encoding="utf-8")

    html = tmp_path / "html"
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(project / "docs"), str(html)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )
    assert result.returncode == 0, result.stdout + result.stderr

    for page in ["index.html", "math.html", "api.html", "tutorials.html",
                 "tutorials/zz_docs_build_check.html"]:
        assert (html / page).is_file(), page
    math = (html / "math.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]*src="([^"]*)"', math)
    assert "_static/mathjax/tex-chtml.js" in scripts, scripts  # MathJax ships with the docs
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert not [src for src in scripts if "://" in src], scripts  # nothing from the network
    api = (html / "api.html").read_text(encoding="utf-8")
    assert "HeadContribution" in api and "decompose" in api
    import captum_clipspan

    undocumented = []
    for name in captum_clipspan.__all__:
        obj = getattr(captum_clipspan, name)
        if f'id="{obj.__module__}.{obj.__qualname__}"' not in api:
            undocumented.append(f"{name} ({obj.__module__})")
    assert not undocumented, ("top-level names whose module has no section on the API page; add "
                              f"the module to module-sections in docs/api.rst: {undocumented}")
    assert "Docs build check" in (html / "tutorials.html").read_text(encoding="utf-8")


def test_tutorials_page_builds_without_notebooks(tmp_path):
    """With no notebooks, tutorials.md's glob toctree (which would warn) is replaced by a note."""
    spec = importlib.util.spec_from_file_location("clipspan_docs_conf", ROOT / "docs" / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    (tmp_path / "tutorials").mkdir()
    source = [(ROOT / "docs" / "tutorials.md").read_text(encoding="utf-8")]
    assert "{toctree}" in source[0]
    conf.drop_empty_tutorial_toctree(SimpleNamespace(srcdir=tmp_path), "tutorials", source)
    assert "{toctree}" not in source[0] and conf.NO_TUTORIALS in source[0]


def test_the_api_page_lists_every_module():
    """Every module of the package has a section on the API page (package ``__init__`` files only
    when they define something of their own rather than re-exporting)."""
    import ast

    package = ROOT / "captum_clipspan"
    listed = set(re.findall(r"^   (captum_clipspan[\w.]*)$",
                            (ROOT / "docs" / "api.rst").read_text(encoding="utf-8"), re.MULTILINE))
    expected = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(part.startswith("_") and part != "__init__" for part in parts):
            continue
        if parts[-1] == "__init__":
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if not any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in tree.body):
                continue
            parts = parts[:-1]
        expected.add(".".join(parts))
    assert not expected - listed, f"add to module-sections in docs/api.rst: {expected - listed}"
    assert not listed - expected, f"no such module: {listed - expected}"
