"""Turn fortio results into rows (one per test, or one per test key across repeats) and write
them as JSON and CSV.

Units in rows: latencies (``min``, ``avg``, ``max``, ``pNN``, ``sendlag_p99``) in microseconds,
computed from the histogram ``Data`` with fortio's percentile rule so that results written
without ``Percentiles`` get them too; ``ActualDuration`` in seconds; ``errorPercent`` in percent;
CPU in millicores (``cpu_mili_*``), memory in MB (``mem_MB_*`` RSS / working set, ``mem_uss_MB_*``
unique set size of local proxies). ``RequestedQPS`` is 0 for fortio's ``"max"``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import math
import re
import statistics
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from meshperf import goduration, trust
from meshperf.cli import check_new_files
from meshperf.errors import ConfigError, PrometheusError, ResultsError
from meshperf.results import FortioResult, LoadReport, Skipped, atomic_write_text

try:  # prometheus-api-client: only --prometheus needs it
    from meshperf.prom import PrometheusSource, throttling

    _PROMETHEUS: tuple[type, ...] = (PrometheusSource,)
except ImportError:  # pragma: no cover - depends on the installed packages
    _PROMETHEUS = ()

# Column name -> percentile for the latency columns every row has.
PERCENTILE_COLUMNS: dict[str, float] = {"p50": 50, "p75": 75, "p90": 90, "p99": 99, "p999": 99.9}
# Every key of a row, in CSV order when all are wanted (resource columns follow).
ROW_COLUMNS: tuple[str, ...] = (
    "StartTime", "ActualDuration", "Labels", "RunType", "Version",
    "mode", "mesh", "platform", "NumThreads", "conn", "RequestedQPS", "ActualQPS", "size",
    "protocol", "extra_labels", "telemetry", "repeat", "run_id", "arrival", "count",
    "errorPercent", "min", "avg", "max", *PERCENTILE_COLUMNS, "sendlag_p99", "warnings", "source",
    "resources_from",
)  # fmt: skip
DEFAULT_COLUMNS: tuple[str, ...] = (
    "StartTime", "ActualDuration", "Labels", "mode", "mesh", "platform", "NumThreads", "conn",
    "RequestedQPS", "ActualQPS", "size", "protocol", "extra_labels", "telemetry",
    "p50", "p90", "p99", "p999", "errorPercent", "warnings",
)  # fmt: skip
SPREAD_OF: tuple[str, ...] = ("p50", "p99")
AGGREGATE_COLUMNS: tuple[str, ...] = (
    "repeats",
    *(f"{c}_{s}" for c in SPREAD_OF for s in ("min", "max", "spread")),
)
# Identity of a test across repeats: everything that says what was measured, including the
# fortio that measured it; Labels joins when nothing else says what the test was.
KEY_COLUMNS: tuple[str, ...] = (
    "platform", "mesh", "mode", "conn", "RequestedQPS", "size", "protocol", "extra_labels",
    "telemetry", "RunType", "Version",
)  # fmt: skip
# Not summarised by a median: identity, text, or meaningless across repeats.
_NOT_AGGREGATED = frozenset({*KEY_COLUMNS, "repeat", "NumThreads"})

RESOURCE_METRICS: tuple[str, ...] = ("cpu_mili", "mem_MB", "mem_uss_MB")
RESOURCE_STATS: tuple[str, ...] = ("min", "avg", "max")
RESOURCE_COLUMN = re.compile(
    r"^(?P<metric>"
    + "|".join(RESOURCE_METRICS)
    + r")_(?P<stat>"
    + "|".join(RESOURCE_STATS)
    + r")_(?P<key>[A-Za-z0-9][A-Za-z0-9_]*)$"
)
PERCENTILE_COLUMN = re.compile(r"^p(?P<digits>[0-9]{1,6})$")


def percentile_of_column(name: str) -> float | None:
    """``p50`` -> 50, ``p999`` -> 99.9, ``p9999`` -> 99.99, ``p100`` -> 100; None if not one."""
    m = PERCENTILE_COLUMN.match(name)
    if m is None:
        return None
    d = m["digits"]
    if d == "100":
        return 100.0
    p = float(d) if len(d) <= 2 else float(d[:2] + "." + d[2:])
    return p if 0 < p <= 100 else None


def micros(seconds: float) -> float:
    """Seconds to microseconds, kept to the nanosecond (fortio's own resolution)."""
    return round(seconds * 1e6, 3)


def _requested_qps_cell(r: FortioResult) -> float | int:
    q = r.requested_qps
    if q is None:
        return 0  # fortio's "max"
    return int(q) if q.is_integer() else q


def _arrival(r: FortioResult) -> str:
    value = r.meshperf.get("arrival")
    if value:
        return str(value)
    if r.raw.get("Uniform"):
        return "uniform"
    if r.raw.get("Jitter"):
        return "jitter"
    return "simultaneous" if "Jitter" in r.raw else ""


def resource_cells(resources: Mapping[str, Any]) -> dict[str, float]:
    """``{"<key>": {"cpu_mili": {"min": ..}}}`` -> ``{"cpu_mili_min_<key>": ..}``.

    Raw ``samples`` are dropped: rows hold the summary only.
    """
    out: dict[str, float] = {}
    for key, metrics in resources.items():
        if not isinstance(metrics, Mapping):
            continue
        for metric in RESOURCE_METRICS:
            stats = metrics.get(metric)
            if not isinstance(stats, Mapping):
                continue
            for stat in RESOURCE_STATS:
                v = stats.get(stat)
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    out[f"{metric}_{stat}_{key}"] = v
    return out


def result_row(
    r: FortioResult, extra_percentiles: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """One test's row. ``r`` must have latency (``r.problem is None``)."""
    hist = r.duration_histogram
    row: dict[str, Any] = {
        "StartTime": r.start_time_text,
        "ActualDuration": r.actual_duration,
        "Labels": r.labels,
        "RunType": r.run_type,
        "Version": r.version,
        "mode": r.mode,
        "mesh": r.mesh,
        "platform": r.platform,
        "NumThreads": r.num_threads,
        "conn": r.conn,
        "RequestedQPS": _requested_qps_cell(r),
        "ActualQPS": r.actual_qps,
        "size": r.payload_size,
        "protocol": r.protocol,
        "extra_labels": r.extra_labels,
        "telemetry": r.telemetry,
        "repeat": r.repeat,
        "run_id": r.run_id,
        "arrival": _arrival(r),
        "count": r.count,
        "errorPercent": r.error_percent,
        "min": micros(hist["Min"]),
        "avg": micros(hist.get("Avg", hist.get("Sum", 0) / r.count)),
        "max": micros(hist["Max"]),
    }
    for col, p in {**PERCENTILE_COLUMNS, **(extra_percentiles or {})}.items():
        row[col] = micros(r.percentile(p))
    lag = r.sendlag_histogram
    row["sendlag_p99"] = micros(r.percentile(99, lag)) if lag and lag.get("Count") else None
    row["warnings"] = trust.text(trust.assess(r))  # why a number may not be believed
    row["source"] = r.source
    own = resource_cells(r.resources)
    row.update(own)
    row["resources_from"] = "samples" if own else ""  # collect() says "prometheus" when it is
    return row


# A date-time prefix: 2018, 2018-04, 2018-04-03, 2018-04-03T23, ...T23:32, ...T23:32:58,
# each optionally followed by Z or a +HH:MM offset.
_TIME_PREFIX = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})(?:[T ](?P<h>\d{2})"
    r"(?::(?P<mi>\d{2})(?::(?P<s>\d{2}))?)?)?)?)?(?P<zone>Z|[+-]\d{2}:\d{2})?$"
)


