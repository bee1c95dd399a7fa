"""Where fortio results come from: files, directories, and fortio servers or reports (URLs).

Each source becomes a ``LoadReport``: the results read, what was skipped and why, and the run
metadata found. A results directory written by ``runner.py`` also holds ``run-<id>.json``
files: run metadata, not results. They are recognised, skipped, and attached to the results
of that run.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import html
import json
import os
import re
import socket
import stat
import threading
import urllib.parse
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import urllib3.connectionpool

from meshperf.errors import ResultsError
from meshperf.fortioresult import RUN_FORMATS, FortioResult, NotAResult, check_format

DEFAULT_TIMEOUT = 10.0
# A whole URL source (listing and every file) must be read within this many seconds: the
# per-request timeout alone lets a server that sends a byte every second hold on for ever.
DEFAULT_DEADLINE = 300.0
FETCH_WORKERS = 8
# Far above any fortio result (a 256 KiB payload makes ~350 KB); guards against serving junk.
MAX_FILE_BYTES = 64 * 1024 * 1024

RUN_FILE = re.compile(r"^run-(?P<run_id>.+)\.json$")
# Names a fortio listing may offer: plain file names only, never a path elsewhere.
_SAFE_NAME = re.compile(r"^[^/\\?#]+\.json$")


# JSON nested so deep that Python's json module gives up (its recursion limit, about 1000
# levels) is no result: fortio's nest 5 levels deep, ours 6.


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Something that was not read, and why. ``test`` is False for a file that is not a fortio
    result at all (NDJSON, another program's JSON): it is named, but it is no failed test."""

    source: str
    reason: str
    test: bool = True


