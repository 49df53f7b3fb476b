"""A loopback ClickHouse HTTP endpoint that owns one chDB directory.

For tests and benchmarks on a machine without a ClickHouse server: chDB is one engine per
process, so several workers cannot open the same chDB directory; this process opens it once
and serves it over the subset of ClickHouse's HTTP interface that clickhouse-connect uses, so
every worker talks to it with the very client (``http://user:pass@host:port/db`` DSN, lz4) it
uses against a server. Production uses a ClickHouse server.

What it speaks, as ClickHouse does:

- the query in the ``query`` URL parameter, in the body, or both (parameter, newline, body);
  multipart form fields; ``param_*`` query parameters; ``database``; ``default_format``;
  any other URL parameter is a setting for that request only;
- ``session_id``: one chDB handle per session (its own ``SET`` and ``USE`` state), closed
  after ``session_timeout`` idle seconds; without one, a fresh handle per request;
- ``INSERT INTO t (cols) FORMAT X`` followed by data: the data goes to a temporary file and is
  inserted with ``INSERT INTO t (cols) FROM INFILE ... FORMAT X``, the statement chDB's own
  clickhouse-connect backend uses, so deduplication tokens behave as in embedded mode;
  ``INSERT INTO t (cols) SELECT ... FROM input('structure') ... FORMAT X`` followed by data reads
  the data through ``file(path, 'X', 'structure')`` in the same statement (ClickHouse's ``input``
  table function: the data of an INSERT SELECT, its format at the end of the query; docs
  sql-reference/table-functions/input);
- request bodies compressed with lz4, zstd, gzip or deflate (``Content-Encoding``), chunked
  or not; responses compressed when ``enable_http_compression=1`` and ``Accept-Encoding`` ask;
- errors as HTTP 4xx/5xx with ``Code: N. DB::Exception: ...`` and the
  ``X-ClickHouse-Exception-Code`` header, the status chosen as ClickHouse does;
- ``/ping``; Basic auth or ``X-ClickHouse-User``/``-Key`` against one configured user.

Every chDB call runs on one thread, one at a time: a single server, not a fast one.
``client_protocol_version`` is ignored (clickhouse-connect then falls back to protocol 0, as
behind a proxy that strips it).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import email.policy
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.frame

from deploy.kafka import free_port

try:  # clickhouse-connect brings one of these
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python < 3.14
    try:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    except ImportError:
        zstd = None  # type: ignore[assignment]

# URL parameters of the HTTP handler itself: never passed to the engine as settings.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "session_id", "session_timeout", "session_check", "query_id",
    "quota_key", "user", "password", "buffer_size", "wait_end_of_query", "compress", "decompress",
    "client_protocol_version", "role", "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "http_zlib_compression_level", "add_http_cors_header",
})  # fmt: skip
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INSERT_WITH_DATA = re.compile(
    rb"\A\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>[A-Za-z0-9_]+)[ \t]*(?:\r?\n|\Z)", re.I | re.S
)
INPUT_FUNCTION = re.compile(r"\binput\s*\(", re.I)
TARGET_SETTINGS = re.compile(r"\A(?P<head>.*?)\s+SETTINGS\s+(?P<settings>.*)\Z", re.I | re.S)
TRAILING_FORMAT = re.compile(r"\sFORMAT\s+(?P<fmt>[A-Za-z0-9_]+)\s*;?\s*\Z", re.I)
ERROR_CODE = re.compile(r"Code:\s*(\d+)")

# exception code -> HTTP status, as ClickHouse's exceptionCodeToHTTPStatus (the codes that matter here)
_STATUS_BY_CODE = {
    194: 401,  # REQUIRED_PASSWORD
    **dict.fromkeys((192, 193, 497, 516), 403),  # UNKNOWN_USER, WRONG_PASSWORD, ACCESS_DENIED, AUTHENTICATION_FAILED
    # BAD_ARGUMENTS, CANNOT_PARSE_*, DUPLICATE_COLUMN, ILLEGAL_COLUMN, THERE_IS_NO_COLUMN, SYNTAX_ERROR,
    # INCORRECT_DATA, TYPE_MISMATCH
    **dict.fromkeys((36, 6, 38, 41, 72, 15, 44, 8, 62, 117, 53), 400),
    # UNKNOWN_TABLE, _FUNCTION, _IDENTIFIER, _TYPE, _STORAGE, _DATABASE, _SETTING, _AGGREGATE_FUNCTION, _FORMAT
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 63, 73), 404),
    48: 501,  # NOT_IMPLEMENTED
    **dict.fromkeys((209, 76), 503),  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE
    159: 408,  # TIMEOUT_EXCEEDED
}
CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TabSeparatedWithNames": "text/tab-separated-values; charset=UTF-8",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
}


class ClickHouseError(Exception):
    """An error as ClickHouse reports it: a code and its ``Code: N. DB::Exception: ...`` text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def of(cls, code: int, name: str, text: str) -> ClickHouseError:
        return cls(code, f"Code: {code}. DB::Exception: {text}. ({name})")

    @classmethod
    def from_engine(cls, exc: Exception) -> ClickHouseError:
        text = str(exc)
        start = text.find("Code: ")
        text = text[start:].strip() if start >= 0 else text.strip()
        match = ERROR_CODE.match(text)
        return cls(int(match.group(1)), text) if match else cls.of(1002, "UNKNOWN_EXCEPTION", text)

    @property
    def status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)


