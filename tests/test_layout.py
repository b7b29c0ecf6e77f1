"""The package's layout as DESIGN.md states it: imports point one way (no cycles, lazy imports inside functions
included), and no module imports another's private helpers (a name with a leading underscore)."""

import ast
from pathlib import Path

import gradfit

PACKAGE = Path(gradfit.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, str]]:
    """(module imported, name imported) for every relative import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.append((full if full in modules else target, alias.name))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target, _ in _imports(name, path, modules) if target != name and target != "gradfit"}
        for name, path in modules.items()
        if name != "gradfit"  # (the package's lazy map of the public API names every module)
    }


def test_no_module_imports_another_that_imports_it_back():
    graph = _graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a in reaches(b)})
    assert cycles == [], cycles


def test_no_module_imports_another_modules_private_helpers():
    modules = _modules()
    private = [
        f"{name} imports {imported} from {target}"
        for name, path in modules.items()
        for target, imported in _imports(name, path, modules)
        if imported.startswith("_") and not imported.startswith("__") and f"{target}.{imported}" not in modules
    ]
    assert private == [], private


def test_the_graph_sees_the_imports_it_checks():
    """The checks above would pass on an empty graph: the engine's imports are found, lazy ones included."""
    graph = _graph()
    assert {"gradfit.stream", "gradfit.options", "gradfit.engine_problem"} <= graph["gradfit.engine"]
    assert "gradfit.trace" in graph["gradfit.engine_problem"]
    assert "gradfit.engine" in graph["gradfit.cli.fit"]  # (imported inside a function)


def test_no_module_reaches_into_another_modules_private_names():
    """``from . import plots`` then ``plots._data(...)`` is the same private import, spelled as an attribute."""
    modules = _modules()
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        # the names bound to a module of the package: `from . import plots` binds plots to gradfit.plots
        imported = {alias for target, alias in _imports(name, path, modules) if target.endswith(f".{alias}")}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{name} uses {node.value.id}.{node.attr}")
    assert found == [], found
