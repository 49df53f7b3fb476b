"""How many hand-offs one invoice passes from fetch to commit, in the running worker: to compare two versions.

A *hand-off* is one distinct call edge caller -> callee between two different project functions (defined
in ``.py`` files of the checkout measured, outside ``.venv``, ``tests`` and site-packages), recorded while
a real worker ingests a small feed from a real local broker. The count is dynamic and of distinct edges:
a call made once or a million times, or recursion, counts once; code never run counts nothing. A function
is ``path.py:qualname`` (every instance of a closure is one function; a comprehension or generator
expression is part of the function it is written in; module and class bodies are no functions).

How an edge is found (``sys.setprofile`` and ``threading.setprofile`` in the worker):

- direct: the callee's immediate caller is a project function;
- through a library: only library frames between them (a decorator such as tenacity's retry, a context
  manager, a Faust or asyncio callback); the caller is the nearest project frame up the same stack;
- through the loop or a thread: ``create_task``, ``run_in_executor``, ``to_thread`` or
  ``ThreadPoolExecutor.submit`` runs the callee with no caller on its stack; the caller is the nearest
  project frame that scheduled it. Without these every task would cut the path.

No walk goes past where a loop callback or a thread began, nor through ``logging`` (the project's log
formatters run when a line is logged, not as a step of the path). The invoice path is what the edges
reach from its roots: the invoice task (``...ingest_invoice_batches`` in ``streams/app.py``) and the
fetch side (``streams/batch_fetch.py`` functions with no project caller); its hand-offs, the edges out
of functions on it.

    .venv/bin/python tests/project/invoice_path.py [--root DIR] [--invoices N] [--save FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the broker and the feed are this repository's, whatever --root measures

from deploy.worker_process import WorkerProcess  # noqa: E402
from tests import support  # noqa: E402

# Run in the worker before its own main; written out at exit and every 2 s (in case it never exits cleanly).
TRACER = r"""
import atexit, contextvars, functools, json, os, runpy, sys, threading, time
ROOT, OUT = os.environ["INVOICE_PATH_ROOT"] + "/", os.environ["INVOICE_PATH_OUT"]
SKIP, FOLDED = (ROOT + ".venv/", ROOT + "tests/"), {"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"}
SPECIAL = {  # what schedules work elsewhere (its argument naming the work), where a loop callback or a thread starts
    ("asyncio/base_events.py", "BaseEventLoop.create_task"): ("coro",),
    ("asyncio/base_events.py", "BaseEventLoop.run_in_executor"): ("func",),
    ("concurrent/futures/thread.py", "ThreadPoolExecutor.submit"): ("fn",),
    ("asyncio/events.py", "Handle._run"): False, ("concurrent/futures/thread.py", "_WorkItem.run"): False,
    ("threading.py", "Thread.run"): False,
}
names, edges, functions, lock = {}, {}, set(), threading.Lock()

def name(code):  # "path.py:qualname" of a project function, a SPECIAL entry, else None
    try:
        return names[code]
    except KeyError:
        path, qualname, found = os.path.abspath(code.co_filename), code.co_qualname, None
        if path.startswith(ROOT) and path.endswith(".py") and not path.startswith(SKIP) and "site-packages" not in path:
            while qualname.rpartition(".")[2] in FOLDED:  # a comprehension is part of its function, if in one
                outer = qualname.rpartition(".")[0]
                qualname = outer[: -len(".<locals>")] if outer.endswith(".<locals>") else ""
            if code.co_flags & 1 and qualname:  # CO_OPTIMIZED: a function, not a module or class body
                found = path[len(ROOT):] + ":" + qualname
        elif path.endswith("/logging/__init__.py"):  # a log record reaching the project's handlers: no hand-off
            found = False
        else:
            found = next((v for (end, q), v in SPECIAL.items() if q == qualname and path.endswith(end)), None)
        names[code] = found
        return found

def nearest(frame):  # the nearest project function up this stack, not past where a loop callback or thread began
    for _ in range(60):
        found = name(frame.f_code) if frame is not None else False
        if found is False or isinstance(found, str):
            return found or None
        frame = frame.f_back

