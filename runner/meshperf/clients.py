"""Many load clients as one test: ``runner.py --clients N``.

One fortio pod caps the rate a cluster test can offer (fortio#99 and fortio#134 ask for a
distributed mode). With ``--clients N`` the platform runs N load generators together, each at
``QPS/N`` over ``CONN/N`` connections (the remainders go to the first ones, so the totals are
exactly the test's), against the same target: N client pods on kubernetes, N generator
processes locally. Their fortio results are merged here into one fortio-format result:

* histograms exactly: fortio's exported ``Data`` keeps each non-empty bucket's count and its
  edges (``fortio-format.md`` section 2.3), so the buckets, Count, Min, Max and Sum of the
  merged histogram are those of one histogram that had recorded every call, and its
  percentiles, computed by fortio's rule, equal that histogram's (``meshperf.histogram``);
  the standard deviation is recombined from each part's (exact up to float rounding);
* counts added: RetCodes, NumThreads, SocketCount, Sockets (concatenated), IPCountMap;
* time: each client's window is ``[StartTime, StartTime + ActualDuration]`` on its own clock.
  The merged ``StartTime`` and ``ActualDuration`` are the windows' overlap, when every client
  was loading; ``ActualQPS`` is the sum of the clients' own rates, ``RequestedQPS`` the sum of
  theirs. A client that started more than ``LATE_START_S`` after the first is a warning (clock
  skew between nodes, or a slow exec), kept with the result as ``meshperf.clients_warning``.

Each client's own result is kept beside the merged one (``<output dir>/clients/``), named in
``meshperf.clients``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from meshperf import fortiojson
from meshperf.errors import ResultsError
from meshperf.fortiojson import parse_start_time
from meshperf.histogram import BUCKETS, NUM_VALUES, Histogram, bucket_index

CLIENTS_DIR = "clients"  # subdirectory of the output dir: never read as the test's results
LATE_START_S = 1.0  # a client starting later than this after the first is worth a warning
SIZES_DIVIDER = 100.0  # fortio's Sizes histogram (fortio-format.md 2.1)
HEADER_SIZES_DIVIDER = 5.0  # and HeaderSizes
MAX_CLIENTS = 64

_BOUNDARY = {float(b): i for i, b in enumerate(BUCKETS)}
_FRACTION = re.compile(r"T\d\d:\d\d:\d\d\.(\d+)")


def clients_count(text: str) -> int:
    """``--clients N``: 1 .. MAX_CLIENTS (argparse type)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= n <= MAX_CLIENTS:
        raise argparse.ArgumentTypeError(f"--clients {n}: must be 1 to {MAX_CLIENTS}")
    return n


# ---- splitting a test -----------------------------------------------------------------------


def split(total: int, n: int) -> list[int]:
    """``total`` in ``n`` whole parts differing by at most one, larger first."""
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def split_test(conn: int, qps: float, n: int) -> list[tuple[int, float]]:
    """Each client's (connections, qps): connections split in whole numbers, the rate in
    proportion to them, so every connection keeps the same pace as in a one-client test."""
    if n < 1:
        raise ValueError(f"clients must be >= 1, got {n}")
    if conn < n:
        raise ValueError(f"{conn} connections cannot be shared by {n} clients (one each at least)")
    conns = split(conn, n)
    return [(c, qps * c / conn) for c in conns]


# ---- merging --------------------------------------------------------------------------------


