"""No import cycle anywhere in the package: each module can be read without the ones that
import it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The folders of the design card and the namespace each installs as.
LAYERS = {"ilinkbot": "ilinkbot", "bot": "ilinkbot.bot", "cdn": "ilinkbot.cdn",
          "ilink": "ilinkbot.ilink", "store": "ilinkbot.store"}  # fmt: skip


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [LAYERS[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, at the top or deferred inside a function (a deferred
    import still ties the two modules together), but not those under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def test_no_import_cycle_anywhere() -> None:
    modules: dict[str, Path] = {}
    for folder in LAYERS:
        for path in (ROOT / folder).rglob("*.py"):
            modules[_module_name(path)] = path
    graph = {
        name: {
            dep
            for dep in _imports(path, name)
            if dep in modules and dep != name and not name.startswith(dep + ".")
        }
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                walk(dep, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)
