"""The pipeline runs bottom to top in the package's folders: a module imports only its own floor or lower.

    errors, artifacts, layout … → data → models → encode, evaluation → training → analysis
    → study wing (presets, bases, plan, disk, claims, summary, study) → report → cli
"""

import ast
from pathlib import Path

import factrecall

ROOT = Path(factrecall.__file__).parent
FLOORS = [
    {"errors", "artifacts", "layout", "devices", "provenance", "memory", "__init__"},
    {"data"},
    {"models"},
    {"encode", "evaluation"},
    {"training"},
    {"analysis"},
    {"presets", "bases", "plan", "plan_analyses", "disk", "plan_study", "claims", "summary", "study"},
    {"report"},
    {"cli", "__main__"},
]


def floor(module: str) -> int:
    """The floor of `factrecall.<top>...`, by its first component."""
    top = module.split(".")[0]
    return next(i for i, names in enumerate(FLOORS) if top in names)


def imports(path: Path) -> set[str]:
    """factrecall modules a file imports (at any depth of the file: lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("factrecall."):
            found.add(node.module.removeprefix("factrecall."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("factrecall.") for a in node.names if a.name.startswith("factrecall."))
    return found


def test_nothing_imports_upward():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for target in imports(path):
            if floor(target) > floor(module):
                upward.append(f"{module} imports {target}")
    assert not upward, upward


def test_no_import_circles():
    """No module reaches itself through imports (lazy ones too), inside a floor either."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in ROOT.rglob("*.py")}
    graph = {m: {t for t in imports(p) if t in modules and t != m} for m, p in modules.items()}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for target in graph[module]:
            if target in path:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    done: set[str] = set()
    for module in modules:
        if module not in done:
            visit(module, [module])
    assert not circles, circles


def test_every_module_has_a_floor():
    for path in ROOT.rglob("*.py"):
        floor(".".join(path.relative_to(ROOT).with_suffix("").parts))
