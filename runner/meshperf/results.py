"""Fortio result files: the validated model, and loading them from files, directories and URLs.

Every fortio version described in ``shared/spec/fortio-format.md`` loads through one code path:
keys may be missing, ``Percentiles`` may be null or omitted, ``ID`` may be an integer (1.21-1.34)
or a string, ``RequestedQPS`` may be ``"max"``, gRPC ``RetCodes`` may be numeric (< 1.2.0) and
``StartTime`` may carry any UTC offset and nanoseconds. Results that fortio wrote for runs that
never started (``"error": true``) and empty results (``Count`` 0) load too; deciding what to do
with them is the caller's business (``FortioResult.problem`` says why one is unusable).

A results directory written by ``runner.py`` also holds ``run-<id>.json`` files: run metadata,
not results. They are recognised, skipped, and attached to the results of that run.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import datetime as dt
import hashlib
import html
import json
import math
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from meshperf import fortiojson
from meshperf.errors import ResultsError
from meshperf.fortiojson import parse_start_time
from meshperf.histogram import calc_percentile
from meshperf.labels import parse as label_facts
from meshperf.platform import MODES, RESULT_KEY

DEFAULT_TIMEOUT = 10.0
FETCH_WORKERS = 8
# Far above any fortio result (a 256 KiB payload makes ~350 KB); guards against serving junk.
MAX_FILE_BYTES = 64 * 1024 * 1024

RUN_FILE = re.compile(r"^run-(?P<run_id>.+)\.json$")
# Names a fortio listing may offer: plain file names only, never a path elsewhere.
_SAFE_NAME = re.compile(r"^[^/\\?#]+\.json$")
# Return codes that count as success when a result has no ErrorsDurationHistogram (fortio
# < 1.28.0; from 1.28.0 on, periodic.go records every call its runner judged failed there).
# gRPC health/ping: "SERVING" (fgrpc/grpcrunner.go); TCP and UDP: "OK" (tcprunner.go,
# udprunner.go); their errors are the error text. HTTP: see http_code_ok.
OK_CODES = frozenset({"200", "SERVING", "OK"})
# gRPC before fortio 1.2.0 wrote the health-status enum number; 1 is SERVING.
GRPC_NUMERIC_OK = frozenset({"1"})
# fortio 1.7.0 (commit ec8adab, "allow all 2xx code and 418 to be considered ok") made
# fhttp's codeIsOK accept 200-299 and 418; before it, only 200 was a success.
HTTP_ANY_2XX_SINCE = (1, 7)
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)")


def _fortio_version(text: str) -> tuple[int, int] | None:
    m = _VERSION_RE.match(text or "")
    return (int(m[1]), int(m[2])) if m else None


def http_code_ok(code: str, version: str) -> bool:
    """Whether fortio ``version``'s HTTP runner counted ``code`` a success (fhttp codeIsOK)."""
    if code == "200":
        return True
    v = _fortio_version(version)
    if v is None or v < HTTP_ANY_2XX_SINCE or not code.isdigit():
        return False
    c = int(code)
    return 200 <= c <= 299 or c == 418


def error_count(raw: Mapping[str, Any]) -> int:
    """Calls that failed, as the fortio that wrote ``raw`` judged them: the one rule.

    ErrorsDurationHistogram's Count when present; otherwise the RetCodes that version of
    fortio did not count as success (see OK_CODES and http_code_ok). Our own generator writes
    the histogram, so its results take the first branch.
    """
    errs = raw.get("ErrorsDurationHistogram")
    if isinstance(errs, Mapping) and errs.get("Count") is not None:
        return int(errs["Count"])
    run_type = str(raw.get("RunType") or "HTTP")
    version = str(raw.get("Version") or "")
    grpc = run_type.upper().startswith("GRPC")
    codes: Mapping[str, Any] = raw.get("RetCodes") or {}
    failed = 0
    for code, n in codes.items():
        c = str(code)
        ok = c in OK_CODES or (grpc and c in GRPC_NUMERIC_OK)
        if not ok and not grpc:
            ok = http_code_ok(c, version)
        if not ok:
            failed += int(n)
    return failed


def error_percent(raw: Mapping[str, Any]) -> float:
    """Failed calls in % of all calls; 0 when there were no calls (``problem`` says so)."""
    hist = raw.get("DurationHistogram") or {}
    count = int(hist.get("Count") or 0) if isinstance(hist, Mapping) else 0
    if count == 0:
        return 0.0
    return min(100.0, 100.0 * error_count(raw) / count)


