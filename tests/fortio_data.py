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
    # A real run ends a little after its requested duration, so ActualQPS is never integral.
    actual_ns = int(duration_s * 1e9) + 1_234_567
    doc: dict[str, Any] = {
        "RunType": "HTTP",
        "Labels": labels,
        "StartTime": fortiojson.go_time(start),
        "RequestedQPS": "max" if qps == 0 else fortiojson.go_float(qps),
        "RequestedDuration": f"{duration_s:g}s",
        "ActualQPS": count / (actual_ns / 1e9),
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


# Four samples with the shapes real fortio versions write (an istio/tools label, errors with
# their own histogram, an old gRPC ping run, an old HTTP run without the newer fields). Their
# latencies are chosen so a test can work out percentiles by hand: see each docstring.

def istio_tools() -> dict[str, Any]:
    """istio/tools-style label; 100 calls: 50 at 1.0 ms, 40 at 2.0 ms, 10 at 9.0 ms."""
    lat = [0.001] * 50 + [0.002] * 40 + [0.009] * 10
    return http_result(
        lat, labels="193ff770_qps_1000_c_1_1024_both", qps=1000, threads=1, duration_s=0.1,
        version="1.3.1", url="http://fortioserver:8080/echo?size=1024",
        start=dt.datetime(2019, 7, 10, 17, 1, 28, 933303, tzinfo=dt.UTC),
    )


def with_errors() -> dict[str, Any]:
    """fortio 1.28-style run with errors: 20 OK at 0.3 ms, 5 x 503 and 5 x 429 at 5 ms."""
    doc = http_result(
        [0.0003] * 20, error_latencies=[0.005] * 10, labels="Sample with errors", qps=1000,
        threads=8, duration_s=0.03, retcodes={"200": 20, "429": 5, "503": 5}, version="1.28.0",
        url="http://localhost:80/echo?delay=250us:30,5ms:5&status=503:0.5,429:1.5",
        start=dt.datetime(2022, 5, 8, 0, 12, 28, 857554, tzinfo=dt.UTC),
        extra={"Uniform": True, "NoCatchUp": True, "RunID": 1, "NumConnections": 1},
    )
    doc["ID"] = 0  # fortio 1.28 wrote a numeric ID
    return doc


def grpc_ping() -> dict[str, Any]:
    """fortio 0.9 gRPC ping: 8 calls at 250 ms; numeric RetCodes (1 = SERVING); no Sizes."""
    doc = http_result(
        [0.25] * 8, labels="fortio-stage.example , laptop", qps=8, threads=8, duration_s=1.0,
        version="0.9.0", start=dt.datetime(2018, 4, 3, 16, 32, 58, 895472,
                                          tzinfo=dt.timezone(dt.timedelta(hours=-7))),
        divider=0.001,
    )
    doc["RunType"] = "GRPC Ping Delay=250ms PayloadLength=11"
    doc["RetCodes"] = {"1": 8}
    for key in ("ErrorsDurationHistogram", "Jitter", "Uniform", "NoCatchUp", "RunID",
                "AccessLoggerInfo", "ID", "URL", "NumConnections", "Sizes", "HeaderSizes",
                "SocketCount", "AbortOn"):
        doc.pop(key)
    doc.update({"Destination": "https://fortio-stage.example", "Streams": 4, "Ping": True})
    return doc


def http_defaults() -> dict[str, Any]:
    """fortio 1.11-style HTTP run with default flags: 4 calls at 5, 6, 10 and 25 ms."""
    doc = http_result(
        [0.005, 0.006, 0.010, 0.025], labels="localhost/post , laptop", qps=8, threads=4,
        duration_s=0.5, version="1.11.5-pre", url="http://localhost/post", divider=0.001,
        start=dt.datetime(2021, 5, 30, 18, 3, 29, 389507,
                          tzinfo=dt.timezone(dt.timedelta(hours=-4))),
    )
    for key in ("ErrorsDurationHistogram", "Uniform", "NoCatchUp", "RunID", "AccessLoggerInfo",
                "ID", "NumConnections"):
        doc.pop(key)
    return doc


SAMPLES = {
    "http-istio-tools.json": istio_tools,
    "http-with-errors.json": with_errors,
    "grpc-ping.json": grpc_ping,
    "http-defaults.json": http_defaults,
}


def write_samples(directory: Path) -> dict[str, Path]:
    """All four samples, as files named in SAMPLES, in ``directory``."""
    return {name: write(directory, make(), name) for name, make in SAMPLES.items()}


_SAMPLES_DIR: Path | None = None


def samples_dir() -> Path:
    """A directory holding the four samples, made once per test process (removed at exit).

    For modules that name sample files at import time (parametrize lists); a test that writes
    next to the samples must copy them into its own tmp_path first.
    """
    global _SAMPLES_DIR
    if _SAMPLES_DIR is None:
        import atexit
        import shutil
        import tempfile

        made = Path(tempfile.mkdtemp(prefix="meshperf-samples-"))
        atexit.register(shutil.rmtree, made, True)
        write_samples(made)
        _SAMPLES_DIR = made
    return _SAMPLES_DIR


def spec_percentile(h: Mapping[str, Any], p: float) -> float:
    """fortio's CalcPercentile (stats.go), transcribed independently of meshperf.histogram:
    linear interpolation inside the bucket holding p, Min below 100/Count %, Max at 100."""
    data = h.get("Data") or []
    if not data:
        return 0.0
    if p >= 100:
        return float(h["Max"])
    pp = 100.0 / h["Count"]
    if p <= pp:
        return float(h["Min"])
    for b in data:
        if p <= b["Percent"]:
            return float(b["Start"] + (p - pp) / (b["Percent"] - pp) * (b["End"] - b["Start"]))
        pp = b["Percent"]
    return float(h["Max"])