def quote_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def settings_clause(settings: dict[str, str]) -> str:
    return ", ".join(f"{name} = {quote_string(value)}" for name, value in settings.items())


@dataclass
class Statement:
    """One request's statement as chDB runs it."""

    sql: str
    fmt: str  # the format chDB is asked for (an embedded FORMAT clause wins)
    result_format: str | None  # what X-ClickHouse-Format says, when known before running
    names_probe: bool = False  # TabSeparated by default: ask WithNames to tell a result set from none
    data: bytes | None = None  # the data of an INSERT ... FORMAT X


def parse_statement(raw: bytes, default_format: str | None) -> Statement:
    """Split what the client sent into the statement and, for an insert, its data."""
    insert = INSERT_WITH_DATA.match(raw[:65536])
    if insert is not None:
        target = insert.group("target").decode()
        fmt = insert.group("fmt").decode()
        settings = ""
        split = TARGET_SETTINGS.match(target)
        if split is not None:
            target, settings = split.group("head"), f" SETTINGS {split.group('settings')}"
        if INPUT_FUNCTION.search(target):  # INSERT ... SELECT ... FROM input('structure'): the data is read by file()
            target = INPUT_FUNCTION.sub(lambda _: f"file({{path}}, '{fmt}', ", target, count=1)
            return Statement(f"INSERT INTO {target}{settings}", "TabSeparated", None, data=raw[insert.end() :])
        sql = f"INSERT INTO {target} FROM INFILE {{path}}{settings} FORMAT {fmt}"
        return Statement(sql, "TabSeparated", None, data=raw[insert.end() :])
    try:
        sql = raw.decode("utf-8").strip().rstrip(";").rstrip()
    except UnicodeDecodeError as exc:
        raise ClickHouseError.of(36, "BAD_ARGUMENTS", f"The query is not valid UTF-8: {exc}") from None
    if not sql:
        raise ClickHouseError.of(62, "SYNTAX_ERROR", "Empty query")
    embedded = TRAILING_FORMAT.search(sql[-256:])
    if embedded is not None:
        return Statement(sql, embedded.group("fmt"), embedded.group("fmt"))
    if default_format and default_format != "TabSeparated":
        return Statement(sql, default_format, default_format)
    return Statement(sql, "TabSeparatedWithNames", None, names_probe=True)


@dataclass
class Request:
    """What the engine needs of one HTTP request."""

    statement: Statement
    database: str | None
    settings: dict[str, str]
    params: dict[str, str]
    session_id: str | None
    session_timeout: float
    session_check: bool


@dataclass
class Result:
    body: bytes
    result_format: str | None
    summary: dict[str, str]


@dataclass
class _Handle:
    """A chDB connection with the state ClickHouse keeps per session."""

    conn: Any
    database: str = "default"
    applied: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    last_used: float = field(default_factory=time.monotonic)

    def use(self, database: str | None) -> None:
        if database and database != self.database:
            self.conn.query(f"USE `{database.replace('`', '``')}`", "TabSeparated")
            self.database = database

    def apply(self, settings: dict[str, str]) -> None:
        """Make the request's URL settings the ones in force: set what differs, reset what it lacks."""
        for name in [n for n in self.applied if n not in settings]:
            self.conn.query(f"SET {name} = DEFAULT", "TabSeparated")
            del self.applied[name]
        for name, value in settings.items():
            if self.applied.get(name) != value:
                self.conn.query(f"SET {name} = {quote_string(value)}", "TabSeparated")
                self.applied[name] = value