def _num(value: Any, what: str, default: float | None = None) -> float:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    f = float(value)
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return f


def _check_histogram(hist: Any, name: str) -> None:
    """Enough of ``HistogramData`` to compute percentiles from it; raises ValueError."""
    if not isinstance(hist, Mapping):
        raise ValueError(f"{name} must be an object, got {type(hist).__name__}")
    count = hist.get("Count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{name}.Count must be an integer >= 0, got {count!r}")
    data = hist.get("Data")
    if data is None:
        data = []
    if not isinstance(data, list):
        raise ValueError(f"{name}.Data must be a list or null")
    if count == 0:
        return
    if not data:
        raise ValueError(f"{name} has Count {count} but no Data")
    _num(hist.get("Min"), f"{name}.Min")
    _num(hist.get("Max"), f"{name}.Max")
    for i, b in enumerate(data):
        try:
            edges = (b["Start"], b["End"], b["Percent"])
        except (TypeError, KeyError):
            raise ValueError(f"{name}.Data[{i}] needs Start, End and Percent") from None
        # Exact types: bool is an int subclass; json.loads accepts NaN and Infinity.
        if not all(type(v) in (int, float) and math.isfinite(v) for v in edges):
            raise ValueError(f"{name}.Data[{i}]: Start, End and Percent must be finite numbers")


def parse_requested_qps(value: Any) -> float | None:
    """``RequestedQPS``: ``"%.9g"`` text, or ``"max"`` (returned as None)."""
    if value is None or value == "max":
        return None
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            raise ValueError(f"RequestedQPS {value!r} is neither a number nor 'max'") from None
    else:
        f = _num(value, "RequestedQPS")
    if math.isnan(f) or math.isinf(f) or f < 0:
        raise ValueError(f"RequestedQPS {value!r} is not a rate")
    return None if f == 0 else f


@dataclasses.dataclass(frozen=True)
class LabelShape:
    """The parts of a label (``meshperf.labels`` reads it); ``extra_labels`` is the whole
    variant between size and mode, telemetry mode included, as the 2019 scripts saw it."""

    run_id: str
    qps: float | None  # None = max
    conn: int
    size: int
    extra_labels: str
    mode: str
    telemetry: str = ""
    extra: str = ""
    scheme: str = ""
    mode_spelling: str = ""

    @classmethod
    def parse(cls, labels: str) -> LabelShape | None:
        f = label_facts(labels)
        if f is None:
            return None
        return cls(
            run_id=f.run_id,
            qps=f.qps,
            conn=f.conn,
            size=f.size,
            extra_labels=f.variant,
            mode=f.mode,
            telemetry=f.telemetry,
            extra=f.extra,
            scheme=f.scheme,
            mode_spelling=f.mode_spelling,
        )


