"""The package's imports point down only (../shared/DESIGN.md): command lines -> jobs ->
training -> models/data/metrics -> nn -> ops -> the extension, with the utilities every
layer may use at the bottom; metrics import neither data nor training; and no module
imports itself back through others (no import cycle), function-level imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medgan_fast"

# Higher may import lower or equal; the utilities (errors, console, outputs, _version,
# _ext, emulation) sit below everything.
LAYERS = {
    "commands": 6, "jobs": 5, "training": 4, "models": 3, "data": 3, "metrics": 3, "nn": 2, "ops": 1,
    "utilities": 0,
}
COMMANDS = {"__main__", "cli", "patches", "train", "generate", "evaluate", "segment", "augment", "experiment",
            "anomaly", "translate"}
UTILITIES = {"__init__", "errors", "console", "outputs", "_version", "_ext", "emulation"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "utilities"   # the package itself
    top = parts[1]
    if len(parts) == 2 and top in COMMANDS:
        return "commands"
    if len(parts) == 2 and top in UTILITIES:
        return "utilities"
    return top


def imports(path: Path) -> set[str]:
    """The medgan_fast modules `path` imports, anywhere in it (absolute names)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("medgan_fast")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            if not origin.startswith("medgan_fast"):
                continue
            for alias in node.names:   # `from . import gan` names a module, `from . import _C` the extension
                candidate = f"{origin}.{alias.name}"
                if not _is_extension(candidate):
                    found.add(candidate if _exists(candidate) else origin)
    found.discard(name)
    return {module for module in found if _exists(module)}


def _exists(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _is_extension(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return any(path.parent.glob(f"{path.name}.*.so")) or module == "medgan_fast._C"


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


def test_imports_point_down_only():
    wrong = [f"{module} ({layer(module)}) imports {target} ({layer(target)})"
             for module, targets in graph().items() for target in targets
             if LAYERS[layer(target)] > LAYERS[layer(module)]
             or (layer(module) == "metrics" and layer(target) in ("data", "models", "training"))]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle():
    edges = graph()   # a package's __init__ is a module too: importing it runs its imports
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_layer_map_knows_every_module():
    assert all(layer(module) in LAYERS for module in graph()), \
        sorted(module for module in graph() if layer(module) not in LAYERS)