def histogram_from_export(
    hist: Mapping[str, Any], divider: float, offset: float = 0.0
) -> Histogram:
    """The ``Histogram`` a fortio ``HistogramData`` was exported from: bucket counts from
    ``Data`` (each entry's lower edge names its bucket, the first entry's upper edge, a lone
    entry its Max), counters from Count/Min/Max/Sum/StdDev."""
    h = Histogram(offset, divider)
    count = int(hist.get("Count") or 0)
    if count == 0:
        return h
    data = list(hist.get("Data") or [])
    if not data:
        raise ResultsError("histogram has a Count but no Data to merge")

    def edge_index(value: float) -> int | None:
        scaled = (float(value) - offset) / divider
        k = round(scaled)
        if abs(scaled - k) > 1e-6 * max(1.0, abs(scaled)):
            return None
        return _BOUNDARY.get(float(k))

    total = 0
    for n, b in enumerate(data):
        c = int(b["Count"])
        if n > 0:
            lower = edge_index(b["Start"])
            if lower is None:
                raise ResultsError(f"histogram bucket start {b['Start']} is no bucket edge")
            i = lower + 1
        elif len(data) > 1:
            upper = edge_index(b["End"])
            if upper is None:
                raise ResultsError(f"histogram bucket end {b['End']} is no bucket edge")
            i = upper
        else:
            i = bucket_index(float(hist["Max"]), offset, divider)
        if not 0 <= i <= NUM_VALUES:
            raise ResultsError(f"histogram bucket {i} out of range")
        h.counts[i] += c
        total += c
    if total != count:
        raise ResultsError(f"histogram Data counts add up to {total}, Count says {count}")
    h.count = count
    h.min, h.max = float(hist["Min"]), float(hist["Max"])
    h.sum = float(hist.get("Sum") or 0.0)
    sd = float(hist.get("StdDev") or 0.0)
    # StdDev = sqrt(sum_sq/n - (sum/n)^2), fortio's and meshperf.histogram's formula.
    h.sum_sq = count * sd * sd + h.sum * h.sum / count
    return h


def _merge_hist(
    parts: Sequence[Mapping[str, Any]], key: str, divider: float, offset: float,
    percentiles: Sequence[float] | None,
) -> dict[str, Any] | None:  # fmt: skip
    present = [p[key] for p in parts if isinstance(p.get(key), Mapping)]
    if not present:
        return None
    merged = Histogram(offset, divider)
    for h in present:
        merged.merge(histogram_from_export(h, divider, offset))
    return merged.export(percentiles)


def _resolution(r: Mapping[str, Any], default: float) -> tuple[float, float]:
    res = r.get("Resolution")
    off = r.get("Offset")
    divider = float(res) if isinstance(res, int | float) and res > 0 else default
    offset = float(off) / 1e9 if isinstance(off, int | float) else 0.0
    return divider, offset


def _percentiles(r: Mapping[str, Any]) -> list[float]:
    return [float(p["Percentile"]) for p in (r["DurationHistogram"].get("Percentiles") or [])]


def _requested(parts: Sequence[Mapping[str, Any]]) -> str:
    qs = [p.get("RequestedQPS") for p in parts]
    if any(q in (None, "", "max", "0") for q in qs):
        return "max"
    try:
        return fortiojson.go_float(sum(float(str(q)) for q in qs))
    except ValueError:
        return "max"