@dataclasses.dataclass(frozen=True)
class FortioResult:
    """One fortio result, validated on construction. ``raw`` is the file's JSON, untouched."""

    raw: Mapping[str, Any]
    source: str = ""
    run_metadata: Mapping[str, Any] | None = None
    # Derived once, in __post_init__.
    _start: dt.datetime = dataclasses.field(init=False, repr=False, compare=False)
    _shape: LabelShape | None = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = self.raw
        where = self.source or "result"
        if not isinstance(raw, Mapping):
            raise ResultsError(f"{where}: not a fortio result (JSON {type(raw).__name__})")
        if "DurationHistogram" not in raw:
            raise ResultsError(f"{where}: not a fortio result (no DurationHistogram)")
        if "StartTime" not in raw:
            raise ResultsError(f"{where}: not a fortio result (no StartTime)")
        try:
            _check_histogram(raw["DurationHistogram"], "DurationHistogram")
            for extra in ("ErrorsDurationHistogram", "SendLagHistogram"):
                if raw.get(extra) is not None:
                    _check_histogram(raw[extra], extra)
            object.__setattr__(self, "_start", parse_start_time(raw["StartTime"]))
            parse_requested_qps(raw.get("RequestedQPS"))
            _num(raw.get("ActualQPS"), "ActualQPS", 0.0)
            _num(raw.get("ActualDuration"), "ActualDuration", 0.0)
            nt = raw.get("NumThreads", 0)
            if isinstance(nt, bool) or not isinstance(nt, int) or nt < 0:
                raise ValueError(f"NumThreads must be an integer >= 0, got {nt!r}")
            labels = raw.get("Labels", "")
            if labels is not None and not isinstance(labels, str):
                raise ValueError(f"Labels must be a string, got {labels!r}")
            codes = raw.get("RetCodes")
            if codes is not None and not (
                isinstance(codes, Mapping)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in codes.values())
            ):
                raise ValueError("RetCodes must map codes to integer counts")
            block = raw.get(RESULT_KEY)
            if block is not None and not isinstance(block, Mapping):
                raise ValueError(f"{RESULT_KEY} must be an object")
            if block and block.get("mode") not in (None, "", *MODES):
                raise ValueError(f"{RESULT_KEY}.mode {block.get('mode')!r} is not a known mode")
        except ValueError as e:
            raise ResultsError(f"{where}: {e}") from None
        object.__setattr__(self, "_shape", LabelShape.parse(self.labels))

    # -- fortio's fields -------------------------------------------------------------------

    @property
    def start_time(self) -> dt.datetime:
        return self._start

    @property
    def start_time_text(self) -> str:
        """StartTime exactly as fortio wrote it (nanoseconds and the zone kept)."""
        return str(self.raw["StartTime"]).strip()

    @property
    def labels(self) -> str:
        return self.raw.get("Labels") or ""

    @property
    def run_type(self) -> str:
        # fortio 0.8.x had no RunType; those were all HTTP runs.
        return str(self.raw.get("RunType") or "HTTP")

    @property
    def version(self) -> str:
        return str(self.raw.get("Version") or "")

    @property
    def requested_qps(self) -> float | None:
        """Target total QPS; None for max speed."""
        return parse_requested_qps(self.raw.get("RequestedQPS"))

    @property
    def actual_qps(self) -> float:
        return _num(self.raw.get("ActualQPS"), "ActualQPS", 0.0)

    @property
    def actual_duration(self) -> float:
        """Measured run time in seconds (fortio stores nanoseconds)."""
        return _num(self.raw.get("ActualDuration"), "ActualDuration", 0.0) / 1e9

    @property
    def num_threads(self) -> int:
        return int(self.raw.get("NumThreads") or 0)

    @property
    def duration_histogram(self) -> Mapping[str, Any]:
        return self.raw["DurationHistogram"]  # type: ignore[no-any-return]

    @property
    def sendlag_histogram(self) -> Mapping[str, Any] | None:
        return self.raw.get("SendLagHistogram")

    @property
    def count(self) -> int:
        return int(self.duration_histogram["Count"])

    def percentile(self, p: float, hist: Mapping[str, Any] | None = None) -> float:
        """Percentile ``p`` (0-100) in seconds, from ``Data`` by fortio's rule (spec 2.4)."""
        return calc_percentile(self.duration_histogram if hist is None else hist, p)

    @property
    def is_error(self) -> bool:
        """A result fortio built for a run that never started (``"error": true``)."""
        return bool(self.raw.get("error"))

    @property
    def error_count(self) -> int:
        """Failed calls (``error_count``, the one rule)."""
        return error_count(self.raw)

    @property
    def error_percent(self) -> float:
        return error_percent(self.raw)

    @property
    def problem(self) -> str | None:
        """Why this result has no usable latency, or None when it has."""
        if self.is_error:
            parts = [str(self.raw.get(k)) for k in ("message", "exception") if self.raw.get(k)]
            return "fortio run failed: " + (": ".join(parts) or "error result")
        if self.count == 0:
            return "no calls recorded (Count 0)"
        return None

    # -- what this test was --------------------------------------------------------------------

    @property
    def meshperf(self) -> Mapping[str, Any]:
        """Our block (``platform.RESULT_KEY``), or {} for results fortio wrote on its own."""
        return self.raw.get(RESULT_KEY) or {}

    @property
    def label_shape(self) -> LabelShape | None:
        return self._shape

    def _from_block_or_label(self, key: str, label_attr: str) -> Any:
        value = self.meshperf.get(key)
        if value not in (None, ""):
            return value
        if self.label_shape is not None:
            return getattr(self.label_shape, label_attr)
        return None

    @property
    def mode(self) -> str:
        """``meshperf.mode``, else the 2019 label's suffix, else "" (never guessed further)."""
        return str(self._from_block_or_label("mode", "mode") or "")

    @property
    def conn(self) -> int | None:
        value = self._from_block_or_label("conn", "conn")
        return None if value is None else int(value)

    @property
    def qps(self) -> float | None:
        """Requested total QPS from our block or the 2019 label; falls back to RequestedQPS."""
        value = self._from_block_or_label("qps", "qps")
        if value is None:
            return self.requested_qps
        return float(value) or None

    @property
    def payload_size(self) -> int | None:
        """Response payload bytes: our block, the 2019 label, or the URL's ``size=N``."""
        value = self._from_block_or_label("size", "size")
        if value is not None:
            return int(value)
        url = self.raw.get("URL")
        if isinstance(url, str):
            size = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("size", [])
            if len(size) == 1 and size[0].isdigit():
                return int(size[0])
        return None

    @property
    def extra_labels(self) -> str:
        if "extra_labels" in self.meshperf:
            return str(self.meshperf.get("extra_labels") or "")
        return self.label_shape.extra_labels if self.label_shape else ""

    def _run_fact(self, key: str) -> str:
        value = self.meshperf.get(key)
        if value in (None, "") and self.run_metadata:
            value = self.run_metadata.get(key)
        return "" if value is None else str(value)

    @property
    def mesh(self) -> str:
        return self._run_fact("mesh")

    @property
    def platform(self) -> str:
        return self._run_fact("platform")

    @property
    def run_id(self) -> str:
        value = self.meshperf.get("run_id")
        if value:
            return str(value)
        return self.label_shape.run_id if self.label_shape else ""

    @property
    def repeat(self) -> int | None:
        value = self.meshperf.get("repeat")
        return None if value is None else int(value)

    @property
    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        res = self.meshperf.get("resources")
        return res if isinstance(res, Mapping) else {}

    def with_run_metadata(self, meta: Mapping[str, Any]) -> FortioResult:
        return dataclasses.replace(self, run_metadata=meta)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Something that was not read, and why."""

    source: str
    reason: str


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


def parse_result(text: str | bytes, source: str = "") -> FortioResult:
    """One fortio result from its JSON text; raises ResultsError."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{source or 'result'}: not valid JSON ({e})") from None
    return FortioResult(doc, source)