@dataclasses.dataclass
class LoadReport:
    """What loading produced: results, what was skipped (with reasons) and run metadata."""

    results: list[FortioResult] = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    runs: dict[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def extend(self, other: LoadReport) -> None:
        self.results.extend(other.results)
        self.skipped.extend(other.skipped)
        self.runs.update(other.runs)


def is_run_metadata(name: str, doc: Any) -> bool:
    """``run-<id>.json`` written by runner.py: metadata, not a result."""
    return RUN_FILE.match(name) is not None and not (
        isinstance(doc, Mapping) and "DurationHistogram" in doc
    )


def is_collected_rows(doc: Any) -> bool:
    """``PREFIX.json`` written by fortio.py (a list of row objects), not a result.

    ``fortio.py results/ -o results/summary`` puts it beside the results it was made from.
    """
    return (
        isinstance(doc, list)
        and bool(doc)
        and all(isinstance(r, Mapping) and "StartTime" in r and "source" in r for r in doc)
    )


def _run_id_of(name: str, doc: Mapping[str, Any]) -> str:
    rid = doc.get("run_id")
    if isinstance(rid, str) and rid:
        return rid
    m = RUN_FILE.match(name)
    return m["run_id"] if m else ""


def _json_values(text: str) -> list[Any] | None:
    """The documents of NDJSON (or of JSON texts written one after another), else None."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    i, n = 0, len(text)
    ws = re.compile(r"\s*")
    try:
        while True:
            i = ws.match(text, i).end()  # type: ignore[union-attr]
            if i >= n:
                return values
            value, i = decoder.raw_decode(text, i)
            values.append(value)
    except (json.JSONDecodeError, RecursionError):
        return None


def read_json(text: str | bytes, source: str = "") -> Any:
    """One JSON document; ResultsError when it is not JSON, NotAResult when it cannot be a
    fortio result (NDJSON, nested too deeply for the json module). Never a RecursionError."""
    where = source or "result"
    try:
        doc = json.loads(text)
    except RecursionError:
        raise NotAResult(
            f"{where}: not a fortio result: JSON nested too deeply to read"
        ) from None
    except UnicodeDecodeError as e:
        raise ResultsError(f"{where}: not valid JSON ({e})") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":
            values = _json_values(
                text.decode("utf-8", "replace") if isinstance(text, bytes) else text
            )
            if values:
                kind = "objects" if all(isinstance(v, dict) for v in values) else "values"
                raise NotAResult(
                    f"{where}: not a fortio result: NDJSON of {len(values)} {kind}"
                ) from None
        raise ResultsError(f"{where}: not valid JSON ({e})") from None
    # Shallower nesting parses and is judged like any other JSON: nothing after this walks a
    # document recursively, and a result's fields are checked by name.
    return doc


def parse_result(text: str | bytes, source: str = "") -> FortioResult:
    """One fortio result from its JSON text; raises ResultsError (NotAResult for other JSON)."""
    return FortioResult(read_json(text, source), source)


def _skip(report: LoadReport, source: str, e: ResultsError) -> None:
    reason = str(e).removeprefix(f"{source}: ")
    report.skipped.append(Skipped(source, reason, test=not isinstance(e, NotAResult)))


def _classify(name: str, text: str | bytes, source: str, report: LoadReport) -> None:
    """Add one fetched/read file to ``report`` as a result, run metadata, or a skip."""
    try:
        doc = read_json(text, source)
    except ResultsError as e:
        _skip(report, source, e)
        return
    if is_run_metadata(name, doc):
        if isinstance(doc, Mapping):
            try:
                check_format(doc, "run file", RUN_FORMATS)
            except ValueError as e:
                # Its tests' facts cannot be trusted to mean what this code thinks: keep the
                # results, without the run's metadata.
                report.skipped.append(Skipped(source, str(e)))
                return
            report.runs[_run_id_of(name, doc)] = doc
            report.skipped.extend(_tests_without_result(source, doc))
        return
    if is_collected_rows(doc):
        return
    try:
        report.results.append(FortioResult(doc, source))
    except ResultsError as e:
        _skip(report, source, e)


def _tests_without_result(source: str, run: Mapping[str, Any]) -> list[Skipped]:
    """Tests the run file lists as failed or never run: they have no result to read."""
    out: list[Skipped] = []
    tests = run.get("tests")
    if not isinstance(tests, list):
        return out
    finished = run.get("status") != "running"
    for t in tests:
        if not isinstance(t, Mapping) or t.get("file"):
            continue
        status = t.get("status")
        if status in ("failed", "interrupted") or (status == "not-run" and finished):
            what = f"{source} test {t.get('index', '?')} ({t.get('label') or t.get('mode', '')})"
            reason = t.get("reason") or "no reason recorded"
            out.append(Skipped(what, f"{status} in the run: {reason}"))
    return out


def attach_run_metadata(report: LoadReport) -> None:
    """Give each result the metadata of its run (joined on ``meshperf.run_id``)."""
    if not report.runs:
        return
    report.results = [
        r.with_run_metadata(report.runs[r.meshperf["run_id"]])
        if r.meshperf.get("run_id") in report.runs and r.run_metadata is None
        else r
        for r in report.results
    ]


def _read_file(p: Path) -> bytes:
    """A file's bytes, refused past MAX_FILE_BYTES (read no further than that)."""
    too_big = ResultsError(f"{p}: more than {MAX_FILE_BYTES} bytes, more than a result can be")
    chunks: list[bytes] = []
    total = 0
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            regular = stat.S_ISREG(st.st_mode)
            if regular and st.st_size > MAX_FILE_BYTES:
                raise too_big
            # Sized reads: read(MAX_FILE_BYTES + 1) would allocate the whole limit for every
            # file. What is no regular file (a FIFO, /dev/zero) is read in steps up to it.
            step = st.st_size + 1 if regular else 1 << 16
            while total <= MAX_FILE_BYTES:
                chunk = f.read(min(step, MAX_FILE_BYTES + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except OSError as e:
        raise ResultsError(f"{p}: cannot read ({e.strerror or e})") from None
    if total > MAX_FILE_BYTES:
        raise too_big
    return b"".join(chunks)


def load_file(path: str | os.PathLike[str]) -> FortioResult:
    """One result file; raises ResultsError (also for run metadata files)."""
    p = Path(path)
    return parse_result(_read_file(p), str(p))


def load_files(paths: Iterable[str | os.PathLike[str]]) -> LoadReport:
    report = LoadReport()
    for path in paths:
        p = Path(path)
        try:
            text = _read_file(p)
        except ResultsError as e:
            _skip(report, str(p), e)
            continue
        _classify(p.name, text, str(p), report)
    attach_run_metadata(report)
    return report


def load_dir(path: str | os.PathLike[str]) -> LoadReport:
    """Every top-level ``*.json`` of a results directory (run metadata recognised)."""
    d = Path(path)
    try:
        files = sorted(p for p in d.iterdir() if p.suffix == ".json" and p.is_file())
    except OSError as e:
        raise ResultsError(f"{d}: cannot list ({e.strerror or e})") from None
    return load_files(files)


# -- fortio server / report URLs -------------------------------------------------------------


def _data_urls(url: str) -> tuple[list[str], str | None]:
    """Candidate ``.../data/`` URLs for a user-given URL, and a single file URL if it is one."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    if path.endswith(".json"):
        return [], urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    trimmed = path.rstrip("/")
    for suffix in ("/index.tsv", "/index.html", "/browse"):
        if trimmed.endswith(suffix):
            trimmed = trimmed[: -len(suffix)]
            if suffix == "/browse":
                return [base + trimmed + "/data/"], None
    if trimmed.endswith("/data"):
        return [base + trimmed + "/"], None
    if trimmed.endswith("/fortio"):
        return [base + trimmed + "/data/"], None
    # A base URL: fortio server's UI path first (the 2019 $FORTIO_CLIENT_URL), then report mode.
    return [base + trimmed + "/fortio/data/", base + trimmed + "/data/"], None


def _listed_name(entry: str) -> str | None:
    name = urllib.parse.unquote(urllib.parse.urlsplit(entry).path.rsplit("/", 1)[-1])
    return name if _SAFE_NAME.match(name) and name not in (".json", "..json") else None


def parse_index_tsv(text: str) -> list[tuple[str, int | None, str | None]]:
    """``index.tsv`` (spec 3.4): (file name, size, base64 MD5) per line after the header."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "TsvHttpData-1.0":
        raise ValueError("not a TsvHttpData-1.0 listing")
    out: list[tuple[str, int | None, str | None]] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split("\t")
        name = _listed_name(fields[0])
        if name is None:
            continue
        size = int(fields[1]) if len(fields) > 1 and fields[1].strip().isdigit() else None
        md5 = fields[2].strip() if len(fields) > 2 and fields[2].strip() else None
        out.append((name, size, md5))
    return out


_HREF = re.compile(r"""<a\s+href="([^"]+)\"""", re.IGNORECASE)
_OPTION = re.compile(r"""<option\s+value="([^"]+)\"""", re.IGNORECASE)


def parse_html_listing(text: str, browse: bool = False) -> list[str]:
    """File names from the data listing (spec 3.3) or the browse page's ``<option value="``."""
    names: list[str] = []
    for m in (_OPTION if browse else _HREF).finditer(text):
        name = _listed_name(html.unescape(m.group(1)))
        if name is not None and name not in names:
            names.append(name)
    return names


class _Deadline:
    """A source's total time budget. When it passes, every socket the source opened is shut
    down, which ends any read blocked on it (a per-request timeout cannot: each byte that
    arrives in time restarts it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
            expired = self.expired
        if expired:
            self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._sockets)
        for sock in socks:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def message(self, url: str) -> str:
        return f"{url}: not read within the {self.seconds:g} s deadline for this source"


def _session_with_deadline(deadline: _Deadline, workers: int) -> requests.Session:
    """A session whose every connection registers its socket with ``deadline``."""

    def connection_class(base: type[Any]) -> type[Any]:
        def connect(self: Any) -> None:
            base.connect(self)
            deadline.track(self.sock)

        return type(f"Deadline{base.__name__}", (base,), {"connect": connect})

    pools = {
        scheme: type(
            f"Deadline{pool.__name__}",
            (pool,),
            {"ConnectionCls": connection_class(pool.ConnectionCls)},
        )
        for scheme, pool in (
            ("http", urllib3.connectionpool.HTTPConnectionPool),
            ("https", urllib3.connectionpool.HTTPSConnectionPool),
        )
    }
    sess = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=workers)
    adapter.poolmanager.pool_classes_by_scheme = pools
    sess.mount("http://", adapter)
    sess.mount("https://", adapter)
    return sess


def _read_body(resp: requests.Response, url: str) -> bytes:
    """The whole body, refused past MAX_FILE_BYTES (also without a Content-Length)."""
    chunks: list[bytes] = []
    total = 0
    for chunk in resp.iter_content(chunk_size=64 * 1024):
        total += len(chunk)
        if total > MAX_FILE_BYTES:
            raise ResultsError(
                f"{url}: more than {MAX_FILE_BYTES} bytes, more than a result can be"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _get(
    session: requests.Session, url: str, timeout: float, deadline: _Deadline | None = None
) -> requests.Response:
    if deadline is not None and deadline.expired:
        raise ResultsError(deadline.message(url))
    try:
        # No redirects: fortio report sends every /fortio... path to its front page, which
        # must read as "not here" rather than as an (empty) listing.
        resp = session.get(url, timeout=timeout, allow_redirects=False, stream=True)
        with resp:
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > MAX_FILE_BYTES:
                raise ResultsError(f"{url}: {int(length)} bytes, more than a result can be")
            # Read it all now, inside the timeout handling; requests keeps it as .content.
            resp._content = _read_body(resp, url)
        if deadline is not None and deadline.expired:
            # A shut socket can look like a response that ended early: never take it as one.
            raise ResultsError(deadline.message(url))
        return resp
    except requests.RequestException as e:
        if deadline is not None and deadline.expired:
            raise ResultsError(deadline.message(url)) from None
        if isinstance(e, requests.Timeout):
            raise ResultsError(f"{url}: no answer within {timeout:g} s") from None
        if isinstance(e, requests.ConnectionError):
            raise ResultsError(f"{url}: cannot connect ({_short(e)})") from None
        raise ResultsError(f"{url}: {_short(e)}") from None


def _short(e: BaseException) -> str:
    text = str(e)
    m = re.search(r"""\[Errno -?\d+\] ([^'")]+)""", text) or re.search("(Read timed out)", text)
    return m.group(1).strip() if m else text.splitlines()[0][:200]


def _list_data(
    session: requests.Session, data_url: str, timeout: float, deadline: _Deadline | None = None
) -> tuple[list[tuple[str, int | None, str | None]], str]:
    """Files listed under ``data_url``: index.tsv, else the HTML listing, else the browse page."""
    why: list[str] = []
    resp = _get(session, data_url + "index.tsv", timeout, deadline)
    if resp.status_code == 200:
        try:
            return parse_index_tsv(resp.text), "index.tsv"
        except ValueError as e:
            why.append(f"index.tsv: {e}")
    else:
        why.append(f"index.tsv: HTTP {resp.status_code}")
    resp = _get(session, data_url, timeout, deadline)
    if resp.status_code == 200:
        names = parse_html_listing(resp.text)
        # fortio's listing is exactly this markup, also when the directory is empty.
        if names or resp.text.lstrip().lower().startswith("<html><body><ul>"):
            return [(n, None, None) for n in names], "HTML listing"
        why.append("listing: no result links")
    else:
        why.append(f"listing: HTTP {resp.status_code}")
    browse_url = data_url[: -len("data/")] + "browse"
    resp = _get(session, browse_url, timeout, deadline)
    if resp.status_code == 200:
        names = parse_html_listing(resp.text, browse=True)
        if names or 'id="files"' in resp.text:
            return [(n, None, None) for n in names], "browse page"
    why.append(f"browse: HTTP {resp.status_code}" if resp.status_code != 200 else "browse: none")
    raise ResultsError(f"{data_url}: no fortio result listing ({'; '.join(why)})")


def _fetch_one(
    session: requests.Session,
    url: str,
    size: int | None,
    md5: str | None,
    timeout: float,
    deadline: _Deadline | None = None,
) -> bytes:
    resp = _get(session, url, timeout, deadline)
    if resp.status_code != 200:
        raise ResultsError(f"HTTP {resp.status_code} {resp.reason or ''}".strip())
    body = resp.content
    if size is not None and len(body) != size:
        raise ResultsError(f"got {len(body)} bytes, the listing says {size} (truncated?)")
    if md5 is not None:
        digest = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        if digest != md5:
            raise ResultsError("MD5 differs from the listing's (corrupt download?)")
    return body


def load_url(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
    workers: int = FETCH_WORKERS,
    deadline: float = DEFAULT_DEADLINE,
) -> LoadReport:
    """Every result a fortio server or report serves, fetched concurrently.

    ``url`` may be the base URL (``http://host:8080``), the UI path, ``.../data/``, the browse
    page, or one ``.json`` file. Raises ResultsError when nothing can be listed at all; files
    that fail individually are reported as skipped. Everything must arrive within
    ``deadline`` seconds; what has not by then is skipped with that reason.
    """
    check_url(url)
    if not deadline > 0:
        raise ResultsError(f"{url}: deadline must be > 0 s, got {deadline!r}")
    clock = _Deadline(deadline)
    own = session is None
    # Our own session tracks its sockets, so the deadline can end reads blocked on them; a
    # caller's session only gets the checks between requests.
    sess = session or _session_with_deadline(clock, workers)
    clock.start()
    try:
        report = LoadReport()
        candidates, single = _data_urls(url)
        if single is not None:
            body = _fetch_one(sess, single, None, None, timeout, clock)
            _classify(single.rsplit("/", 1)[-1], body, single, report)
            attach_run_metadata(report)
            return report
        errors: list[str] = []
        listing: list[tuple[str, int | None, str | None]] | None = None
        data_url = candidates[0]
        for data_url in candidates:
            try:
                listing, _kind = _list_data(sess, data_url, timeout, clock)
                break
            except ResultsError as e:
                errors.append(str(e))
                if "cannot connect" in str(e) or "no answer" in str(e):
                    break  # the next candidate is on the same host
        if listing is None:
            raise ResultsError(errors[-1] if len(errors) == 1 else "; ".join(errors))

        def fetch(item: tuple[str, int | None, str | None]) -> tuple[str, bytes | str]:
            name, size, md5 = item
            file_url = data_url + urllib.parse.quote(name)
            try:
                return name, _fetch_one(sess, file_url, size, md5, timeout, clock)
            except ResultsError as e:
                return name, str(e).removeprefix(f"{file_url}: ")

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for name, got in pool.map(fetch, listing):
                source = data_url + name
                if isinstance(got, str):
                    report.skipped.append(Skipped(source, got))
                else:
                    _classify(name, got, source, report)
        attach_run_metadata(report)
        return report
    finally:
        clock.cancel()
        if own:
            sess.close()


def is_url(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


def check_url(url: str) -> None:
    """Raise ResultsError unless ``url`` is an http(s) URL with a host (and a valid port)."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises for a port out of range
    except ValueError as e:
        raise ResultsError(f"{url}: not a valid URL ({e})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ResultsError(f"{url}: not an http(s) URL")
    if not parts.hostname:
        raise ResultsError(f"{url}: not a valid URL (no host)")


def load_source(
    source: str, *, timeout: float = DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE
) -> LoadReport:
    """A URL, a results directory or one JSON file; raises ResultsError when it is none."""
    if is_url(source):
        return load_url(source, timeout=timeout, deadline=deadline)
    p = Path(source)
    if p.is_dir():
        return load_dir(p)
    if p.is_file():
        return load_files([p])
    if "://" in source:
        raise ResultsError(f"{source}: unsupported URL scheme (use http:// or https://)")
    raise ResultsError(
        f"{source}: no such file or directory",
        hint="a fortio server is given as a URL, e.g. http://127.0.0.1:8080",
    )


def load_sources(
    sources: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
) -> LoadReport:
    """All sources; a source that cannot be read at all is reported as skipped."""
    report = LoadReport()
    for source in sources:
        try:
            report.extend(load_source(source, timeout=timeout, deadline=deadline))
        except ResultsError as e:
            report.skipped.append(Skipped(source, str(e).removeprefix(f"{source}: ")))
    attach_run_metadata(report)
    return report