def time_period(text: str) -> tuple[dt.datetime, dt.datetime] | None:
    """The period a date-time prefix names, [start, end), in its zone or else UTC; None if it
    is no date-time prefix. ``2018-04-03T23`` is the hour 23:00-24:00 UTC of that day."""
    m = _TIME_PREFIX.match(text.strip())
    if m is None:
        return None
    zone = m["zone"]
    parts = [m[k] for k in ("y", "mo", "d", "h", "mi", "s")]
    given = len([p for p in parts if p is not None])
    y, mo, d, h, mi, sec = (
        int(p) if p is not None else (1 if i in (1, 2) else 0) for i, p in enumerate(parts)
    )
    try:
        tz = dt.UTC if zone in (None, "Z") else dt.datetime.strptime(zone, "%z").tzinfo
        start = dt.datetime(y, mo, d, h, mi, sec, tzinfo=tz)
    except ValueError:
        return None
    if given == 1:
        end = start.replace(year=start.year + 1)
    elif given == 2:
        end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    else:
        unit = {3: dt.timedelta(days=1), 4: dt.timedelta(hours=1), 5: dt.timedelta(minutes=1)}
        end = start + unit.get(given, dt.timedelta(seconds=1))
    return start, end


def parse_instant(text: str) -> dt.datetime:
    """``--since``/``--until``: an RFC 3339 date-time or a prefix of one (its start); UTC unless
    it names a zone. Raises ValueError naming the accepted forms."""
    period = time_period(text)
    if period is None:
        raise ValueError(
            f"{text!r} is not a time: use e.g. 2018-04-03, 2018-04-03T23:30 or"
            " 2018-04-03T16:32:58-07:00 (UTC unless a zone is given)"
        )
    return period[0]


