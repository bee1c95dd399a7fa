"""A fortio result: the validated model, what it says, and the rules for reading it.

Every fortio version (0.5 to 1.75, see docs/fortio-format.md) loads through one code path:
keys may be missing, ``Percentiles`` may be null or omitted, ``ID`` may be an integer (1.21-1.34)
or a string, ``RequestedQPS`` may be ``"max"``, gRPC ``RetCodes`` may be numeric (< 1.2.0) and
``StartTime`` may carry any UTC offset and nanoseconds. Results that fortio wrote for runs that
never started (``"error": true``) and empty results (``Count`` 0) load too; deciding what to do
with them is the caller's business (``FortioResult.problem`` says why one is unusable).

Where results come from (files, directories, URLs) is ``meshperf.sources``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, TypedDict

from meshperf.errors import ResultsError
from meshperf.fortiojson import parse_start_time
from meshperf.histogram import calc_percentile
from meshperf.labels import parse as label_facts
from meshperf.platform import MODES, RESULT_KEY

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


def _json_kind(doc: Any) -> str:
    if isinstance(doc, list):
        return f"array of {len(doc)}"
    return {str: "string", bool: "boolean", type(None): "null"}.get(type(doc), "number")


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


# Nighthawk's fortio output (``nighthawk_output_transform --output-format fortio``, its
# api/client/transform/fortio.proto) is proto3 JSON: uint64 fields are written as strings
# ("Count": "17988"), and fields at their zero value are left out. These are the fields
# where fortio writes integers; only there is an integer string read as the integer.
_HISTOGRAMS = ("DurationHistogram", "ErrorsDurationHistogram", "SendLagHistogram", "Sizes",
               "HeaderSizes")  # fmt: skip
_TOP_INTEGERS = ("NumThreads", "BytesSent", "BytesReceived", "SocketCount", "RunID")
_INT_TEXT = re.compile(r"^-?[0-9]{1,20}$")


def _int_text(value: Any) -> Any:
    return int(value) if isinstance(value, str) and _INT_TEXT.match(value) else value


def _read_histogram(hist: Any) -> Any:
    if not isinstance(hist, Mapping):
        return hist
    data = hist.get("Data")
    first = data[0] if isinstance(data, list) and data else None
    if (
        not isinstance(hist.get("Count"), str)
        and "Min" in hist
        and "Max" in hist
        and not (isinstance(first, Mapping) and isinstance(first.get("Count"), str))
    ):
        return hist  # fortio's own: nothing to read (checked cheaply, it is every file)
    out = dict(hist)
    out["Count"] = _int_text(out.get("Count", 0 if "Data" in out else None))
    data = out.get("Data")
    if isinstance(data, list):
        out["Data"] = [
            {**b, "Count": _int_text(b["Count"])} if isinstance(b, Mapping) and "Count" in b else b
            for b in data
        ]
        # fortio's export makes the first bucket start at Min and the last end at Max; proto3
        # leaves out Min and Max at 0 and older Nighthawk wrote neither: take them from Data.
        if data and isinstance(data[0], Mapping) and isinstance(data[-1], Mapping):
            if out.get("Min") is None:
                out["Min"] = data[0].get("Start")
            if out.get("Max") is None:
                out["Max"] = data[-1].get("End")
    return out


def read_integers(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """``raw`` with proto3 JSON's integer strings read as integers where fortio has integers.

    Returns ``raw`` itself when there is nothing to change (every fortio-written file).
    """
    changed: dict[str, Any] = {}
    for key in _HISTOGRAMS:
        if key in raw and raw[key] is not None:
            hist = _read_histogram(raw[key])
            if hist is not raw[key]:
                changed[key] = hist
    for key in _TOP_INTEGERS:
        if isinstance(raw.get(key), str):
            changed[key] = _int_text(raw[key])
    codes = raw.get("RetCodes")
    if isinstance(codes, Mapping) and any(isinstance(v, str) for v in codes.values()):
        changed["RetCodes"] = {k: _int_text(v) for k, v in codes.items()}
    return {**raw, **changed} if changed else raw


class NotAResult(ResultsError):
    """The file is not a fortio result at all (another program's JSON, NDJSON, ...): not a
    test that failed to load, so it does not count as one."""


# -- our own blocks: their shape and the versions this code reads ----------------------------
#
# As pyperf does with its files: each block says its format version, every version this code
# can read is listed with what it changed, and reading any other version is an error naming
# it (a newer meshperf wrote it) instead of a silent misreading. A block without "format"
# predates the field and is read as version 1, which it is.
#
# The result block (result["meshperf"], written by platform.TestSpec.result_block):
#   1: first version (mode, mesh, platform, conn, qps, duration, size, extra_labels, repeat,
#      run_id, arrival, protocol, h2, load options, resources, perf).
RESULT_FORMATS: dict[int, str] = {1: "first version"}
# The run file (run-<id>.json, written by run.run_matrix):
#   1: first version (status, platform, mesh, modes, machine, plan, tests, ...).
RUN_FORMATS: dict[int, str] = {1: "first version"}


class ResourceStats(TypedDict, total=False):
    min: float
    avg: float
    max: float


class ResultBlock(TypedDict, total=False):
    """``result["meshperf"]``: what the runner knew about the test (platform.py documents it)."""

    format: int
    run_id: str
    platform: str
    mesh: str
    mode: str
    conn: int
    qps: float
    duration: float
    size: int
    extra_labels: str
    repeat: int
    target: str
    arrival: str
    protocol: str
    h2: bool
    headers: list[str]
    keepalive: bool
    connection_reuse: list[int]
    cacert: str
    resources: dict[str, dict[str, Any]]
    perf: dict[str, str]
    ztunnel_pods: list[str]


class RunTest(TypedDict, total=False):
    """One test of a run file's ``plan`` and ``tests`` lists (run.Outcome.record)."""

    index: int
    label: str
    mode: str
    conn: int
    qps: float
    duration: float
    status: str
    reason: str
    file: str
    wall_seconds: float


class RunFile(TypedDict, total=False):
    """``run-<id>.json``: the run's metadata, written by the runner as the run goes."""

    format: int
    run_id: str
    status: str
    started: str
    finished: str
    platform: str
    mesh: str
    modes: list[str]
    arrival: str
    command_line: list[str]
    options: dict[str, Any]
    machine: dict[str, Any]
    platform_metadata: dict[str, Any]
    estimated_seconds: float
    plan: list[RunTest]
    tests: list[RunTest]
    wall_seconds: float


def check_format(doc: Mapping[str, Any], what: str, accepted: Mapping[int, str]) -> int:
    """The format version of one of our blocks; ValueError for one this code cannot read."""
    version = doc.get("format", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{what} format {version!r} is not a version number")
    if version not in accepted:
        known = ", ".join(str(v) for v in sorted(accepted))
        newer = " (written by a newer meshperf?)" if version > max(accepted) else ""
        raise ValueError(
            f"{what} format version {version} is not one this meshperf reads ({known}){newer}"
        )
    return version


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
    """One fortio result, validated on construction.

    ``raw`` is the file's JSON, untouched but for proto3 JSON's integer strings, which are read
    as the integers fortio writes there (``read_integers``, for Nighthawk's output).
    """

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
            raise NotAResult(f"{where}: not a fortio result: JSON {_json_kind(raw)}")
        raw = read_integers(raw)
        object.__setattr__(self, "raw", raw)
        if "DurationHistogram" not in raw:
            raise NotAResult(f"{where}: not a fortio result: no DurationHistogram")
        if "StartTime" not in raw:
            raise NotAResult(f"{where}: not a fortio result: no StartTime")
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
            if block:
                check_format(block, RESULT_KEY, RESULT_FORMATS)
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
        """Measured run time in seconds (fortio stores nanoseconds).

        Nighthawk's published fortio-format samples (envoyproxy/nighthawk
        samples/fortio_data/small.json: ``"ActualDuration": 5`` for a 5 s run) carry whole
        seconds. No run with calls lasts under a microsecond, so a value that small is read
        as seconds."""
        value = _num(self.raw.get("ActualDuration"), "ActualDuration", 0.0)
        if 0 < value < 1000 and self.count > 0:
            return value
        return value / 1e9

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
        """Our block (``platform.RESULT_KEY``, shaped as ``ResultBlock``), or {} for results
        fortio wrote on its own. Typed loosely: readers also look up keys of newer versions."""
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

    @property
    def telemetry(self) -> str:
        """The telemetry mode: our block's, else the one an istio/tools label names, else ""."""
        value = self.meshperf.get("telemetry")
        if value:
            return str(value)
        return self.label_shape.telemetry if self.label_shape else ""

    @property
    def protocol(self) -> str:
        """``http``, ``http2``, ``grpc``, ``tcp`` or ``udp``: our block, else fortio's RunType."""
        proto = self.meshperf.get("protocol")
        if proto:
            h2 = bool(self.meshperf.get("h2")) and proto == "http"
            return "http2" if h2 else str(proto)
        rt = self.run_type.upper()
        for prefix, name in (("GRPC", "grpc"), ("TCP", "tcp"), ("UDP", "udp"), ("HTTP", "http")):
            if rt.startswith(prefix):
                return name
        return rt.lower()

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
