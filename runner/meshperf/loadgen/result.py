"""The run's result: the workers' measurements merged into one fortio result dict, and the
human summary on stderr."""

from __future__ import annotations

import base64
import datetime as dt
import socket
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from meshperf import fortiojson
from meshperf.goduration import SECOND, format_duration
from meshperf.histogram import Histogram
from meshperf.loadgen.options import (
    USER_AGENT,
    VERSION,
    CallPlan,
    LoadOptions,
    Target,
)


def merge_results(
    o: LoadOptions,
    plan: CallPlan,
    parts: Sequence[dict[str, Any]],
    start_ns: int,
    wall: dt.datetime,
    labels: str,
    id_time: dt.datetime,
    interrupted: bool,
) -> tuple[dict[str, Any], list[float] | None]:
    """Merge the workers' results into one fortio HTTP result dict (fortio's key order)."""
    off = o.offset_ns / SECOND
    durations = Histogram(off, o.resolution)
    errors = Histogram(off, o.resolution)
    send_lag = Histogram(0.0, o.resolution)
    connect = Histogram(off, o.resolution)
    sizes = Histogram(0.0, 100)
    header_sizes = Histogram(0.0, 5)
    codes: Counter[int] = Counter()
    size_counts: Counter[int] = Counter()
    header_counts: Counter[int] = Counter()
    sockets: dict[int, int] = {}
    samples: list[float] | None = [] if o.keep_samples else None
    end_ns = start_ns
    addr = ""
    for p in parts:
        s = p["stats"]
        durations.merge(Histogram.from_state(s["durations"]))
        errors.merge(Histogram.from_state(s["errors"]))
        send_lag.merge(Histogram.from_state(s["send_lag"]))
        connect.merge(Histogram.from_state(s["connect"]))
        codes.update(s["codes"])
        size_counts.update({int(k): v for k, v in s["sizes"].items()})
        header_counts.update({int(k): v for k, v in s["header_sizes"].items()})
        sockets.update({int(k): v for k, v in p["sockets"].items()})
        if samples is not None and s["samples"] is not None:
            samples.extend(s["samples"])
        end_ns = max(end_ns, p["end_ns"])
        addr = f"{p['addr'][0]}:{p['addr'][1]}" if p["addr"][0] else addr
    for v, n in sorted(size_counts.items()):
        sizes.record_n(v, n)
    for v, n in sorted(header_counts.items()):
        header_sizes.record_n(v, n)
    elapsed = max(end_ns - start_ns, 1)
    pcts = list(o.percentiles)
    socket_list = [sockets.get(k, 0) for k in range(plan.threads)]
    total_sockets = sum(socket_list)
    if o.exactly:
        req_dur = f"exactly {o.exactly} calls"
        if interrupted:
            req_dur += f", interrupted after {durations.count}"
    elif o.duration_ns > 0:
        req_dur = format_duration(o.duration_ns)
    else:
        req_dur = "until stop" if o.qps > 0 else ""
    payload = o.body()
    content_type = "application/octet-stream" if payload else ""
    for h in o.headers:
        name, _, value = h.partition(":")
        if name.strip().lower() == "content-type":
            content_type = value.strip()
    result: dict[str, Any] = {
        "RunType": "HTTP",
        "Labels": labels,
        "StartTime": fortiojson.go_time(_zulu(wall)),
        "RequestedQPS": "max" if o.qps <= 0 else f"{o.qps:.9g}",
        "RequestedDuration": req_dur,
        "ActualQPS": durations.count / (elapsed / SECOND),
        "ActualDuration": elapsed,
        "NumThreads": plan.threads,
        "Version": VERSION,
        "DurationHistogram": durations.export(pcts),
        "ErrorsDurationHistogram": errors.export(pcts),
        "Exactly": o.exactly,
        "Jitter": o.jitter,
        "Uniform": o.uniform,
        "NoCatchUp": o.nocatchup,
        "RunID": o.run_id,
        "AccessLoggerInfo": "",
        "ID": fortiojson.gen_id(id_time, labels, o.run_id),
        "RetCodes": {str(k): codes[k] for k in sorted(codes, key=_code_order)},
        "IPCountMap": {addr: total_sockets} if addr and total_sockets else {},
        "Insecure": False,
        "MTLS": False,
        "CACert": o.cacert,
        "Cert": "",
        "Key": "",
        "UnixDomainSocket": "",
        "URL": Target.parse(o.url, o.grpc).url,
        "NumConnections": 1,
        "Compression": False,
        "DisableFastClient": False,
        "HTTP10": False,
        "H2": o.h2,
        "DisableKeepAlive": not o.keepalive,
        "AllowHalfClose": False,
        "FollowRedirects": False,
        "Resolve": "",
        "HTTPReqTimeOut": o.timeout_ns,
        "UserCredentials": "",
        "ContentType": content_type,
        "Payload": base64.b64encode(payload).decode() if payload else "",
        "MethodOverride": "",
        "LogErrors": False,
        "SequentialWarmup": False,
        "ConnReuseRange": list(o.connection_reuse or (0, 0)),
        "NoResolveEachConn": False,
        "Offset": o.offset_ns,
        "Resolution": o.resolution,
        "Sizes": sizes.export(None),
        "HeaderSizes": header_sizes.export(None),
        "Sockets": socket_list,
        "SocketCount": total_sockets,
        "ConnectionStats": connect.export(pcts),
        "AbortOn": 0,
        "SendLagHistogram": send_lag.export(pcts),
    }
    if o.protocol == "http":
        return result, samples
    common = {k: result[k] for k in _COMMON_KEYS}
    common["RunType"] = run_type(o)
    common["RetCodes"] = result["RetCodes"]
    if o.protocol == "tcp":
        body = o.body()
        tcp = {k: common[k] for k in _COMMON_KEYS}
        # tcprunner.RunnerResults: periodic results, then TCPOptions, then the counters.
        tcp.update(
            Destination=o.url,
            Payload=base64.b64encode(body).decode() if body else None,
            UnixDomainSocket="",
            ReqTimeout=o.timeout_ns,
            RetCodes=common["RetCodes"],
            SocketCount=total_sockets,
            BytesSent=sum(p.get("bytes_sent", 0) for p in parts),
            BytesReceived=sum(p.get("bytes_received", 0) for p in parts),
        )
        tcp["SendLagHistogram"] = result["SendLagHistogram"]
        return tcp, samples
    # fgrpc.GRPCRunnerResults: periodic results, RetCodes, Destination, Streams, Ping, Metadata.
    grpc = {k: common[k] for k in _COMMON_KEYS}
    grpc.update(
        RetCodes=common["RetCodes"],
        Destination=o.url,
        Streams=o.streams,
        Ping=o.ping,
        Metadata=grpc_metadata(o),
    )
    grpc["SendLagHistogram"] = result["SendLagHistogram"]
    return grpc, samples


