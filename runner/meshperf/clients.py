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
import dataclasses
import datetime as dt
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
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


def shares(spec: Any, n: int) -> list[tuple[int, float]]:
    return split_test(spec.conn, spec.qps, n)


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


# ---- keeping each client's own result -------------------------------------------------------


def keep_client_files(
    output_dir: Path, label: str, merged_start: str, parts: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Write each client's result to ``<output_dir>/clients/``; their paths relative to
    ``output_dir``. A subdirectory: a results directory read by fortio.py or ``--resume``
    must not count the clients' calls twice."""
    from meshperf.atomic import write_atomic

    d = output_dir / CLIENTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    names = []
    for i, p in enumerate(parts):
        name = client_file_name(label, merged_start, i)
        write_atomic(d / name, fortiojson.dumps(dict(p)))
        names.append(f"{CLIENTS_DIR}/{name}")
    return names


def _finish(
    spec: Any, parts: Sequence[dict[str, Any]], names: Sequence[str], output_dir: Path
) -> dict[str, Any]:
    merged = merge_results(parts, names, resolution=spec.resolution, labels=spec.labels)
    files = keep_client_files(output_dir, spec.labels or spec.mode, merged["StartTime"], parts)
    info = merged.pop("meshperf")
    for rec, f in zip(info["clients"], files, strict=True):
        rec["file"] = f
    merged["meshperf"] = info
    return merged


# ---- the local platform: N generator processes ----------------------------------------------


def run_local(platform: Any, spec: Any) -> dict[str, Any]:
    """``LocalPlatform.run_test`` with ``--clients N``: N load generator processes at once,
    each with its share of the connections and the rate, merged by ``merge_results``."""
    from meshperf.errors import PlatformError
    from meshperf.local import envoy as envoy_mod
    from meshperf.local.sampler import Sampler
    from meshperf.platform import RESOURCE_LOADGEN, RESULT_KEY

    p = platform
    n = p.opts.clients
    p._tests += 1
    label = spec.labels or f"{spec.mode}_{spec.conn}_{spec.qps:g}"
    url = p.target(spec.mode, spec.size, spec.protocol)
    specs = [dataclasses.replace(spec, conn=c, qps=q) for c, q in shares(spec, n)]
    paths = [p.work_dir / f"test-{p._tests}-client{i}.json" for i in range(n)]
    sampler = Sampler(p._workloads(spec.mode))
    sampler.start()
    p._stopped.clear()
    procs: list[Any] = []
    try:
        # Started back to back, before any of them is waited on: they load together.
        for i, (s, path) in enumerate(zip(specs, paths, strict=True)):
            proc = p.group.start(
                f"loadgen-{p._tests}-client{i}", p.loadgen_argv(s, url, path),
                env=envoy_mod.process_env(), cwd=p.work_dir,
            )  # fmt: skip
            procs.append(proc)
            with p._lock:
                p._current = procs[0]  # stop_current signals it; the loop below stops the rest
            sampler.add(f"{RESOURCE_LOADGEN}_client{i}", proc.pid)
        deadline = time.monotonic() + spec.duration + LOADGEN_GRACE
        pending = list(procs)
        while pending:
            for proc in list(pending):
                code = proc.wait(0.1)
                if code is not None:
                    pending.remove(proc)
                    if code != 0 and not p._stopped.is_set():
                        raise proc.died_error("failed")
            if p._stopped.is_set():
                raise PlatformError(f"test {label} stopped before it finished")
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"load generators still running {spec.duration + LOADGEN_GRACE:g} s"
                    " after their start"
                )
        sampler.stop()
    finally:
        with p._lock:
            p._current = None
        sampler.stop()
        for proc in procs:
            proc.stop()
            p.group.remove(proc)
        p._truncate_access_logs()
    parts: list[dict[str, Any]] = []
    try:
        for i, path in enumerate(paths):
            try:
                parts.append(json.loads(path.read_text()))
            except (OSError, ValueError) as e:
                raise PlatformError(
                    f"load generator client {i} wrote no readable result for {label}: {e}"
                ) from e
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
    for part in parts:
        part.pop(RESULT_KEY, None)
    names = [f"loadgen-{i}" for i in range(n)]
    result = _finish(spec, parts, names, Path(p.opts.output_dir))
    window = p._window(result)
    block = dict(result.get(RESULT_KEY) or {})
    block.update(
        spec.result_block(
            platform=p.name, mesh=p.opts.mesh, run_id=p.opts.run_id, target=url,
            resources=sampler.resources(window), pressure=sampler.pressure(window),
        )
    )  # fmt: skip
    result[RESULT_KEY] = block
    return result


