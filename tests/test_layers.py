"""The package's import graph: every layer imports only downwards, and no module imports itself through others.

Layers, bottom to top (DESIGN.md, "Seams of the design"):
- ``bma``: the science (data regimes, model, losses, estimators, evaluation) and the trial record
  (``bma/record.py``: tag names, trial key, metric registry; it imports nothing else of the package);
- ``analysis``: MLflow -> tables, tests, plots, reports, and the store helpers every writer and reader shares
  (``analysis/store.py``);
- ``trainables``: the Ray Tune trainable and the MLflow writer of a trial;
- ``study``: specs, the driver, progress, precision rounds, resume.

Every import counts, at module level or inside a function (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("bma", "analysis", "trainables", "study")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports (absolute names)."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)  # `from bma import rng` imports bma.rng
    return {m for m in out if m.split(".")[0] in LAYERS}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for layer in LAYERS for p in (REPO / layer).rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports(path):
            # the longest known module the import names (``bma.rng.numpy_rng`` -> ``bma.rng``)
            parts = imported.split(".")
            for n in range(len(parts), 0, -1):
                candidate = ".".join(parts[:n])
                if candidate in modules:
                    if candidate != name:
                        targets.add(candidate)
                    break
        edges[name] = targets
    return edges


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_every_import_points_down_or_sideways():
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets if layer(b) > layer(a))
    assert not upward, "imports that point up a layer:\n  " + "\n  ".join(upward)


def test_the_record_imports_nothing_of_the_package():
    assert graph()["bma.record"] == set()


def test_no_module_imports_itself_through_others():
    edges = graph()
    # package __init__ files re-export their modules: an edge into a package's own __init__ from inside it is the
    # package's own doing, not a circle of the design
    edges = {a: {b for b in t if not (b == a.rpartition(".")[0] and b in edges and a.startswith(b + "."))}
             for a, t in edges.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v, counter=[0]):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, "modules that import each other (directly or through others):\n  " + "\n  ".join(
        " <-> ".join(c) for c in cycles)
