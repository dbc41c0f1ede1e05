"""The package layering of DESIGN.md, enforced: every import of every module (module level,
inside functions and under ``TYPE_CHECKING`` alike) goes from a package to one of its own layer
or a lower one, and no two packages import each other, directly or through others.

Layers, lowest first (DESIGN.md, "Layers")::

    0  desgw (the root: ``__version__``), errors, util
    1  instrument
    2  io
    3  refcat
    4  sim, se
    5  diff
    6  db, train
    7  engine, workflow, report
    8  cli

``train`` (the real/bogus training-data generation, :mod:`desgw.train.realbogus_sim`) builds
simulated difference-image scenes with the simulator (``sim``) and runs them through the
runtime detection and measurement (``diff``), so it sits above both, beside ``db``; no runtime
package imports it (only ``scripts/train_realbogus.py`` and the tests do). Inside a layer an
import is allowed as long as it makes no cycle between packages (``workflow`` uses ``engine``
and ``report``; neither uses ``workflow``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "desgw"

LAYERS: dict[str, int] = {
    "desgw": 0, "errors": 0, "util": 0,
    "instrument": 1,
    "io": 2,
    "refcat": 3,
    "sim": 4, "se": 4,
    "diff": 5,
    "db": 6, "train": 6,
    "engine": 7, "workflow": 7, "report": 7,
    "cli": 8,
}


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(root: Path, dotted: str) -> bool:
    return (root.parent / Path(*dotted.split("."))).is_dir()


def _package(root: Path, dotted: str) -> str:
    """The top package of a desgw module (``desgw.se.psf`` -> ``se``; ``desgw`` -> ``desgw``)."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "desgw"


def imports(root: Path) -> Iterator[tuple[str, str, int]]:
    """(importing module, imported desgw module, line) for every import under ``root``."""
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path)
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "desgw":
                        yield module, alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "desgw":
                    continue
                if target == "desgw":  # ``from desgw import se``: the subpackage is imported
                    for alias in node.names:
                        sub = f"desgw.{alias.name}"
                        yield module, sub if _is_package(root, sub) else target, node.lineno
                else:
                    yield module, target, node.lineno


def violations(root: Path) -> list[str]:
    """Imports against the layer order, packages missing from :data:`LAYERS` and cycles
    between packages, in words (empty when the tree follows DESIGN.md)."""
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    for module, target, line in imports(root):
        src, dst = _package(root, module), _package(root, target)
        for pkg in (src, dst):
            if pkg not in LAYERS:
                problems.append(f"{module}:{line}: package {pkg!r} has no layer in "
                                "tests/test_layers.py (place it per DESIGN.md)")
        if src == dst or src not in LAYERS or dst not in LAYERS:
            continue
        edges.setdefault(src, set()).add(dst)
        if LAYERS[dst] > LAYERS[src]:
            problems.append(f"{module}:{line} imports {target}: {src} (layer {LAYERS[src]}) "
                            f"may not import {dst} (layer {LAYERS[dst]})")
    problems += [f"cycle between packages: {' -> '.join(c)}" for c in _cycles(edges)]
    return problems


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of packages (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    out = []
    for group in groups:  # a path back to the start through the group, for the message
        start, members = group[0], set(group)
        path, seen = [start], {start}
        while True:
            nxt = sorted(w for w in edges[path[-1]] if w in members)
            back = start in nxt and len(path) > 1
            if back:
                break
            fresh = [w for w in nxt if w not in seen]
            if not fresh:
                break
            path.append(fresh[0])
            seen.add(fresh[0])
        out.append([*path, start])
    return out


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages - set(LAYERS) == set()


def test_imports_follow_the_layers_and_make_no_cycle():
    problems = violations(SRC)
    assert not problems, "\n".join(problems)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "desgw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "desgw"


@pytest.mark.parametrize(("files", "expected"), [
    # an upward import hidden in a function body
    ({"se/__init__.py": "", "diff/__init__.py": "",
      "se/a.py": "def f():\n    from desgw.diff import b\n", "diff/b.py": ""},
     ["se (layer 4) may not import diff (layer 5)"]),
    # a relative upward import
    ({"io/__init__.py": "", "io/a.py": "from ..workflow import x\n",
      "workflow/__init__.py": "", "workflow/x.py": ""},
     ["io (layer 2) may not import workflow (layer 7)"]),
    # a cycle inside one layer
    ({"report/__init__.py": "from desgw.workflow import demo\n",
      "workflow/__init__.py": "", "workflow/demo.py": "import desgw.report\n"},
     ["cycle between packages: report -> workflow -> report"]),
    # ``from desgw import sub`` names the subpackage; a package without a layer is reported
    ({"errors.py": "from desgw import se\n", "se/__init__.py": "",
      "extra/__init__.py": "from desgw import errors\n"},
     ["errors (layer 0) may not import se (layer 4)", "package 'extra' has no layer"]),
])
def test_the_walk_catches(tmp_path, files, expected):
    found = violations(_write(tmp_path, files))
    for text in expected:
        assert any(text in p for p in found), found
    assert len(found) == len(expected), found


def test_the_walk_accepts_downward_and_same_layer_imports(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "__version__ = '0'\n", "errors.py": "",
        "engine/__init__.py": "from desgw.errors import x\n",
        "workflow/__init__.py": "from desgw.engine import y\nfrom desgw import __version__\n",
        "report/__init__.py": "from ..engine import z\n"})
    assert violations(root) == []


def test_the_readme_layout_names_every_package():
    text = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for path in sorted(SRC.iterdir()):
        if (path / "__init__.py").is_file():
            assert f"  {path.name}/ " in layout, path.name
        elif path.suffix == ".py" and path.stem != "__init__":
            assert f"  {path.name} " in layout, path.name
