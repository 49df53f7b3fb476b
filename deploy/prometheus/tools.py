"""Build promtool, prometheus, alertmanager and amtool from their Go modules, once, into the cache.

They sit beside Kafka's jars (``$EINVOICE_CACHE_DIR``, else ``~/.cache/einvoice-monitor``): the first
build takes 4-8 minutes on 2 cores (the Go modules are downloaded into Go's own cache), later ones
nothing. Alertmanager's module is published without its web UI's build output (``ui/web.go`` embeds
``app/dist``), so it is built from a copy of the module with a placeholder page there: no web UI,
which neither the tests nor a headless deployment use.

``python -m deploy.prometheus.tools`` builds what is missing and prints where.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.kafka import default_cache_dir

PROMETHEUS_VERSION = "v0.316.0"
ALERTMANAGER_VERSION = "v0.35.0"
PROMETHEUS_TOOLS = ("promtool", "prometheus")
ALERTMANAGER_TOOLS = ("alertmanager", "amtool")


class ToolsMissing(RuntimeError):
    """Go is not installed, or a build failed: says what to do."""


def tools_dir() -> Path:
    return default_cache_dir() / f"prometheus-{PROMETHEUS_VERSION}-alertmanager-{ALERTMANAGER_VERSION}" / "bin"


def tool(name: str) -> Path:
    """The path of one built tool; raises ToolsMissing with the command that builds it."""
    path = tools_dir() / name
    if not os.access(path, os.X_OK):
        raise ToolsMissing(
            f"{name} is not built: run `make prometheus` (builds it from its Go module into {path.parent})"
        )
    return path


def _go(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    if shutil.which("go") is None:
        raise ToolsMissing("go is missing: install Go 1.26 (Debian: apt-get install golang), then run: make prometheus")
    done = subprocess.run(
        ["go", *args], cwd=cwd, env={**os.environ, "GOFLAGS": "-buildvcs=false", **(env or {})},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ToolsMissing(f"`go {' '.join(args)}` failed:\n{done.stderr[-4000:]}")
    return done.stdout


def install() -> Path:
    """Build whatever of the four tools is missing; return their directory."""
    dest = tools_dir()
    dest.mkdir(parents=True, exist_ok=True)
    if not all((dest / name).exists() for name in PROMETHEUS_TOOLS):
        print(f"building promtool and prometheus {PROMETHEUS_VERSION} from the Go module (minutes, the first time)")
        module = "github.com/prometheus/prometheus/cmd"
        _go(
            ["install", *(f"{module}/{name}@{PROMETHEUS_VERSION}" for name in PROMETHEUS_TOOLS)],
            env={"GOBIN": str(dest)},
        )
    if not all((dest / name).exists() for name in ALERTMANAGER_TOOLS):
        print(f"building alertmanager and amtool {ALERTMANAGER_VERSION} from the Go module (without its web UI)")
        info = json.loads(
            _go(["mod", "download", "-json", f"github.com/prometheus/alertmanager@{ALERTMANAGER_VERSION}"], cwd=dest)
        )
        with tempfile.TemporaryDirectory() as work:
            source = Path(work) / "alertmanager"
            shutil.copytree(info["Dir"], source, copy_function=shutil.copyfile)  # the module cache is read-only
            for path in source.rglob("*"):
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
            for ui in ("elm", "mantine"):
                page = source / "ui" / "app" / "dist" / ui / "index.html"
                page.parent.mkdir(parents=True, exist_ok=True)
                page.write_text("alertmanager's web UI is not built here\n")
            for name in ALERTMANAGER_TOOLS:
                _go(["build", "-o", str(dest / name), f"./cmd/{name}"], cwd=source)
    return dest


def main() -> None:
    try:
        print(f"promtool, prometheus, alertmanager and amtool are in {install()}")
    except ToolsMissing as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
