"""Sphinx configuration for captum_clipspan.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Pages are Markdown (MyST) except ``api.rst``. The tutorials are the notebooks in ``../tutorials``:
they are copied into ``docs/tutorials/`` (a build-time copy, ignored by git) and rendered by myst-nb
without being executed. Nothing is fetched from the network while building.
"""

from __future__ import annotations

import importlib
import re
import shutil
import sys
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the working tree, installed or not

import captum_clipspan  # noqa: E402

project = "captum_clipspan"
author = "captum_clipspan contributors"
copyright = "captum_clipspan contributors"
release = version = captum_clipspan.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # ships MathJax in _static/: the math page renders offline
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "README.md"]
templates_path: list[str] = []

# --- MyST / myst-nb -------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # CI executes the notebooks separately
nb_merge_streams = True

# --- autodoc / napoleon ---------------------------------------------------------------------------
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autosummary_generate = False  # tables only; the objects are documented on the API page itself
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # dataclass "Attributes:" as fields, not duplicate attribute entries
napoleon_use_rtype = False

# --- HTML -----------------------------------------------------------------------------------------
try:
    importlib.import_module("sphinx_rtd_theme")
    html_theme = "sphinx_rtd_theme"
except ImportError:  # the docs still build (with Sphinx's default theme) without it
    html_theme = "alabaster"
html_title = f"captum_clipspan {release}"
html_static_path: list[str] = []


# --- tutorials: ../tutorials/*.ipynb -> docs/tutorials/ ------------------------------------------
NO_TUTORIALS = "No tutorials yet: add notebooks to `tutorials/` at the root of the repository."
GLOB_TOCTREE = re.compile(r"^```\{toctree\}\n(?:.*\n)*?:glob:\n(?:.*\n)*?```$", re.MULTILINE)


def copy_tutorials(source: Path, target: Path) -> list[str]:
    """Mirror the notebooks of ``source`` into ``target``; returns their names."""
    notebooks = sorted(source.glob("*.ipynb"))
    target.mkdir(exist_ok=True)
    names = {nb.name for nb in notebooks}
    for stale in target.glob("*.ipynb"):
        if stale.name not in names:
            stale.unlink()
    for notebook in notebooks:
        copy = target / notebook.name
        if not copy.exists() or copy.read_bytes() != notebook.read_bytes():
            shutil.copy2(notebook, copy)
    return sorted(names)


def on_config_inited(app, config) -> None:
    """Copy ``<repo>/tutorials/*.ipynb`` into ``docs/tutorials/`` before the sources are read."""
    srcdir = Path(app.srcdir)
    copy_tutorials(srcdir.parent / "tutorials", srcdir / "tutorials")


def drop_empty_tutorial_toctree(app, docname, source) -> None:
    """Without notebooks, replace tutorials.md's glob toctree (it would warn: no match) by a note.

    Sphinx 9 emits that warning without a type, so ``suppress_warnings`` cannot silence it.
    """
    if docname == "tutorials" and not any((Path(app.srcdir) / "tutorials").glob("*.ipynb")):
        source[0] = GLOB_TOCTREE.sub(NO_TUTORIALS, source[0])


# --- API page helpers -----------------------------------------------------------------------------
class ModuleSections(SphinxDirective):
    """``.. module-sections::`` with one module name per line: a section + automodule for each."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for name in (line.strip() for line in self.content):
            if name:
                title = f"``{name}``"
                lines += [title, "~" * len(title), "", f".. automodule:: {name}", ""]
        return self.parse_text_to_nodes("\n".join(lines), allow_section_headings=True)


class TopLevelSummary(SphinxDirective):
    """``.. top-level-summary::``: an autosummary table of ``captum_clipspan.__all__``.

    Each name links to the module section that documents it, so new top-level exports appear
    without editing the page (their module still needs a line in ``module-sections``).
    """

    def run(self) -> list[nodes.Node]:
        lines = [".. currentmodule:: captum_clipspan", "",
                 ".. autosummary::", "   :nosignatures:", ""]
        for name in captum_clipspan.__all__:
            obj = getattr(captum_clipspan, name)
            module = obj.__module__.removeprefix("captum_clipspan.")
            lines.append(f"   ~{module}.{obj.__qualname__}")
        return self.parse_text_to_nodes("\n".join(lines))


def resolve_top_level_names(app, env, node, contnode):
    """Link ``captum_clipspan.X`` (a lazy top-level re-export) to where ``X`` is documented."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("captum_clipspan."):
        return None
    head, _, rest = target.removeprefix("captum_clipspan.").partition(".")
    if head not in captum_clipspan.__all__:
        return None
    obj = getattr(captum_clipspan, head)
    canonical = f"{obj.__module__}.{obj.__qualname__}" + (f".{rest}" if rest else "")
    if canonical == target:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], canonical,
                               node, contnode)


def setup(app):
    app.add_directive("module-sections", ModuleSections)
    app.add_directive("top-level-summary", TopLevelSummary)
    app.connect("missing-reference", resolve_top_level_names)
    app.connect("config-inited", on_config_inited)
    app.connect("source-read", drop_empty_tutorial_toctree)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