LOADGEN_GRACE = 60.0  # as the local platform's: a generator may take this long beyond -t


# ---- kubernetes: N client pods --------------------------------------------------------------


def client_pods(platform: Any, n: int) -> list[Any]:
    """The first ``n`` Running and Ready client pods by name (label ``app=fortioclient``)."""
    from meshperf.errors import ClusterError
    from meshperf.kube import cluster as kc

    c = platform.cluster
    try:
        listed = c.core.list_namespaced_pod(
            c.namespace, label_selector=kc.CLIENT_LABEL, _request_timeout=kc.API_TIMEOUT
        )
    except Exception as e:
        raise c._fail("listing the client pods", e) from e
    ready = []
    for pod in sorted(listed.items or [], key=lambda x: str(x.metadata.name)):
        try:
            ready.append(c.find_pod(str(pod.metadata.name), kc.CLIENT_LABEL, "fortioclient"))
        except ClusterError:
            continue  # not ready, or going away: not one of the clients
        if len(ready) == n:
            return ready
    raise ClusterError(
        f"--clients {n} needs {n} ready client pods with label {kc.CLIENT_LABEL} in namespace"
        f" {c.namespace}, found {len(ready)}",
        hint=f"deploy them with CLIENTS={n} NAMESPACE={c.namespace} ./setup_test.sh",
    )


