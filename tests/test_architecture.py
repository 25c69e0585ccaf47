"""The import directions of docs/architecture.md, read from the source (every import, lazy ones too)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "pynomaly_core"

# What each part of the core may import from the core besides itself. Anything not named here
# (stages, summary, cli) sits on top and may import any of it.
ALLOWED = {
    "errors": set(),
    "config": set(),
    "detectors": {"errors"},
    "data": {"config", "errors", "detectors"},
    "tracking": {"config", "errors"},
    "evaluation": {"config", "errors", "detectors", "data"},
    "selection": {"config", "errors", "detectors", "data", "evaluation", "tracking"},
    "labels": {"config", "errors", "detectors", "data", "tracking"},
    "scoring": {"config", "errors", "detectors", "data", "tracking"},
    "monitoring": {"config", "errors", "detectors", "data", "tracking", "scoring"},
}
# The stages and who may run them: the flows, the tasks, the CLI and the benchmarks.
STAGES = {f"{CORE}.stages", f"{CORE}.monitoring.monitor"}
STAGE_CALLERS = (f"{CORE}.cli", f"{CORE}.summary", f"{CORE}.stages", "flows", "tasks", "benchmarks")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path, known: set[str]) -> set[str]:
    """The modules a file imports (`from pkg import module` counts as the module)."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {target for target in found if target != name}


def import_graph(root: Path, folders: tuple[str, ...]) -> dict[str, set[str]]:
    files = [path for folder in folders for path in (root / folder).rglob("*.py") if "migrations" not in path.parts]
    known = {module_name(path, root) for path in files}
    return {module_name(path, root): imports(path, root, known) for path in files}


def part(module: str) -> str | None:
    """The core's part a module belongs to: `detectors` for pynomaly_core.detectors.graph."""
    names = module.split(".")
    return names[1] if names[0] == CORE and len(names) > 1 else None


def direction_errors(graph: dict[str, set[str]]) -> list[str]:
    errors = []
    for module, targets in sorted(graph.items()):
        source = part(module)
        for target in sorted(targets):
            if source in ALLOWED and part(target) not in (None, source) and part(target) not in ALLOWED[source]:
                errors.append(f"{module} imports {target}")
            if target in STAGES and not module.startswith(STAGE_CALLERS):
                errors.append(f"{module} imports the stage {target}")
    return errors


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles among the core's modules (strongly connected components of more than one)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_core_imports_follow_the_allowed_directions():
    assert direction_errors(import_graph(ROOT, (CORE, "workbench", "flows", "tasks"))) == []


def test_core_has_no_import_circles():
    core = {name: targets for name, targets in import_graph(ROOT, (CORE,)).items()}
    assert cycles(core) == []


def core_copy(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the core with `line` added at the top of `module`."""
    for path in (ROOT / CORE).rglob("*.py"):
        target = tmp_path / CORE / path.relative_to(ROOT / CORE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    changed = tmp_path / CORE / module
    changed.write_text(line + changed.read_text())
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("detectors/graph.py", "from ..config import NEIGHBORS\n", "pynomaly_core.detectors.graph imports pynomaly_core.config"),
        ("data/io.py", "from ..scoring.files import score_file\n", "pynomaly_core.data.io imports pynomaly_core.scoring.files"),
        ("labels/review.py", "from .. import stages\n", "pynomaly_core.labels.review imports the stage pynomaly_core.stages"),
    ],
)
def test_a_wrong_import_is_found(tmp_path, module, line, expected):
    """The check itself: one forbidden import added to a copy of the core is named."""
    assert expected in direction_errors(import_graph(core_copy(tmp_path, module, line), (CORE,)))


def test_a_circle_is_found(tmp_path):
    graph = import_graph(core_copy(tmp_path, "selection/base.py", "from . import make_selector\n"), (CORE,))
    assert any({f"{CORE}.selection", f"{CORE}.selection.base"} <= set(circle) for circle in cycles(graph))