class Engine:
    """The chDB engine of the directory, driven from one thread."""

    def __init__(self, path: Path) -> None:
        self.path = str(path.resolve())
        path.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chdb")
        self._sessions: dict[str, _Handle] = {}
        self._root: Any = None
        self.version, self.timezone = self._thread.submit(self._open).result()

    def _open(self) -> tuple[str, str]:
        self._root = chdb.connect(self.path)  # keeps the engine open while sessions come and go
        version, tz = self._root.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().split("\t")
        return version, tz.strip()

    def run(self, request: Request) -> Result:
        return self._thread.submit(self._run, request).result()

    def _run(self, request: Request) -> Result:
        now = time.monotonic()
        for sid, handle in list(self._sessions.items()):
            if now - handle.last_used > handle.timeout:
                handle.conn.close()
                del self._sessions[sid]
        sid = request.session_id
        if sid and sid not in self._sessions and request.session_check:
            raise ClickHouseError.of(372, "SESSION_NOT_FOUND", f"Session {sid} not found")
        handle = self._sessions.get(sid) if sid else None
        if handle is None:
            handle = _Handle(chdb.connect(self.path))
            if sid:
                self._sessions[sid] = handle
        handle.timeout = request.session_timeout
        statement = request.statement
        try:
            handle.use(request.database)
            handle.apply(request.settings)
            if statement.data is not None:
                return self._insert(handle, statement, request.params)
            result = handle.conn.query(statement.sql, statement.fmt, params=request.params or None)
        except ClickHouseError:
            raise
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from None
        finally:
            handle.last_used = time.monotonic()
            if not sid:
                handle.conn.close()
        body = result.bytes() or b""
        result_format = statement.result_format
        if statement.names_probe and body:
            # a statement with a result set sends at least its names line; strip it: the client asked TabSeparated
            newline = body.find(b"\n")
            body, result_format = (body[newline + 1 :] if newline >= 0 else b""), "TabSeparated"
        return Result(body, result_format, self._summary(result, "read"))

    @staticmethod
    def _insert(handle: _Handle, statement: Statement, params: dict[str, str]) -> Result:
        assert statement.data is not None
        with tempfile.NamedTemporaryFile(prefix="chdb-http-", suffix=".data") as tmp:
            tmp.write(statement.data)
            tmp.flush()
            sql = statement.sql.replace("{path}", quote_string(tmp.name))
            result = handle.conn.query(sql, "TabSeparated", params=params or None)
        # an INFILE insert reads exactly the rows it writes
        return Result(b"", None, Engine._summary(result, "written"))

    @staticmethod
    def _summary(result: Any, kind: str) -> dict[str, str]:
        try:
            return {
                f"{kind}_rows": str(result.rows_read()),
                f"{kind}_bytes": str(result.bytes_read()),
                "elapsed_ns": str(int(result.elapsed() * 1e9)),
            }
        except Exception:
            return {}

    def close(self) -> None:
        def close_all() -> None:
            for handle in self._sessions.values():
                handle.conn.close()
            self._sessions.clear()
            if self._root is not None:
                self._root.close()

        self._thread.submit(close_all).result()
        self._thread.shutdown(wait=True)


