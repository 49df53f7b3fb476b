"""The project's imports run one way: no cycles, and no import from a lower layer up into a higher one.

The graph is built with ``ast`` from every project ``.py`` file, counting module-level imports,
imports inside functions and ``TYPE_CHECKING`` blocks alike: an import hidden in a function is
still a dependency, it only fails later. ``python tests/project/test_imports.py`` prints the summary.

The layers, bottom first (a module may import its own layer and any layer below it):

- ``base``: settings, logging and redaction, local time, terminal tables. Imports nothing of the
  project, so every other layer can use it.
- ``schemas`` (the Avro schemas, data files) and ``deploy`` (launching Kafka, Prometheus and the
  worker as processes): they need nothing above ``base``.
- ``contracts``: what producers and consumers of the feed share: the codec, validation and its
  reasons, registry decoding, a Kafka record.
- ``kafka_io``: Kafka helpers every process shares: offsets, topics, paced publishing.
- ``sinks``: writers to the outside (ClickHouse, the dead-letter topic, webhooks); they know the
  contracts and the settings, not who produces the rows.
- ``analytics``: reads what the sinks wrote.
- ``streams`` (the ingest worker), ``simulator`` (feeds) and ``replay`` (archives, republishing,
  rebuilds): siblings over the contracts and the Kafka helpers. The worker imports neither of the
  others, nor they the worker; replay reads the simulator's archive format, nothing private of it.
- ``alerts`` (evaluates analytics) and ``boards`` (queries and dashboards over the same tables).
- ``harness``: stand-ins for outside systems on one machine (a ClickHouse HTTP endpoint over chDB,
  a webhook receiver), for tests, benchmarks and the demo.
- ``cli``: the command line, the demo, and the worker as it runs (``cli/worker.py``: the ingest app
  with the alert evaluator and the report attached): the top, which puts every layer together.
- ``tests``, ``bench``, ``fuzz``, ``native``: consumers; nothing imports them.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", "node_modules", "target", "build", ".data", "__pycache__"}

LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),
    ("schemas", "deploy"),
    ("contracts",),
    ("kafka_io",),
    ("sinks",),
    ("analytics",),
    ("streams", "simulator", "replay"),
    ("alerts", "boards"),
    ("harness",),
    ("cli",),
    ("tests", "bench", "fuzz", "native"),
)
# siblings in one layer that must not import each other (replay may read the simulator's archive format)
APART = {("streams", "simulator"), ("simulator", "streams"), ("streams", "replay"), ("replay", "streams")}
LAYER = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}

# One invoice from fetch to insert: the worker's batch hand-over, the ingest pipeline, the writer.
INVOICE_PATH = ("streams.batch_fetch", "streams.ingest")


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name → file, for every .py file of the repository outside virtualenvs and caches."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if SKIP.intersection(relative.parts):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that ``name`` names (``a.b.C`` → ``a.b``), or None for a third party."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports anywhere in its file."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{alias.name}" for alias in node.names] or [base]
            for name in names:
                target = _resolve(name, modules)
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def layer_of(module: str) -> int | None:
    return LAYER.get(module.split(".")[0])


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Edges from a lower layer to a higher one."""
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if (layer_of(source) or 0) < (layer_of(target) or 0)
    )


def reachable(graph: dict[str, set[str]], roots: tuple[str, ...]) -> set[str]:
    seen = {root for root in roots if root in graph}
    todo = list(seen)
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def summary(graph: dict[str, set[str]]) -> str:
    loops = cycles(graph)
    up = upward_imports(graph)
    invoice = reachable(graph, INVOICE_PATH)
    worker = reachable(graph, ("streams.app",))
    lines = [
        f"modules: {len(graph)}, import edges: {sum(map(len, graph.values()))}",
        f"cycles: {len(loops)} ({sum(map(len, loops))} modules in them)",
        f"upward imports: {len(up)}",
        f"invoice path {' + '.join(INVOICE_PATH)}: {len(invoice)} project modules",
        f"worker streams.app: {len(worker)} project modules",
    ]
    for loop in loops:
        edges = [f"{a} -> {b}" for a in loop for b in sorted(graph[a]) if b in loop]
        lines.append("cycle: " + ", ".join(edges))
    lines.extend(f"upward: {a} -> {b}" for a, b in up)
    return "\n".join(lines)


def test_every_module_has_a_layer() -> None:
    unknown = sorted({m.split(".")[0] for m in project_modules() if layer_of(m) is None})
    assert not unknown, f"top-level packages without a layer in LAYERS: {unknown}"


def test_no_import_cycles() -> None:
    graph = import_graph(project_modules())
    print(summary(graph))
    loops = cycles(graph)
    assert not loops, "import cycles:\n" + "\n".join(
        ", ".join(f"{a} -> {b}" for a in loop for b in sorted(graph[a]) if b in loop) for loop in loops
    )


def test_no_upward_imports() -> None:
    graph = import_graph(project_modules())
    up = upward_imports(graph)
    assert not up, "imports against the layer order:\n" + "\n".join(
        f"{a} ({a.split('.')[0]}, layer {layer_of(a)}) -> {b} ({b.split('.')[0]}, layer {layer_of(b)})" for a, b in up
    )


def test_the_worker_and_its_siblings_import_nothing_of_each_other() -> None:
    graph = import_graph(project_modules())
    crossing = sorted((a, b) for a, ts in graph.items() for b in ts if (a.split(".")[0], b.split(".")[0]) in APART)
    assert not crossing, f"the worker, the simulator and replay are siblings: {crossing}"


def test_no_package_imports_a_private_name_of_another() -> None:
    """``from simulator.publish import _Clock`` in replay was a contract nobody declared."""
    found = []
    for module, path in project_modules().items():
        if module.split(".")[0] in LAYERS[-1]:
            continue  # a test may reach into what it tests
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                other = node.module.split(".")[0]
                if other != module.split(".")[0] and other in LAYER:
                    found += [f"{module}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not found, "private names imported across packages:\n" + "\n".join(found)


def test_base_imports_nothing_of_the_project() -> None:
    graph = import_graph(project_modules())
    outside = sorted((a, b) for a, ts in graph.items() if a.startswith("base") for b in ts if not b.startswith("base"))
    assert not outside, f"base must stand alone: {outside}"


def test_the_graph_sees_function_level_imports(tmp_path: Path) -> None:
    (tmp_path / "low").mkdir()
    (tmp_path / "low" / "__init__.py").write_text("")
    (tmp_path / "low" / "a.py").write_text("def f():\n    from high.b import g\n")
    (tmp_path / "high").mkdir()
    (tmp_path / "high" / "__init__.py").write_text("")
    (tmp_path / "high" / "b.py").write_text("from low import a\n")
    graph = import_graph(project_modules(tmp_path))
    assert graph["low.a"] == {"high.b"}
    assert cycles(graph) == [["high.b", "low.a"]]


if __name__ == "__main__":
    print(summary(import_graph(project_modules())))
    sys.exit(0)
