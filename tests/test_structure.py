"""The house rules the code keeps, read from the source: no import circle, one owner of checkpoint file names, short
functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "mit_semseg"
LONGEST = 60  # lines of a function (about 50 is the rule) unless a comment in it says why it is longer


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports, at module level or inside functions, and their packages."""
    current = _module(path)
    package = current if path.name == "__init__.py" else current.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    targets = set()
    for name in found & modules:
        parts = name.split(".")
        targets.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))  # a module's packages run first
    return {t for t in targets & modules if t != current and not current.startswith(t + ".")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_circle_function_level_imports_included():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module(p) for p in paths}
    graph = {_module(p): _imports(p, modules) for p in paths}
    assert graph["mit_semseg.tasks"] and "mit_semseg.checkpoints" in graph["mit_semseg.tasks.base"]  # it reads them
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    # the reader finds a circle where there is one
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def _strings(source: str) -> list[tuple[int, str]]:
    """The string literals and f-strings of a module's code (as written), docstrings left out."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    inner = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    return [
        (node.lineno, ast.get_source_segment(source, node) or "")
        for node in ast.walk(tree)
        if (isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)))
        and id(node) not in docstrings | inner
    ]


# a part's file (encoder_epoch_3.pth, f"{part}_{checkpoint}"), a resume state's, an epoch's checkpoint name
SPELLED = re.compile(r"\b(encoder|decoder|texture)_\S*\.pth|train_state_|\{part\}_|\bepoch_\{")


def test_only_the_checkpoints_module_spells_checkpoint_file_names():
    found = [
        f"{path.relative_to(REPO)}:{line}: {text}"
        for path in sorted([*PACKAGE.rglob("*.py"), *(REPO / "bench").glob("*.py")])
        if path.name != "checkpoints.py"
        for line, text in _strings(path.read_text())
        if SPELLED.search(text)
    ]
    assert not found, "\n".join(found)
    spelled_here = [text for _, text in _strings((PACKAGE / "checkpoints.py").read_text()) if SPELLED.search(text)]
    assert len(spelled_here) >= 3  # the owner does spell them: the pattern finds them


def test_functions_are_short_or_say_why():
    long = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(REPO / "bench").glob("*.py")]):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                body = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                if length > LONGEST and "longer than most" not in body:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "\n".join(long)