def merge_results(
    parts: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    *,
    resolution: float = 0.001,
    labels: str | None = None,
) -> dict[str, Any]:
    """One fortio result from the clients' ``parts`` (``names``: each client's pod or
    process, for the record); ``resolution`` is fortio's ``-r`` where a part does not say."""
    if not parts:
        raise ResultsError("no client results to merge")
    if len(names) != len(parts):
        raise ValueError("one name per client result")
    shapes = {_resolution(p, resolution) for p in parts}
    if len(shapes) > 1:
        raise ResultsError(f"client results differ in histogram resolution/offset: {shapes}")
    divider, offset = shapes.pop()
    pcts = _percentiles(parts[0]) or None
    windows: list[tuple[int, int]] = []  # unix ns: fortio's StartTime has ns digits
    starts: dict[int, str] = {}
    for name, p in zip(names, parts, strict=True):
        try:
            start = start_ns(str(p["StartTime"]))
        except (KeyError, ValueError) as err:
            raise ResultsError(f"client {name}: no usable StartTime ({err})") from None
        windows.append((start, start + int(p.get("ActualDuration") or 0)))
        starts[start] = str(p["StartTime"])
    first_start = min(s for s, _ in windows)
    overlap_start = max(s for s, _ in windows)
    overlap_ns = min(e for _, e in windows) - overlap_start
    overlap = overlap_ns / 1e9

    merged: dict[str, Any] = {k: v for k, v in parts[0].items() if k != "meshperf"}
    merged["Labels"] = labels if labels is not None else parts[0].get("Labels", "")
    merged["StartTime"] = starts[overlap_start]  # the last starter's own text
    merged["RequestedQPS"] = _requested(parts)
    merged["ActualQPS"] = sum(float(p.get("ActualQPS") or 0.0) for p in parts)
    merged["ActualDuration"] = max(0, overlap_ns)
    merged["NumThreads"] = sum(int(p.get("NumThreads") or 0) for p in parts)
    for key in ("DurationHistogram", "ErrorsDurationHistogram", "SendLagHistogram",
                "ConnectionStats"):  # fmt: skip
        h = _merge_hist(parts, key, divider, offset, pcts)
        if h is not None:
            merged[key] = h
    for key, div in (("Sizes", SIZES_DIVIDER), ("HeaderSizes", HEADER_SIZES_DIVIDER)):
        h = _merge_hist(parts, key, div, 0.0, None)
        if h is not None:
            merged[key] = h
    codes: Counter[str] = Counter()
    ips: Counter[str] = Counter()
    for p in parts:
        codes.update({str(k): int(v) for k, v in (p.get("RetCodes") or {}).items()})
        ips.update({str(k): int(v) for k, v in (p.get("IPCountMap") or {}).items()})
    if any("RetCodes" in p for p in parts):
        merged["RetCodes"] = {k: codes[k] for k in sorted(codes)}
    if any("IPCountMap" in p for p in parts):
        merged["IPCountMap"] = dict(sorted(ips.items()))
    if any("Sockets" in p for p in parts):
        merged["Sockets"] = [s for p in parts for s in (p.get("Sockets") or [])]
    if any("SocketCount" in p for p in parts):
        merged["SocketCount"] = sum(int(p.get("SocketCount") or 0) for p in parts)
    versions = sorted({str(p.get("Version", "")) for p in parts})
    merged["Version"] = versions[0] if len(versions) == 1 else ",".join(versions)

    record: list[dict[str, Any]] = []
    for name, p, (s, e) in zip(names, parts, windows, strict=True):
        record.append(
            {
                "name": name,
                "start": _text(s),
                "end": _text(e),
                "start_offset_s": round((s - first_start) / 1e9, 6),
                "count": int(p["DurationHistogram"].get("Count") or 0),
                "actual_qps": float(p.get("ActualQPS") or 0.0),
                "connections": int(p.get("NumThreads") or 0),
            }
        )
    late = [r for r in record if r["start_offset_s"] > LATE_START_S]
    info: dict[str, Any] = {
        "clients": record,
        "clients_overlap_s": round(overlap, 6),
        "clients_span_s": round((max(e for _, e in windows) - first_start) / 1e9, 6),
    }
    warnings = [
        f"client {r['name']} started {r['start_offset_s']:.3f} s after the first"
        f" (> {LATE_START_S:g} s: clock skew or a slow start)"
        for r in late
    ]
    if overlap <= 0:
        warnings.append("the clients' windows do not overlap: they never loaded together")
    if warnings:
        info["clients_warning"] = "; ".join(warnings)
    merged["meshperf"] = info
    return merged


def start_ns(text: str) -> int:
    """fortio's StartTime (RFC 3339, up to 9 fraction digits) as unix nanoseconds."""
    when = parse_start_time(text)
    m = _FRACTION.search(text)
    frac = int((m.group(1) + "000000000")[:9]) if m else 0
    return int(when.replace(microsecond=0).timestamp()) * 1_000_000_000 + frac


def _text(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    when = dt.datetime.fromtimestamp(secs, dt.UTC)
    digits = f"{frac:09d}".rstrip("0")
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "") + "Z"


def overlap_share(info: Mapping[str, Any]) -> float:
    """How much of the clients' whole span they all loaded together (1.0 = in lockstep)."""
    span = float(info.get("clients_span_s") or 0.0)
    return float(info.get("clients_overlap_s") or 0.0) / span if span > 0 else 0.0


def client_file_name(label: str, start: str, index: int) -> str:
    """``<fortio ID of the merged test>_client<i>.json`` (``fortiojson.gen_id``)."""
    try:
        when = parse_start_time(start)
    except ValueError:
        when = dt.datetime.now(dt.UTC)
    return f"{fortiojson.gen_id(when, label)}_client{index}.json"