def run_kube(platform: Any, spec: Any) -> dict[str, Any]:
    """``KubernetesPlatform.run_test`` with ``--clients N``: ``fortio load`` in N client pods
    at once, each with its share, every result read back, merged by ``merge_results``."""
    from meshperf.errors import ClusterError
    from meshperf.kube import cluster as kc
    from meshperf.kube import platform as kp
    from meshperf.kube.execs import SHORT_EXEC_TIMEOUT, ExecSession, pkill_argv, run_exec
    from meshperf.platform import RESULT_KEY

    p = platform
    n = p.opts.clients
    if p.client is None or p._closed:
        raise ClusterError("the kubernetes platform was not started")
    if p._stopping.is_set():
        raise ClusterError("stopped before the test began")
    p._find_pods()  # the server (and its node) as of now
    pods = client_pods(p, n)
    url = p.target(spec.mode, spec.size, spec.protocol)
    label = spec.labels or spec.mode
    specs = [dataclasses.replace(spec, conn=c, qps=q) for c, q in shares(spec, n)]
    name = kp.pod_result_name(label)
    plans = []
    for pod, s in zip(pods, specs, strict=True):
        dirs = pod.result_dirs()
        plans.append((pod, dirs, kp.fortio_argv(s, url, f"{dirs[0]}/{name}" if dirs else "-")))
    sessions: list[Any] = [None] * n
    errors: list[BaseException | None] = [None] * n
    results: list[Any] = [None] * n

    def connect(i: int) -> None:
        pod, _, argv = plans[i]
        try:
            sessions[i] = ExecSession(
                p.cluster.core, pod.name, pod.namespace, pod.load_container(), argv
            )
        except BaseException as e:  # noqa: BLE001 - reported below
            errors[i] = e

    def wait(i: int) -> None:
        try:
            results[i] = sessions[i].wait(spec.duration + kp.EXEC_SLACK_SECONDS)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors[i] = e

    def stop_all() -> None:
        """Stop fortio in every client pod (pkill in its own pod), then drop the streams."""
        for (pod, _, _), sess in zip(plans, sessions, strict=True):
            if sess is None or sess.interrupt_sent:
                continue
            sess.interrupt_sent = True
            try:
                run_exec(p.cluster.core, pod.name, pod.namespace, pod.stop_container(),
                         pkill_argv(label), timeout=kp.STOP_TIMEOUT)  # fmt: skip
            except ClusterError as e:
                p._say(f"could not stop fortio in pod {pod.namespace}/{pod.name} ({e})")
            finally:
                sess.abort()

    # Every exec opens at the same moment (threads), so the clients start together.
    threads = [threading.Thread(target=connect, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(kp.EXEC_SLACK_SECONDS)
    try:
        waits = [
            threading.Thread(target=wait, args=(i,), daemon=True)
            for i in range(n)
            if sessions[i] is not None
        ]
        for t in waits:
            t.start()
        while any(t.is_alive() for t in waits):
            if p._stopping.is_set() or any(errors):
                stop_all()
            for t in waits:
                t.join(0.2)
    finally:
        if any(errors):
            stop_all()
    if p._stopping.is_set():
        raise ClusterError(f"test {label} was stopped")
    for (pod, _, _), err in zip(plans, errors, strict=True):
        if err is not None:
            raise ClusterError(f"client pod {pod.name}: {err}")
    parts = []
    for (pod, dirs, _), res in zip(plans, results, strict=True):
        if res is None or not res.ok:
            raise ClusterError(
                f"client pod {pod.name}: "
                + (res.describe_failure() if res else "fortio load did not run")
            )
        raw = None
        if dirs:
            back = run_exec(p.cluster.core, pod.name, pod.namespace, kc.TOOLS_CONTAINER,
                            ["cat", f"{dirs[1]}/{name}"], timeout=SHORT_EXEC_TIMEOUT)  # fmt: skip
            if not back.ok:
                raise ClusterError(
                    f"reading the result back from {pod.name}: {back.describe_failure()}"
                )
            raw = back.stdout
        parts.append(kp.parse_fortio_output(res, raw))
    result = _finish(spec, parts, [pod.name for pod in pods], Path(p.opts.output_dir))
    block = dict(result.get(RESULT_KEY) or {})
    block.update(
        spec.result_block(platform=p.name, mesh=p.opts.mesh, run_id=p.opts.run_id, target=url)
    )
    server_node = p.server.node if p.server is not None else ""
    shared = [pod.name for pod in pods if server_node and pod.node == server_node]
    if shared:
        note = f"client pod(s) {', '.join(shared)} on the server's node {server_node}"
        block["clients_warning"] = "; ".join(filter(None, [block.get("clients_warning"), note]))
    result[RESULT_KEY] = block
    return result


def describe(n: int, platform: str, tests: Sequence[Any]) -> str:
    """``--dry-run``'s lines about the clients: "load from 3 client pods ... at once: ..."."""
    what = (
        "client pods (label app=fortioclient)"
        if platform == "kubernetes"
        else "load generator processes"
    )
    cells = list(dict.fromkeys((t.conn, t.qps) for t in tests))

    def each(conn: int, qps: float) -> str:
        return ", ".join(f"c={c} qps={q:g}" for c, q in split_test(conn, qps, n))

    if len(cells) == 1:
        return f"load from {n} {what} at once: {each(*cells[0])}; results merged into one"
    lines = [f"load from {n} {what} at once, results merged into one per test:"]
    lines += [f"  c={c} qps={q:g}: {each(c, q)}" for c, q in cells]
    return "\n".join(lines)


# ---- the command line -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``runner.py --clients N``."""
    g = parser.add_argument_group("many clients")
    g.add_argument(
        "--clients",
        type=clients_count,
        default=1,
        metavar="N",
        help="load from N clients at once, each with CONN/N connections and QPS/N: N client"
        " pods on kubernetes (CLIENTS=N ./setup_test.sh), N generator processes locally;"
        " their results are merged into one, each client's kept in <output-dir>/clients/"
        " (default: 1)",
    )


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-flag rules of ``--clients`` (``parser.error`` on a conflict)."""
    n = args.clients
    if n == 1:
        return
    small = [c for c in args.conn if c < n]
    if small:
        parser.error(
            f"--clients {n} gives each client at least one connection: CONN {small[0]} is"
            f" fewer than {n}"
        )
    if args.perf:
        parser.error("--perf records one test's server proxy; it does not combine with --clients")