def target(work):  # the function a task, an executor or to_thread will run (a library's wrapper unwrapped)
    for _ in range(6):
        if isinstance(work, functools.partial):  # to_thread: partial(context.run, func, ...)
            in_context = isinstance(getattr(work.func, "__self__", None), contextvars.Context)
            work = work.args[0] if in_context and work.args else work.func
            continue
        code = getattr(work, "cr_code", None) or getattr(getattr(work, "__func__", work), "__code__", None)
        found = name(code) if code is not None else None
        if isinstance(found, str) or not hasattr(work, "__wrapped__"):
            return found if isinstance(found, str) else None
        work = work.__wrapped__

def add(caller, callee, kind):  # kind 0: direct, 1: through library frames, 2: through the loop or a thread
    if caller and isinstance(callee, str) and caller != callee and edges.get((caller, callee), 3) > kind:
        edges[caller, callee] = kind

def profile(frame, event, _arg):
    if event != "call":
        return
    callee = name(frame.f_code)
    if isinstance(callee, str):
        functions.add(callee)
        caller = name(frame.f_back.f_code) if frame.f_back is not None else None
        add(caller, callee, 0) if isinstance(caller, str) else add(nearest(frame.f_back), callee, 1)
    elif callee:
        add(nearest(frame.f_back), target(frame.f_locals.get(callee[0])), 2)

def write(final):
    with lock:
        app = getattr(sys.modules.get("streams.app"), "__file__", None)
        state = {"final": final, "streams_app": app, "functions": sorted(functions),
                 "edges": sorted([*edge, kind] for edge, kind in list(edges.items()))}
        with open(OUT + ".tmp", "w") as out:
            json.dump(state, out)
        os.replace(OUT + ".tmp", OUT)

def flush():
    while True:
        time.sleep(2)
        write(False)

def at_exit():
    sys.setprofile(None)
    threading.setprofile(None)
    write(True)