# periodic.RunnerResults, the part every fortio result starts with (periodic/periodic.go).
_COMMON_KEYS = (
    "RunType",
    "Labels",
    "StartTime",
    "RequestedQPS",
    "RequestedDuration",
    "ActualQPS",
    "ActualDuration",
    "NumThreads",
    "Version",
    "DurationHistogram",
    "ErrorsDurationHistogram",
    "Exactly",
    "Jitter",
    "Uniform",
    "NoCatchUp",
    "RunID",
    "AccessLoggerInfo",
    "ID",
)


def _code_order(code: int | str) -> tuple[int, int | str]:
    """HTTP codes in numeric order; gRPC/TCP names sorted as Go's JSON sorts map keys."""
    return (0, code) if isinstance(code, int) else (1, code)


def run_type(o: LoadOptions) -> str:
    """fortio's RunType: ``HTTP``, ``TCP``, ``GRPC Ping[ Delay=..]`` or ``GRPC Health for
    '<svc>'``, then `` PayloadLength=N`` for gRPC with a payload (fgrpc.RunGRPCTest)."""
    if o.protocol == "http":
        return "HTTP"
    if o.protocol == "tcp":
        return "TCP"
    if o.ping:
        text = "GRPC Ping"
        if o.grpc_ping_delay_ns > 0:
            text += f" Delay={format_duration(o.grpc_ping_delay_ns)}"
    else:
        text = f"GRPC Health for '{o.health_service}'"
    length = len(o.text_payload().encode())
    if length:
        text += f" PayloadLength={length}"
    return text


