"""The package's import graph points down: no import cycle, and only the CLI and demo use the toy.

The graph is read from the source with ``ast``: every import that runs (at the top of a module or
inside a function; not under ``if TYPE_CHECKING:``), relative imports resolved against the
importing module, and ``importlib.import_module("captum_clipspan...")`` with a literal name. An
import of a name from a package's ``__init__`` is an edge to that ``__init__``, and its own
re-exports are edges from it, so a cycle through a re-export is a cycle.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "captum_clipspan"
TOY = f"{PACKAGE}.toy"
MAY_IMPORT_TOY = (TOY, f"{PACKAGE}.cli", f"{PACKAGE}.demo")


class Edge(NamedTuple):
    """``source`` imports ``target``, at ``where`` (``path:line``)."""

    source: str
    target: str
    where: str


def package_modules(root: Path = ROOT / PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (a package is its
    ``__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return (name == "import_module" and len(call.args) == 1
            and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str))


def runtime_imports(tree: ast.AST) -> list[tuple[str, tuple[str, ...], int, int]]:
    """``(module, names, level, line)`` for each import that runs: ``import a.b`` gives
    ``("a.b", (), 0, line)``, ``from ..a import b, c`` gives ``("a", ("b", "c"), 2, line)``."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, (), 0, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            found.append((node.module or "", names, node.level, node.lineno))
        elif isinstance(node, ast.Call) and _is_import_module(node):
            target = node.args[0].value
            if not target.startswith("."):  # a relative name needs its package= argument
                found.append((target, (), 0, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def resolve(importer: str, is_package: bool, module: str, level: int) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside ``importer``."""
    if level == 0:
        return module
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return ".".join([*base, module] if module else base)


def import_edges(modules: dict[str, Path]) -> list[Edge]:
    """Every runtime import between modules of the package (self-imports left out)."""
    edges = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for module, names, level, line in runtime_imports(tree):
            where = f"{path.relative_to(ROOT)}:{line}"
            target = resolve(importer, is_package, module, level)
            submodules = [f"{target}.{name}" for name in names if f"{target}.{name}" in modules]
            # ``from pkg import name`` runs pkg/__init__ for a name it defines or re-exports; a
            # submodule is imported on its own (its package is already being imported).
            targets = submodules if names and len(submodules) == len(names) else [
                target, *submodules]
            for name in targets:
                while name and name not in modules:  # ``import a.b.c`` of a name inside a.b
                    name = name.rpartition(".")[0]
                if name.startswith(PACKAGE) and name != importer:
                    edges.append(Edge(importer, name, where))
    return edges


def strongly_connected(nodes: list[str], edges: list[Edge]) -> list[list[str]]:
    """The components of the graph with more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {node: set() for node in nodes}
    for edge in edges:
        graph[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def shortest_cycle(start: str, members: set[str], edges: list[Edge]) -> list[Edge]:
    """The shortest cycle through ``start`` inside one component, as its edges in order."""
    outgoing: dict[str, list[Edge]] = {}
    for edge in sorted(edges):
        if edge.source in members and edge.target in members:
            outgoing.setdefault(edge.source, []).append(edge)
    came_by: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for edge in outgoing.get(node, []):
            if edge.target == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came_by[path[0].source])
                return path
            if edge.target not in came_by:
                came_by[edge.target] = edge
                queue.append(edge.target)
    return []


def describe_cycles(components: list[list[str]], edges: list[Edge]) -> str:
    """Each component's cycles, one line per edge with the import that makes it."""
    lines = []
    for component in components:
        lines.append(f"cycle among {len(component)} modules: {', '.join(component)}")
        seen = set()
        for start in component:
            cycle = shortest_cycle(start, set(component), edges)
            key = frozenset((edge.source, edge.target) for edge in cycle)
            if not cycle or key in seen:
                continue
            seen.add(key)
            order = " -> ".join([edge.source for edge in cycle] + [start])
            lines.append(f"  {order}")
            lines += [f"      {edge.source} -> {edge.target}  ({edge.where})" for edge in cycle]
    return "\n".join(lines)


def test_import_graph_resolves_relative_imports_and_skips_type_checking_blocks():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ..validation import resolve_layers\n"
        "from . import capture\n"
        "if TYPE_CHECKING:\n"
        "    from ..hooked.vit import HookedViT\n"
        "else:\n"
        "    import captum_clipspan.text\n"
        "def late():\n"
        "    from .readout import token_terms\n"
        "    importlib.import_module('captum_clipspan.sources')\n"
    )
    found = runtime_imports(ast.parse(source))
    resolved = {resolve(f"{PACKAGE}.decomposition.core", False, module, level)
                for module, _, level, _ in found}
    assert resolved == {"typing", f"{PACKAGE}.validation", f"{PACKAGE}.decomposition",
                        f"{PACKAGE}.text", f"{PACKAGE}.decomposition.readout",
                        f"{PACKAGE}.sources"}
    assert resolve(f"{PACKAGE}.decomposition", True, "core", 1) == f"{PACKAGE}.decomposition.core"


def test_import_graph_sees_the_package_imports():
    modules = package_modules()
    edges = {(edge.source, edge.target) for edge in import_edges(modules)}
    assert (PACKAGE, f"{PACKAGE}.decomposition") in edges  # the eager re-export of decompose
    assert (f"{PACKAGE}.decomposition", f"{PACKAGE}.decomposition.core") in edges
    assert (f"{PACKAGE}.decomposition.core", f"{PACKAGE}.validation") in edges
    assert not any(source == f"{PACKAGE}.decomposition.weights" and target.startswith(
        f"{PACKAGE}.hooked") for source, target in edges)  # under TYPE_CHECKING only


def test_no_import_cycle_in_the_package():
    modules = package_modules()
    edges = import_edges(modules)
    components = strongly_connected(list(modules), edges)
    assert not components, "import cycles (every arrow must point down):\n" + describe_cycles(
        components, edges)


def test_only_the_toy_cli_and_demo_import_the_toy():
    edges = import_edges(package_modules())
    offending = [edge for edge in edges
                 if (edge.target == TOY or edge.target.startswith(TOY + "."))
                 and not any(edge.source == allowed or edge.source.startswith(allowed + ".")
                             for allowed in MAY_IMPORT_TOY)]
    assert not offending, (
        "library modules import the toy (it registers itself through captum_clipspan.registry):\n"
        + "\n".join(f"  {edge.source} -> {edge.target}  ({edge.where})" for edge in offending))


def test_the_model_layer_does_not_import_the_decomposition():
    edges = import_edges(package_modules())
    upward = [edge for edge in edges if edge.source.startswith(f"{PACKAGE}.hooked")
              and edge.target.startswith(f"{PACKAGE}.decomposition")]
    assert not upward, "\n".join(f"{edge.source} -> {edge.target} ({edge.where})"
                                 for edge in upward)


def test_validation_imports_nothing_of_the_package():
    """The validators stand at the bottom: every layer above reads its arguments through them."""
    edges = import_edges(package_modules())
    upward = [edge for edge in edges if edge.source == f"{PACKAGE}.validation"]
    assert not upward, "\n".join(f"{edge.source} -> {edge.target} ({edge.where})"
                                 for edge in upward)