threading.Thread(target=flush, daemon=True).start()  # started before threading.setprofile: not traced
atexit.register(at_exit)
threading.setprofile(profile)
sys.setprofile(profile)
sys.argv = ["einvoice-monitor", "worker"]
runpy.run_module("cli.main", run_name="__main__", alter_sys=True)
"""


def run_worker(root: Path, scratch: Path, invoices: int) -> tuple[dict, str]:
    """Broker, topics, feed, one traced worker from ``root`` until the feed is committed; its recorded edges."""
    from deploy.kafka import LocalBroker

    broker = LocalBroker(scratch / "kafka")
    bootstrap = broker.start()
    try:
        settings = support.deployment_settings(bootstrap, scratch)
        # the invoices only once the worker has committed the whole registry: else whether the first batch
        # finds registrations still to catch up with depends on timing, and so does the path
        feed = support.PublishedFeed(settings, sellers=20, invoices=invoices, seed=11, hold_back=1.0)
        registry, out = settings.topics.registry, scratch / "edges.json"
        env = {"PYTHONPATH": str(root), "INVOICE_PATH_ROOT": str(root), "INVOICE_PATH_OUT": str(out)}
        worker = WorkerProcess({**settings.to_env(), **env}, scratch / "worker.log", settings.web_port)
        with (scratch / "worker.log").open("ab") as log:
            worker.proc = subprocess.Popen(
                [sys.executable, "-c", TRACER], cwd=root, env=worker.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            worker.wait_healthy(timeout=180)
            core = (worker.get_json("/health") or {}).get("batch_core") or {}
            ends = support.end_offsets(settings, registry)
            registered = lambda: support.committed_offsets(settings, registry) == ends  # noqa: E731
            support.wait_until(registered, 120, "the worker to commit the registry", worker)
            feed.publish_rest()
            started = time.monotonic()
            support.wait_consumed(settings, worker, timeout=600)
            took = time.monotonic() - started
        finally:
            worker.stop(timeout=60)
        assert worker.proc is not None
        recorded = json.loads(out.read_text())
        written = "at exit" if recorded["final"] else "by the periodic flush only"
        return recorded, (
            f"feed: {len(feed.in_registry)} sellers registered, {len(feed.published)} records "
            f"({len(feed.valid)} valid invoices), committed in {took:.1f} s\nworker: batch core "
            f"{core.get('kind', '?')}, exited {worker.proc.returncode}, edges written {written}"
        )
    finally:
        broker.stop()


KINDS = ("direct", "through a library", "through the loop or a thread")


def invoice_path(recorded: dict) -> tuple[list[str], dict[tuple[str, str], int]]:
    """Roots, and the edges reachable from them with their kind."""
    edges = {(a, b): kind for a, b, kind in recorded["edges"]}
    called = {callee for _, callee in edges}
    functions = set(recorded["functions"]) | {f for e in edges for f in e}
    roots = sorted(
        f
        for f in functions
        if (f.startswith("streams/app.py:") and f.endswith("ingest_invoice_batches"))
        or (f.startswith("streams/batch_fetch.py:") and f not in called)
    )
    out: dict[str, list[str]] = {}
    for caller, callee in edges:
        out.setdefault(caller, []).append(callee)
    reached, todo = set(roots), list(roots)
    while todo:
        for callee in out.get(todo.pop(), []):
            if callee not in reached:
                reached.add(callee)
                todo.append(callee)
    return roots, {e: kind for e, kind in edges.items() if e[0] in reached}


def report(root: Path, note: str, recorded: dict) -> dict:
    roots, edges = invoice_path(recorded)
    functions = sorted({f for e in edges for f in e} | set(roots))

    def file_of(function: str) -> str:
        return function.split(":", 1)[0]

    across = [e for e in edges if file_of(e[0]) != file_of(e[1])]
    files: dict[str, int] = {}
    for function in functions:
        files[file_of(function)] = files.get(file_of(function), 0) + 1
    pair = {"streams/app.py", "streams/ingest.py"}
    app_ingest = sorted(e for e in across if {file_of(e[0]), file_of(e[1])} == pair)
    revision = subprocess.run(
        ["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"invoice path of {root} ({revision or 'no git'})\n{note}\nroots:")
    print("".join(f"  {r}\n" for r in roots), end="")
    rows = [("functions on the path", len(functions)), ("hand-offs (distinct edges)", len(edges))]
    rows += [(f"  {kind}", sum(k == i for k in edges.values())) for i, kind in enumerate(KINDS)]
    rows += [
        ("  across files", len(across)),
        ("  streams/* <-> other modules", sum(a.startswith("streams/") != b.startswith("streams/") for a, b in edges)),
        ("  streams/app.py <-> streams/ingest.py", len(app_ingest)),
    ]
    print("".join(f"{label:<40}{value:>5}\n" for label, value in rows), end="")
    print(f"files touched ({len(files)}), functions on the path in each:")
    print("".join(f"  {path:<44}{count:>4}\n" for path, count in sorted(files.items())), end="")
    print(f"hand-offs between streams/app.py and streams/ingest.py ({len(app_ingest)}):")
    print("".join(f"  {a} -> {b}  ({KINDS[edges[a, b]]})\n" for a, b in app_ingest) or "  (none)\n", end="")
    listed = [[a, b, KINDS[kind]] for (a, b), kind in sorted(edges.items())]
    return {"root": str(root), "revision": revision, "roots": roots, "edges": listed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="checkout whose worker is measured")
    parser.add_argument("--invoices", type=int, default=200, help="about this many valid invoices in the feed")
    parser.add_argument("--save", type=Path, help="write the path's edges here as JSON (to diff two versions)")
    args = parser.parse_args()
    root = args.root.resolve()
    if not (root / "streams" / "app.py").is_file():
        parser.error(f"{root} is not a checkout of the project (no streams/app.py)")
    with tempfile.TemporaryDirectory(prefix="invoice_path_") as scratch:
        recorded, note = run_worker(root, Path(scratch), args.invoices)
    if not str(recorded["streams_app"] or "").startswith(f"{root}/"):
        sys.exit(f"the worker imported streams.app from {recorded['streams_app']}, not from {root}")
    saved = report(root, note, recorded)
    if args.save:
        args.save.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
