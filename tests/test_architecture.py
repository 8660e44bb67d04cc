"""The package's shape: imports point one way, the config is a leaf, one module owns the
run folder. Read from the source (every import, type-only ones and those inside functions
included), so a new cycle fails here before it fails a user at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import imgcls

PACKAGE = Path(imgcls.__file__).parent
RUN_FILES = {"config.yaml", "environment.json", "preprocess.json", "pretrained.json",
             "metrics.jsonl", "summary.json", "failed.json", "checkpoints", "best.pt", "last.pt",
             "lr_find.json"}
COMPONENTS = ("imgcls.data", "imgcls.augment", "imgcls.models", "imgcls.train.optim",
              "imgcls.train.schedule", "imgcls.train.callbacks")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, known: dict[str, Path], runtime_only: bool = False
            ) -> set[str]:
    """The imgcls modules `name` imports (`from a import b` counts a.b when b is a module)."""
    tree = ast.parse(path.read_text())
    skipped = ({id(n) for block in ast.walk(tree) if _type_checking(block)
                for n in ast.walk(block)} if runtime_only else set())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            targets |= subs or {base}
    found = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    result = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_no_import_cycle_anywhere():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert cycles(graph) == []


def test_the_layers_do_not_import_each_other_in_a_circle():
    """The packages read as the flow data -> augment -> models -> train -> tracking ->
    experiment -> report -> fit: a package may use those before it, never those after."""
    known = modules()
    packages = {name.split(".")[1] for name, path in known.items() if path.name == "__init__.py"
                and name.count(".") == 1}
    layer = {name: name.split(".")[1] for name in known
             if name.count(".") >= 1 and name.split(".")[1] in packages}
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        if name in layer:
            graph.setdefault(layer[name], set()).update(
                layer[t] for t in imports(name, path, known) if t in layer
                and layer[t] != layer[name])
    assert cycles(graph) == []
    assert "fit" not in graph["report"] | graph["experiment"]


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_config_is_a_leaf_that_components_import_for_types_only():
    known = modules()
    assert imports("imgcls.config", known["imgcls.config"], known) <= {"imgcls.registry"}
    for name, path in known.items():
        if name.startswith(COMPONENTS):
            assert "imgcls.config" not in imports(name, path, known, runtime_only=True), name


def test_reading_a_config_needs_neither_torch_nor_timm():
    code = ("import sys; from imgcls.config import Config, parse; parse({}); "
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_only_the_run_module_spells_run_folder_files():
    owner = PACKAGE / "tracking" / "run.py"
    spelled = []
    for path in PACKAGE.rglob("*.py"):
        if path == owner:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in RUN_FILES:
                spelled.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert spelled == []