def _classify(name: str, text: str | bytes, source: str, report: LoadReport) -> None:
    """Add one fetched/read file to ``report`` as a result, run metadata, or a skip."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        report.skipped.append(Skipped(source, f"not valid JSON ({e})"))
        return
    if is_run_metadata(name, doc):
        if isinstance(doc, Mapping):
            report.runs[_run_id_of(name, doc)] = doc
            report.skipped.extend(_tests_without_result(source, doc))
        return
    if is_collected_rows(doc):
        return
    try:
        report.results.append(FortioResult(doc, source))
    except ResultsError as e:
        reason = str(e).removeprefix(f"{source}: ")
        report.skipped.append(Skipped(source, reason))


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


def load_file(path: str | os.PathLike[str]) -> FortioResult:
    """One result file; raises ResultsError (also for run metadata files)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise ResultsError(f"{p}: cannot read ({e.strerror or e})") from None
    return parse_result(text, str(p))


def load_files(paths: Iterable[str | os.PathLike[str]]) -> LoadReport:
    report = LoadReport()
    for path in paths:
        p = Path(path)
        try:
            text = p.read_bytes()
        except OSError as e:
            report.skipped.append(Skipped(str(p), f"cannot read ({e.strerror or e})"))
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


def _get(session: requests.Session, url: str, timeout: float) -> requests.Response:
    try:
        # No redirects: fortio report sends every /fortio... path to its front page, which
        # must read as "not here" rather than as an (empty) listing.
        resp = session.get(url, timeout=timeout, allow_redirects=False, stream=True)
        with resp:
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > MAX_FILE_BYTES:
                raise ResultsError(f"{url}: {int(length)} bytes, more than a result can be")
            _ = resp.content  # read it all now, inside the timeout handling
        return resp
    except requests.Timeout:
        raise ResultsError(f"{url}: no answer within {timeout:g} s") from None
    except requests.ConnectionError as e:
        raise ResultsError(f"{url}: cannot connect ({_short(e)})") from None
    except requests.RequestException as e:
        raise ResultsError(f"{url}: {_short(e)}") from None


def _short(e: BaseException) -> str:
    text = str(e)
    m = re.search(r"""\[Errno -?\d+\] ([^'")]+)""", text) or re.search("(Read timed out)", text)
    return m.group(1).strip() if m else text.splitlines()[0][:200]


