"""The import structure, checked from the source (ast; nothing is imported):

- domain packages (everything under squigglray/ except jobs/, cli.py, entry.py) never import Ray;
- nothing imports `squigglray.jobs` from below: only jobs/, cli.py and entry.py may;
- no private name (`_x`) is imported across packages (squigglray.<pkg>, actors, tune_spaces, serve_apps);
- no import cycle between packages, in-function imports included (they hide cycles, they do not break
  them), beyond the ones listed in ALLOWED_PACKAGE_CYCLES with a reason. (Cycles among the modules of
  one package, such as an __init__ that re-exports its submodules, are that package's own business.)
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("squigglray", "actors", "tune_spaces", "serve_apps")
TOP = ("squigglray.jobs", "squigglray.cli", "squigglray.entry")  # composition roots: may import anything
# Package-level cycles that exist by design (module-level imports stay acyclic):
ALLOWED_PACKAGE_CYCLES = {
    # training.base wires the probe and capture callbacks in; they derive from training.callbacks
    frozenset({"squigglray.training", "squigglray.eval", "squigglray.geometry"}),
    # the ToolBox's answer-equivalence tool runs solve's one equivalence checker in its worker
    frozenset({"squigglray.solve", "squigglray.verify"}),
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "squigglray" and len(parts) > 1 else parts[0]


def _imports(path: Path):
    """(imported module, imported name or None, line) for every import statement, nested ones too."""
    module = _module(path)
    base_pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                pkg = base_pkg.split(".")
                pkg = pkg[:len(pkg) - node.level + 1]
                target = ".".join(pkg + ([node.module] if node.module else []))
            for a in node.names:
                yield target, a.name, node.lineno


def _sources():
    return {_module(p): p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))}


def _resolve(target: str, name: str | None, modules) -> str | None:
    """The project module an import loads (`from a.b import c` is module a.b.c when that exists)."""
    if name and f"{target}.{name}" in modules:
        return f"{target}.{name}"
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _scan():
    modules = _sources()
    problems, pkg_graph = [], defaultdict(set)
    for mod, path in modules.items():
        where = f"{path.relative_to(REPO)}"
        pkg = _package(mod)
        domain = mod.startswith("squigglray") and not mod.startswith(TOP)
        for target, name, line in _imports(path):
            top = target.split(".")[0]
            if domain and top == "ray":
                problems.append(f"{where}:{line} imports ray in a domain package")
            if target.startswith("squigglray.jobs") and not mod.startswith(TOP):
                problems.append(f"{where}:{line} imports {target} from below the jobs")
            if top not in ROOTS:
                continue
            dep = _resolve(target, name, modules)
            if dep is None:
                continue
            if name and name.startswith("_") and not name.startswith("__") and _package(dep) != pkg:
                problems.append(f"{where}:{line} imports the private {target}.{name} across packages")
            if _package(dep) != pkg and mod.startswith("squigglray") and dep.startswith("squigglray") \
                    and not mod.startswith(TOP) and not dep.startswith(TOP):
                pkg_graph[pkg].add(_package(dep))
    return problems, pkg_graph


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in list(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_layers_point_down():
    problems, _ = _scan()
    assert not problems, "\n".join(problems)


def test_package_cycles_are_only_the_listed_ones():
    _, pkg_graph = _scan()
    found = {frozenset(c) for c in _cycles(pkg_graph)}
    assert found <= ALLOWED_PACKAGE_CYCLES, sorted(map(sorted, found - ALLOWED_PACKAGE_CYCLES))


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """Each rule fires on a planted violation (so a pass above means something)."""
    import sys

    mod = sys.modules[__name__]
    fake = tmp_path / "repo"
    for root in ROOTS:
        (fake / root).mkdir(parents=True)
    (fake / "squigglray" / "a").mkdir()
    (fake / "squigglray" / "b").mkdir()
    (fake / "squigglray" / "jobs").mkdir()
    (fake / "squigglray" / "jobs" / "x.py").write_text("")
    (fake / "squigglray" / "a" / "m.py").write_text(
        "import ray\nfrom squigglray.jobs.x import y\nfrom squigglray.b.n import _hidden\n")
    (fake / "squigglray" / "b" / "n.py").write_text("def f():\n    from squigglray.a import m\n")
    monkeypatch.setattr(mod, "REPO", fake)
    problems, pkg_graph = _scan()
    text = "\n".join(problems)
    assert "imports ray" in text and "from below the jobs" in text and "private" in text
    assert {frozenset(c) for c in _cycles(pkg_graph)} == {frozenset({"squigglray.a", "squigglray.b"})}