def matches(
    r: FortioResult,
    selector: str | None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> bool:
    """The 2019 scripts' ``--selector`` (a Labels substring, or ``^`` and a StartTime prefix),
    and the ``--since`` (inclusive) / ``--until`` (exclusive) instants.

    ``^<prefix>``: the StartTime as written starts with it (the 2019 rule), or, when the prefix
    is a date-time, the test's instant lies in the period it names, compared with time zones:
    ``^2018-04-03T23`` selects ``2018-04-03T16:32:58-07:00``, which is 23:32 UTC.
    """
    if since is not None and r.start_time < since:
        return False
    if until is not None and r.start_time >= until:
        return False
    if not selector:
        return True
    if selector.startswith("^"):
        prefix = selector[1:]
        if r.start_time_text.startswith(prefix):
            return True
        period = time_period(prefix)
        return period is not None and period[0] <= r.start_time < period[1]
    return selector in r.labels


class ResourceSource(Protocol):
    """What ``meshperf.prom.PrometheusSource`` offers (kept structural to test without it)."""

    def window(
        self, start: dt.datetime, duration_s: float
    ) -> tuple[dt.datetime, dt.datetime] | str: ...

    def resources(
        self, start: dt.datetime, end: dt.datetime, ztunnels: Collection[str] | None = None
    ) -> dict[str, dict[str, dict[str, float]]]: ...


@dataclasses.dataclass
class Collected:
    """Rows plus everything that was skipped or is only partly there, with reasons."""

    rows: list[dict[str, Any]]
    read: int  # results loaded (usable or not)
    skipped: list[Skipped]  # no row: unreadable, failed run, no calls
    partial: list[Skipped]  # a row, but without the CPU/memory that was asked for
    selected_out: int = 0
    duplicates: list[Skipped] = dataclasses.field(default_factory=list)  # same test twice
    # A row whose CPU/memory are the result's own samples because Prometheus gave none.
    own_samples: list[Skipped] = dataclasses.field(default_factory=list)


# After this many Prometheus failures in a row the rest are not tried: the server is gone,
# and each further try would only wait for its timeout.
MAX_PROM_FAILURES = 3
# A run that lasted less than this share of its -t is reported as cut short (fortio's own
# runs end a few ms after -t; its warm-up is not counted).
SHORT_RUN_FRACTION = 0.9


def collect(
    report: LoadReport,
    *,
    selector: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    prometheus: ResourceSource | None = None,
    extra_percentiles: Mapping[str, float] | None = None,
    notify: Callable[[str], None] = lambda _msg: None,
) -> Collected:
    """Rows for every usable result, sorted by StartTime; CPU/memory from ``prometheus`` if given.

    Without ``prometheus``, resources come from the samples local results carry.
    """
    skipped = list(report.skipped)
    partial: list[Skipped] = []
    own_samples: list[Skipped] = []
    chosen = [r for r in report.results if matches(r, selector, since, until)]
    selected_out = len(report.results) - len(chosen)
    chosen.sort(key=lambda r: r.start_time)  # stable: ties keep the order sources were given
    rows: list[dict[str, Any]] = []
    prom_failures = 0
    seen: dict[tuple[Any, ...], str] = {}
    duplicates: list[Skipped] = []
    for r in chosen:
        # The same test read twice (from the fortio server and from the copy the runner
        # kept) would count double in medians and graphs.
        ident = result_identity(r)
        if ident in seen:
            duplicates.append(Skipped(r.source, f"same test as {seen[ident]}"))
            continue
        seen[ident] = r.source
        if r.problem is not None:
            skipped.append(Skipped(r.source, r.problem))
            continue
        row = result_row(r, extra_percentiles)
        name = r.labels or r.source
        short = cut_short(r)
        if short is not None:
            notify(f"{name}: {short}; kept")
        if prometheus is not None:
            reason: str | None = None
            if prom_failures >= MAX_PROM_FAILURES:
                reason = f"Prometheus not queried after {MAX_PROM_FAILURES} failures"
            elif not r.actual_duration > 0:
                reason = "no ActualDuration recorded"
            else:
                try:
                    window = prometheus.window(r.start_time, r.actual_duration)
                    if isinstance(window, str):
                        reason = window
                        row["warnings"] = trust.text(trust.assess(r, window_problem=window))
                    else:
                        # Only the ztunnels of the test's two nodes (kubernetes platform).
                        ztunnels = r.meshperf.get("ztunnel_pods")
                        cells = resource_cells(prometheus.resources(*window, ztunnels=ztunnels))
                        prom_failures = 0
                        if cells:
                            row.update(cells)
                        else:  # never silently missing (the 2019 scripts' complaint)
                            reason = "Prometheus has no proxy CPU/memory series in the window"
                        if isinstance(prometheus, _PROMETHEUS):
                            _throttling_warnings(r, row, prometheus, window, name, notify)
                except PrometheusError as e:
                    prom_failures += 1
                    reason = f"Prometheus: {e}"
            if reason is None:
                row["resources_from"] = "prometheus"
            elif row["resources_from"]:
                # Say what the row really holds: the samples the result carries.
                notify(
                    f"{name}: CPU/memory from the result's own samples, not Prometheus ({reason})"
                )
                own_samples.append(Skipped(r.source, reason))
            else:
                notify(f"{name}: kept with latency only ({reason})")
                partial.append(Skipped(r.source, reason))
        rows.append(row)
    return Collected(
        rows, len(report.results), skipped, partial, selected_out, duplicates, own_samples
    )


def _throttling_warnings(
    r: FortioResult,
    row: dict[str, Any],
    prometheus: Any,
    window: tuple[dt.datetime, dt.datetime],
    name: str,
    notify: Callable[[str], None],
) -> None:
    """meshperf.trust's ``throttled``: a proxy CPU-throttled in the window (kubernetes)."""
    try:
        throttled = throttling(prometheus, *window)
    except PrometheusError as e:
        notify(f"{name}: CPU throttling not read ({e})")
        return
    row["warnings"] = trust.text(trust.assess(r, throttled=throttled))


def cut_short(r: FortioResult) -> str | None:
    """Why a result looks stopped before the end it was asked for, else None.

    A run ended early (Ctrl-C, a lost exec, a killed pod) is still a valid fortio result and
    fortio saved it like any other; it is kept, but it is not the test that was planned.
    """
    req = r.raw.get("RequestedDuration")
    if not isinstance(req, str) or not req:
        return None
    if "interrupted" in req:  # -n runs: "exactly 1000 calls, interrupted after 12"
        return f"interrupted ({req})"
    try:
        wanted = goduration.parse_duration(req) / 1e9
    except ValueError:  # "exactly N calls", "until stop"
        return None
    got = r.actual_duration
    if wanted > 0 and 0 < got < SHORT_RUN_FRACTION * wanted:
        return f"ran {got:.1f} s of the requested {req} (stopped early?)"
    return None


def result_identity(r: FortioResult) -> tuple[Any, ...]:
    """What makes two result files the same test: when it ran, its labels, what it measured."""
    h = r.duration_histogram
    return (r.start_time, r.labels, r.count, h.get("Sum"), h.get("Max"))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    key = tuple(row.get(c) for c in KEY_COLUMNS)
    # A result with no known mode says nothing about what it measured except its Labels.
    return key if row.get("mode") else (*key, row.get("Labels"), row.get("NumThreads"))


def _median(values: Sequence[float]) -> float:
    """The median, without the binary noise that averaging two decimals leaves.

    The median of 180.645 and 180.651 is 180.648, not 180.64800000000002; 15 significant
    digits is what a double holds exactly for a decimal.
    """
    med = statistics.median(values)
    return float(f"{med:.15g}") if isinstance(med, float) else med


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per test key across repeats: medians, plus min/max/spread of p50 and p99."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row_key(row), []).append(row)
    out: list[dict[str, Any]] = []
    for members in groups.values():
        first = members[0]  # rows arrive sorted by StartTime: the earliest describes the group
        agg: dict[str, Any] = dict(first)
        columns = dict.fromkeys(c for m in members for c in m)
        for col in columns:
            if col in _NOT_AGGREGATED:
                continue
            values = [m[col] for m in members if _is_number(m.get(col))]
            if values:
                agg[col] = _median(values)
            elif col not in first:
                agg[col] = None
        agg["repeat"] = None
        # Every repeat's causes: one bad repeat makes the median suspect too.
        agg["warnings"] = "; ".join(
            dict.fromkeys(w for m in members for w in str(m.get("warnings") or "").split("; ") if w)
        )
        agg["source"] = first.get("source") if len(members) == 1 else f"{len(members)} results"
        agg["repeats"] = len(members)
        for col in SPREAD_OF:
            values = [m[col] for m in members if _is_number(m.get(col))]
            lo, hi = (min(values), max(values)) if values else (None, None)
            med = agg.get(col)
            agg[f"{col}_min"], agg[f"{col}_max"] = lo, hi
            spread = None
            if lo is not None and hi is not None and _is_number(med) and med:
                spread = (hi - lo) / med
            agg[f"{col}_spread"] = spread
        out.append(agg)
    return out


# -- columns -----------------------------------------------------------------------------------


def _resource_order(col: str) -> tuple[str, int, int]:
    m = RESOURCE_COLUMN.match(col)
    assert m is not None
    return (m["key"], RESOURCE_METRICS.index(m["metric"]), RESOURCE_STATS.index(m["stat"]))


def resource_columns_in(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    present = {c for row in rows for c in row if RESOURCE_COLUMN.match(c)}
    return sorted(present, key=_resource_order)


def default_columns(rows: Sequence[Mapping[str, Any]], aggregated: bool = False) -> list[str]:
    cols = list(DEFAULT_COLUMNS)
    if any(row.get("sendlag_p99") is not None for row in rows):
        cols.append("sendlag_p99")
    cols += resource_columns_in(rows)
    if aggregated:
        cols += AGGREGATE_COLUMNS
    return cols


def available_columns_text(aggregated: bool) -> str:
    names = [*ROW_COLUMNS, *(AGGREGATE_COLUMNS if aggregated else ())]
    patterns = [
        "p<digits> (p95, p9999)",
        "{" + ",".join(RESOURCE_METRICS) + "}_{min,avg,max}_<workload>",
    ]
    return ", ".join(names + patterns)


def parse_columns(spec: str, *, aggregated: bool = False) -> list[str]:
    """A ``--csv`` list: known names, ``p<digits>``, and resource-shaped names; ConfigError else.

    Resource columns are accepted by shape, so the 2019 scripts' list (with Mixer columns) works: a
    column with no data is written empty.
    """
    cols: list[str] = []
    for raw in spec.split(","):
        name = raw.strip()
        if not name or name in cols:
            continue
        if name in AGGREGATE_COLUMNS and not aggregated:
            raise ConfigError(f"column {name!r} needs --aggregate")
        known = (
            name in ROW_COLUMNS
            or name in AGGREGATE_COLUMNS
            or percentile_of_column(name) is not None
            or RESOURCE_COLUMN.match(name) is not None
        )
        if not known:
            raise ConfigError(
                f"unknown column {name!r}; available: {available_columns_text(aggregated)}"
            )
        cols.append(name)
    if not cols:
        raise ConfigError("--csv names no columns")
    return cols


def extra_percentiles(columns: Iterable[str]) -> dict[str, float]:
    """Percentile columns asked for beyond the standard ones (``p95`` -> 95.0)."""
    out: dict[str, float] = {}
    for col in columns:
        p = percentile_of_column(col)
        if p is not None and col not in PERCENTILE_COLUMNS:
            out[col] = p
    return out


# -- output ------------------------------------------------------------------------------------


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def json_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Every row in full, plus any asked-for column it lacks (as null): the CSV's superset."""
    # One row per line: readable, diffable, and the C encoder does the work (indent= would
    # switch to the pure-Python one, the slowest step for thousands of rows).
    lines = [
        json.dumps({**row, **{c: None for c in columns if c not in row}}, allow_nan=False)
        for row in rows
    ]
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def output_paths(prefix: str | Path) -> tuple[Path, Path]:
    p = str(prefix)
    for ext in (".json", ".csv"):
        if p.endswith(ext):
            p = p[: -len(ext)]
    return Path(p + ".json"), Path(p + ".csv")


def check_outputs(prefix: str | Path, overwrite: bool) -> tuple[Path, Path]:
    """Raise ConfigError before any work if an output exists (and overwriting was not asked)."""
    paths = output_paths(prefix)
    check_new_files(paths, overwrite)
    return paths


def write_outputs(
    prefix: str | Path,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    json_path, csv_path = output_paths(prefix)
    atomic_write_text(json_path, json_text(rows, columns), overwrite=overwrite)
    try:
        atomic_write_text(csv_path, csv_text(rows, columns), overwrite=overwrite)
    except ResultsError as e:
        # The rows are not lost: say where they are.
        raise ResultsError(f"{e}; the rows are in {json_path}", hint=e.hint) from None
    return json_path, csv_path
