"""fortio-format results the tests make themselves (no other project's files).

``http_result`` builds a fortio 1.75-shaped HTTP result from latencies the test chooses, with
``meshperf.histogram`` doing the bucketing; a test that checks a derived number must derive its
expectation from the latencies it passed, not from the code under test. ``write`` stores one
as fortio does (Go-style JSON, ``<ID>.json``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from meshperf import fortiojson
from meshperf.histogram import Histogram

START = dt.datetime(2026, 3, 4, 10, 0, 0, 123456, tzinfo=dt.UTC)


def histogram(values: Iterable[float], divider: float = 0.0001) -> Histogram:
    h = Histogram(0.0, divider)
    for v in values:
        h.record(v)
    return h


def http_result(
    latencies: Sequence[float] = (0.0004, 0.0005, 0.0006, 0.0008, 0.0012),
    *,
    labels: str = "meshperf test",
    qps: float = 1000.0,
    threads: int = 4,
    duration_s: float = 10.0,
    retcodes: Mapping[str, int] | None = None,
    error_latencies: Sequence[float] = (),
    start: dt.datetime = START,
    version: str = "1.75.2",
    url: str = "http://127.0.0.1:8080/echo?size=1024",
    divider: float = 0.0001,
    size: int = 1024,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A fortio ``load`` result: every latency is one call; RetCodes default to all 200."""
    h = histogram(latencies, divider)
    for v in error_latencies:
        h.record(v)
    count = h.count
    codes = dict(retcodes) if retcodes is not None else {"200": count}
    actual_ns = int(duration_s * 1e9)
    doc: dict[str, Any] = {
        "RunType": "HTTP",
        "Labels": labels,
        "StartTime": fortiojson.go_time(start),
        "RequestedQPS": "max" if qps == 0 else fortiojson.go_float(qps),
        "RequestedDuration": f"{duration_s:g}s",
        "ActualQPS": count / duration_s,
        "ActualDuration": actual_ns,
        "NumThreads": threads,
        "Version": version,
        "DurationHistogram": h.export(),
        "ErrorsDurationHistogram": histogram(error_latencies, divider).export(),
        "Exactly": 0,
        "Jitter": False,
        "Uniform": False,
        "NoCatchUp": False,
        "RunID": 0,
        "AccessLoggerInfo": "",
        "ID": fortiojson.gen_id(start, labels),
        "RetCodes": codes,
        "URL": url,
        "NumConnections": threads,
        "Sizes": histogram([size + 150] * count, 100).export(),
        "HeaderSizes": histogram([150] * count, 5).export(),
        "SocketCount": threads,
        "AbortOn": 0,
    }
    if extra:
        doc.update(extra)
    return doc


def write(directory: Path, doc: Mapping[str, Any], name: str | None = None) -> Path:
    """Write ``doc`` as fortio does: ``<ID>.json`` (or ``name``) in Go's JSON layout."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"{doc['ID']}.json")
    path.write_text(fortiojson.dumps(dict(doc)))
    return path