def _list_data(
    session: requests.Session, data_url: str, timeout: float
) -> tuple[list[tuple[str, int | None, str | None]], str]:
    """Files listed under ``data_url``: index.tsv, else the HTML listing, else the browse page."""
    why: list[str] = []
    resp = _get(session, data_url + "index.tsv", timeout)
    if resp.status_code == 200:
        try:
            return parse_index_tsv(resp.text), "index.tsv"
        except ValueError as e:
            why.append(f"index.tsv: {e}")
    else:
        why.append(f"index.tsv: HTTP {resp.status_code}")
    resp = _get(session, data_url, timeout)
    if resp.status_code == 200:
        names = parse_html_listing(resp.text)
        # fortio's listing is exactly this markup, also when the directory is empty.
        if names or resp.text.lstrip().lower().startswith("<html><body><ul>"):
            return [(n, None, None) for n in names], "HTML listing"
        why.append("listing: no result links")
    else:
        why.append(f"listing: HTTP {resp.status_code}")
    browse_url = data_url[: -len("data/")] + "browse"
    resp = _get(session, browse_url, timeout)
    if resp.status_code == 200:
        names = parse_html_listing(resp.text, browse=True)
        if names or 'id="files"' in resp.text:
            return [(n, None, None) for n in names], "browse page"
    why.append(f"browse: HTTP {resp.status_code}" if resp.status_code != 200 else "browse: none")
    raise ResultsError(f"{data_url}: no fortio result listing ({'; '.join(why)})")


def _fetch_one(
    session: requests.Session, url: str, size: int | None, md5: str | None, timeout: float
) -> bytes:
    resp = _get(session, url, timeout)
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
) -> LoadReport:
    """Every result a fortio server or report serves, fetched concurrently.

    ``url`` may be the base URL (``http://host:8080``), the UI path, ``.../data/``, the browse
    page, or one ``.json`` file. Raises ResultsError when nothing can be listed at all; files
    that fail individually are reported as skipped.
    """
    check_url(url)
    own = session is None
    sess = session or requests.Session()
    if own:
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=workers)
        sess.mount("http://", adapter)
        sess.mount("https://", adapter)
    try:
        report = LoadReport()
        candidates, single = _data_urls(url)
        if single is not None:
            body = _fetch_one(sess, single, None, None, timeout)
            _classify(single.rsplit("/", 1)[-1], body, single, report)
            attach_run_metadata(report)
            return report
        errors: list[str] = []
        listing: list[tuple[str, int | None, str | None]] | None = None
        data_url = candidates[0]
        for data_url in candidates:
            try:
                listing, _kind = _list_data(sess, data_url, timeout)
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
                return name, _fetch_one(sess, file_url, size, md5, timeout)
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


def load_source(source: str, *, timeout: float = DEFAULT_TIMEOUT) -> LoadReport:
    """A URL, a results directory or one JSON file; raises ResultsError when it is none."""
    if is_url(source):
        return load_url(source, timeout=timeout)
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


def load_sources(sources: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> LoadReport:
    """All sources; a source that cannot be read at all is reported as skipped."""
    report = LoadReport()
    for source in sources:
        try:
            report.extend(load_source(source, timeout=timeout))
        except ResultsError as e:
            report.skipped.append(Skipped(source, str(e).removeprefix(f"{source}: ")))
    attach_run_metadata(report)
    return report


# -- writing -----------------------------------------------------------------------------------


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write via a temp file in the same directory, then rename; never clobber unless asked."""
    target = Path(path)
    if not overwrite and target.exists():
        raise ResultsError(f"{target}: already exists", hint="use --overwrite to replace it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".meshperf-", suffix=".tmp", dir=target.parent or ".")
    except OSError as e:
        raise ResultsError(f"{target}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise ResultsError(f"{target}: cannot write ({e.strerror or e})") from None
        else:
            try:
                # link() fails if the target appeared meanwhile: no race between check and rename.
                os.link(tmp, target)
            except FileExistsError:
                raise ResultsError(
                    f"{target}: already exists", hint="use --overwrite to replace it"
                ) from None
            except OSError:
                os.replace(tmp, target)  # filesystems without hard links
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def write_result(
    path: str | os.PathLike[str], result: Mapping[str, Any], *, overwrite: bool = False
) -> Path:
    """Save a result dict the way fortio's CLI does (2-space Go JSON plus newline), atomically."""
    return atomic_write_text(path, fortiojson.dumps(dict(result)), overwrite=overwrite)