def grpc_metadata(o: LoadOptions) -> dict[str, list[str]]:
    """fortio sends its HTTP headers as gRPC metadata (lower-case keys), User-Agent included
    (cli.httpHeader2grpcMetadata)."""
    md: dict[str, list[str]] = {"user-agent": [USER_AGENT]}
    for h in o.headers:
        name, _, value = h.partition(":")
        key = name.strip().lower()
        if key == "user-agent":
            md[key] = [value.strip()]
        else:
            md.setdefault(key, []).append(value.strip())
    return md


def _zulu(t: dt.datetime) -> dt.datetime:
    """Go writes ``Z`` for any zero UTC offset; ``go_time`` does so only for ``timezone.utc``."""
    return t.astimezone(dt.UTC) if t.utcoffset() == dt.timedelta(0) else t


def default_labels(url: str) -> str:
    """Fortio's CLI default: ``"<url minus http(s)://> , <short hostname>"``."""
    short = socket.gethostname().split(".")[0]
    bare = url.split("://", 1)[1] if "://" in url else url
    return f"{bare} , {short}"


def describe_duration(o: LoadOptions) -> str:
    if o.exactly:
        return f"exactly {o.exactly} calls"
    if o.duration_ns > 0:
        return format_duration(o.duration_ns)
    return "until interrupted"


def print_summary(res: dict[str, Any], o: LoadOptions, log: TextIO) -> None:
    """Fortio-like human summary (stderr), so a person can read the run without the JSON."""
    h = res["DurationHistogram"]
    secs = res["ActualDuration"] / SECOND
    print(f"Ended after {secs:.6g}s : {h['Count']} calls. qps={res['ActualQPS']:.5g}", file=log)
    print(
        f"Aggregated Function Time : count {h['Count']} avg {h['Avg']:.9g} "
        f"+/- {h['StdDev']:.4g} min {h['Min']:.9g} max {h['Max']:.9g} sum {h['Sum']:.9g}",
        file=log,
    )
    for p in h.get("Percentiles") or []:
        print(f"# target {p['Percentile']:g}% {p['Value']:.6g}", file=log)
    lag = res["SendLagHistogram"]
    if lag["Count"]:
        parts = [f"avg {lag['Avg'] * 1000:.3f}"]
        parts += [f"p{p['Percentile']:g} {p['Value'] * 1000:.3f}" for p in lag["Percentiles"]]
        parts.append(f"max {lag['Max'] * 1000:.3f}")
        print(f"Send lag (ms, how late calls left): {', '.join(parts)}", file=log)
    if "SocketCount" in res:  # not in fortio's gRPC result
        print(
            f"Sockets used: {res['SocketCount']} (for perfect keepalive, would be "
            f"{res['NumThreads']})",
            file=log,
        )
    total = max(h["Count"], 1)
    for code, n in res["RetCodes"].items():
        print(f"Code {code:>3} : {n} ({100.0 * n / total:.1f} %)", file=log)
    print(
        f"All done {h['Count']} calls (plus {0 if o.exactly else res['NumThreads']} warmup) "
        f"{h['Avg'] * 1000:.3f} ms avg, {res['ActualQPS']:.1f} qps",
        file=log,
        flush=True,
    )