def decompress(body: bytes, encoding: str) -> bytes:
    """A request body as ClickHouse's Content-Encoding stage reads it (lz4 and zstd: concatenated frames)."""
    if not encoding or encoding == "identity":
        return body
    if encoding == "lz4":
        out = bytearray()
        while body:
            decoder = lz4.frame.LZ4FrameDecompressor()
            out += decoder.decompress(body)
            if not decoder.eof:
                raise ClickHouseError.of(33, "CANNOT_READ_ALL_DATA", "The lz4 frame of the request body is cut short")
            body = decoder.unused_data
        return bytes(out)
    if encoding == "zstd" and zstd is not None:
        return zstd.decompress(body)
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ClickHouseError.of(48, "NOT_IMPLEMENTED", f"Unsupported Content-Encoding: {encoding}")


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"lz4": lz4.frame.compress, "gzip": gzip.compress}
COMPRESSORS["deflate"] = zlib.compress
if zstd is not None:
    COMPRESSORS["zstd"] = zstd.compress


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: Engine, user: str, password: str) -> None:
        super().__init__(address, Handler)
        self.engine = engine
        self.user = user
        self.password = password


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown a benchmark's log

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:  # as ClickHouse, run nothing of a request cut short; nobody is left to answer
            self.close_connection = True
            return
        self._serve(body)

    def _read_body(self) -> bytes | None:
        """The whole body, or None when the client went away before its end (nothing of it may run)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline()
                if not line.endswith(b"\n"):
                    return None
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self.rfile.readline()) not in (b"\r\n", b"\n"):
                        if not trailer:
                            return None
                    return b"".join(chunks)
                chunk = self.rfile.read(size)
                if len(chunk) < size or not self.rfile.readline().endswith(b"\n"):
                    return None
                chunks.append(chunk)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        return body if len(body) == length else None

    def _serve(self, body: bytes) -> None:
        url = urlsplit(self.path)
        query_id = ""
        try:
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            if url.path in ("/ping", "/") and not params.get("query") and not body:
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            if url.path != "/":
                self._send(404, b"There is no handle " + url.path.encode() + b"\n", {"Content-Type": "text/plain"})
                return
            body = decompress(body, self.headers.get("Content-Encoding", "").strip().lower())
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                params.update(self._form_fields(content_type, body))
                body = b""
            query_id = params.get("query_id") or str(uuid.uuid4())
            self._authenticate(params)
            raw = (params["query"].encode() + b"\n" + body) if params.get("query") else body
            request = self._request(params, parse_statement(raw, params.get("default_format")))
            result = self.server.engine.run(request)
        except ClickHouseError as exc:
            self._send_error(exc, query_id)
            return
        except Exception as exc:  # a bug here must still answer as ClickHouse would
            self._send_error(ClickHouseError.of(1001, "STD_EXCEPTION", f"{type(exc).__name__}: {exc}"), query_id)
            return
        headers = {
            "Content-Type": CONTENT_TYPES.get(result.result_format or "", "application/octet-stream"),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Summary": json.dumps(result.summary),
        }
        if result.result_format:
            headers["X-ClickHouse-Format"] = result.result_format
        payload = result.body
        if params.get("enable_http_compression") in ("1", "true") and payload:
            for encoding in (e.strip() for e in self.headers.get("Accept-Encoding", "").split(",")):
                if encoding in COMPRESSORS:
                    payload = COMPRESSORS[encoding](payload)
                    headers["Content-Encoding"] = encoding
                    break
        self._send(200, payload, headers)

    @staticmethod
    def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        fields = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                fields[str(name)] = part.get_payload(decode=True).decode()
        return fields

    def _authenticate(self, params: dict[str, str]) -> None:
        user, password = params.get("user", "default"), params.get("password", "")
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        user = self.headers.get("X-ClickHouse-User", user)
        password = self.headers.get("X-ClickHouse-Key", password)
        if (user, password) != (self.server.user, self.server.password):
            raise ClickHouseError.of(
                516, "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
            )  # fmt: skip

    @staticmethod
    def _request(params: dict[str, str], statement: Statement) -> Request:
        settings, query_params = {}, {}
        for name, value in params.items():
            if name.startswith("param_"):
                query_params[name[len("param_") :]] = value
            elif name not in TRANSPORT_PARAMS:
                if not SETTING_NAME.match(name):
                    raise ClickHouseError.of(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
                settings[name] = value
        try:
            timeout = float(params.get("session_timeout") or 60)
        except ValueError:
            raise ClickHouseError.of(36, "BAD_ARGUMENTS", "Invalid session timeout") from None
        return Request(
            statement, params.get("database") or None, settings, query_params, params.get("session_id") or None,
            timeout, params.get("session_check") in ("1", "true"),
        )  # fmt: skip

    def _send_error(self, exc: ClickHouseError, query_id: str) -> None:
        text = exc.message if "(version " in exc.message else f"{exc.message} (version {self.server.engine.version})"
        self._send(
            exc.status, f"{text}\n".encode(),
            {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": str(exc.code),
             "X-ClickHouse-Query-Id": query_id},
        )  # fmt: skip

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client died waiting (a killed worker)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)


def serve(path: Path, host: str = "127.0.0.1", port: int = 8123, user: str = "default", password: str = "") -> None:
    """Serve until SIGTERM or SIGINT, then close chDB cleanly."""
    engine = Engine(path)
    server = Server((host, port), engine, user, password)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    print(
        f"chdb-http listening on http://{host}:{server.server_address[1]} (chDB {engine.version}, {path})", flush=True
    )
    stop.wait()
    server.shutdown()
    server.server_close()
    engine.close()


class ChdbHttpServer:
    """The endpoint as a child process: ``with ChdbHttpServer(directory) as dsn: ...``."""

    def __init__(
        self, path: Path, port: int | None = None, database: str = "default", log_path: Path | None = None
    ) -> None:
        self.path = path
        self.port = port or free_port()
        self.database = database
        self.log_path = log_path or path.parent / f"{path.name}-http.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"http://default:@127.0.0.1:{self.port}/{self.database}"

    def start(self, timeout: float = 60.0) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harness.chdb_http", "--path", str(self.path), "--port", str(self.port)],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chdb-http exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=2) as response,
            ):
                if response.status == 200:
                    return self.dsn
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"chdb-http not answering after {timeout}s:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (chDB closed cleanly), SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.chdb_http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, required=True, help="chDB data directory (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8123, help="TCP port (default 8123; 0 = any free one)")
    parser.add_argument("--user", default="default", help="the one accepted user (default: default)")
    parser.add_argument("--password", default="", help="its password (default empty)")
    args = parser.parse_args(argv)
    serve(args.path, args.host, args.port, args.user, args.password)


if __name__ == "__main__":
    main()
