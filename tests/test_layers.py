"""The package's layers: every import inside src/frugalnet points down, and no module imports itself in a cycle.

Layers, top to bottom (ARCHITECTURE.md): what a user runs at the top, what everything uses at the bottom. Packages on
one rank may not import each other.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "frugalnet"

LAYERS = [
    ("__main__",),
    ("cli",),
    ("studies",),
    ("bench",),
    ("experiment",),
    ("engine",),
    ("continual", "frames"),
    ("energy",),
    ("sparsity",),
    ("lowbit",),
    ("models",),
    ("nn",),
    ("kernels",),
    ("report", "data"),
    ("utils",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported frugalnet module, at module level?) for every import statement in the file."""
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("frugalnet"):
            out.append((node.module, id(node) in top_level))
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in top_level) for a in node.names if a.name.startswith("frugalnet")]
    return out


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert packages <= set(RANK), f"packages without a layer in this test: {sorted(packages - set(RANK))}"


def test_imports_point_down():
    upward = []
    for path in SRC.rglob("*.py"):
        here = _package(_module_name(path))
        if here is None:        # frugalnet/__init__.py: the public API re-exports from every layer
            continue
        for module, _ in _imports(path):
            there = _package(module)
            if there is not None and there != here and RANK[there] <= RANK[here]:
                upward.append(f"{path.relative_to(SRC.parent)} imports {module} ({here} -> {there})")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def test_no_import_cycles_between_modules():
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for module, top in _imports(path):
            if top:   # a cycle that matters is one module-level imports make
                while module and module not in modules:
                    module = module.rpartition(".")[0]
                if module and module != name and not name.startswith(module + "."):
                    deps.add(module)
        graph[name] = deps
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
