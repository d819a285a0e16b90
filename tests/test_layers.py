"""The pipeline runs bottom to top in the package's folders: a module imports only its own floor or lower.

    errors, artifacts, layout, terms … → data → models → encode, evaluation → training → analysis
    → config (presets, study config files) → plan (memory and disk) → study (the study wing) → report → cli

Inside `analysis/`, the analyses are peers: each imports the shared primitives, never another analysis
(their data dependencies, e.g. graft's use of the shared mask, go through the run directory).
"""

import ast
from pathlib import Path

import factrecall

ROOT = Path(factrecall.__file__).parent
FLOORS = [
    {"errors", "checks", "progress", "artifacts", "layout", "terms", "locks", "devices", "provenance", "memory"},
    {"data"},
    {"models"},
    {"encode", "evaluation"},
    {"training"},
    {"analysis"},
    {"config"},
    {"plan"},
    {"study"},
    {"report"},
    # the public API: `__init__` re-exports every floor (lazily, PEP 562) and `api` holds its small wrappers
    {"cli", "__main__", "__init__", "api"},
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


ANALYSES = {"shared", "ablation", "graft", "circuit", "inspect", "attention", "consistency", "forgetting"}
PRIMITIVES = {"run", "masks", "threshold", "labels", "readout", "selection", "units", "weights", "config",
              "declaration", "__init__"}


def test_analyses_are_peers():
    """No analysis imports another analysis; primitives import no analysis; only the registry gathers them."""
    folder = ROOT / "analysis"
    assert {p.stem for p in folder.glob("*.py")} == ANALYSES | PRIMITIVES | {"registry"}
    crossing = [f"analysis.{p.stem} imports {t}" for p in sorted(folder.glob("*.py")) for t in imports(p)
                if t.startswith("analysis.") and t.split(".")[1] in ANALYSES and t != f"analysis.{p.stem}"
                and p.stem != "registry"]
    assert not crossing, crossing
