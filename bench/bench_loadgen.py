"""Benchmark the built-in load generator and echo server side by side with wrk.

    .venv/bin/python bench/bench_loadgen.py [--duration 10] [--rounds 2] [--server-workers 2]
                                            [--envoy] [--skip-throughput]
                                            [--protocols http,h2,grpc,tcp]

Everything runs on loopback, one measurement at a time, wrk and loadgen interleaved round by
round so machine noise hits both alike. Measured:

1. max throughput, ``loadgen.py load -qps 0 -c 16`` vs ``wrk -c 16 -t 2`` (same server: ours,
   and with ``--envoy`` also an Envoy direct-response listener, a server faster than ours);
2. latency accuracy: server ``delay=5ms``, 1000 qps, 16 connections, ``-uniform``: p50
   (histogram 10 us fine from 5 ms: ``-offset 5ms -r 0.00001``);
3. pacing: 1000 qps, 16 connections, ``-uniform``: achieved rate, send lag p50/p99, CPU of
   the generator's process tree (psutil) as a share of one core;
4. per protocol (``--protocols http,h2,grpc,tcp``), against one echo server with its TCP and
   gRPC listeners: pacing at 1000 qps over 16 connections (achieved rate, send lag p99, the
   generator's CPU from the start of its run, not its start-up) and the max rate, with
   ``h2load -c 16 -m 1`` beside ``-h2`` and ``wrk`` beside HTTP/1.1;
5. the echo server's own ceiling with 16 connections, measured by wrk.

Prints a table; ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
LOADGEN = REPO / "runner" / "loadgen.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_echo(workers: int, extra: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    """The echo server; with ``extra`` also its TCP and gRPC listeners (see ``ports``)."""
    argv = [PY, str(LOADGEN), "server", "-http-port", "127.0.0.1:0", "-workers", str(workers)]
    if extra:
        argv += ["-tcp-port", "127.0.0.1:0", "-grpc-port", "127.0.0.1:0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    text = b""
    deadline = time.monotonic() + 30
    while text.count(b"\n") < (3 if extra else 1) and time.monotonic() < deadline:
        if sel.select(0.5):
            text += os.read(proc.stdout.fileno(), 4096)
    ports.clear()
    for line in text.decode().splitlines():
        m2 = re.search(r"compatible (TCP echo|gRPC ping|echo) server listening on \S+:(\d+)", line)
        if m2:
            ports[{"TCP echo": "tcp", "gRPC ping": "grpc", "echo": "http"}[m2.group(1)]] = int(
                m2.group(2)
            )
    if "http" not in ports or (extra and len(ports) < 3):
        proc.kill()
        raise SystemExit(f"bench: error: echo server did not start: {text!r}")
    return proc, ports["http"]


ports: dict[str, int] = {}  # the last started echo server's listeners


HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
ENVOY_YAML = """
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %(admin)d}}
static_resources:
  listeners:
  - name: direct
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": %(hcm)s.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "%(body)s"}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


def start_envoy(tmp: Path, concurrency: int) -> tuple[subprocess.Popen[bytes], int]:
    envoy = os.environ.get("ENVOY_BIN") or shutil.which("envoy") or str(Path(PY).parent / "envoy")
    port, admin = free_port(), free_port()
    cfg = tmp / "envoy.yaml"
    cfg.write_text(ENVOY_YAML % {"port": port, "admin": admin, "body": "x" * 1024, "hcm": HCM})
    proc = subprocess.Popen(
        [envoy, "-c", str(cfg), "--concurrency", str(concurrency), "--disable-hot-restart",
         "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("bench: error: envoy did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wrk(url: str, duration: int, threads: int = 2, conns: int = 16) -> float:
    out = subprocess.run(
        ["wrk", "-c", str(conns), "-t", str(threads), "-d", f"{duration}s", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if m is None:
        raise SystemExit(f"bench: error: cannot read wrk output: {out!r}")
    return float(m.group(1))


def h2load(url: str, duration: int, conns: int = 16) -> float:
    """nghttp2's h2load, prior-knowledge h2c, one stream at a time per connection (as our
    ``-h2`` client runs), for ``duration`` seconds."""
    out = subprocess.run(
        ["h2load", "-c", str(conns), "-m", "1", "-t", "2", "-D", str(duration), url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if m is None:
        raise SystemExit(f"bench: error: cannot read h2load output: {out!r}")
    return float(m.group(1))


def loadgen_run_cpu(args: list[str], duration: int) -> tuple[dict[str, Any], float, float]:
    """Run ``loadgen.py load``; return its result, and its process tree's CPU (core-seconds)
    and wall time from the moment its run began (the banner after warmup) to its end, so that
    interpreter start-up and imports are not charged to the run."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        proc = subprocess.Popen(
            [PY, str(LOADGEN), "load", "-json", str(out), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        try:
            root = psutil.Process(proc.pid)
            sel = selectors.DefaultSelector()
            sel.register(proc.stderr, selectors.EVENT_READ)
            err = b""
            cpu0 = t0 = None
            deadline = time.monotonic() + duration + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if cpu0 is None and sel.select(0.05):
                    err += os.read(proc.stderr.fileno(), 65536)
                    if b" running at " in err:
                        t = root.cpu_times()
                        cpu0, t0 = t.user + t.system, time.monotonic()
                if cpu0 is not None:
                    t = root.cpu_times()
                    cpu1, t1 = t.user + t.system, time.monotonic()
                    time.sleep(0.05)
            sel.close()
            err += proc.stderr.read()
            proc.wait(60)
        finally:
            if proc.poll() is None:
                stop(proc)
        if proc.returncode != 0 or cpu0 is None or t0 is None:
            raise SystemExit(f"bench: error: loadgen failed: {err.decode().strip()}")
        return json.loads(out.read_text()), cpu1 - cpu0, t1 - t0


def loadgen(args: list[str], duration: int) -> tuple[dict[str, Any], float]:
    """Run ``loadgen.py load``; return its result and its process tree's CPU (core-seconds)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        proc = subprocess.Popen(
            [PY, str(LOADGEN), "load", "-json", str(out), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            root = psutil.Process(proc.pid)
            seen: dict[int, float] = {}
            deadline = time.monotonic() + duration + 60
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench: error: loadgen still running after {duration + 60} s")
                try:
                    for p in [root, *root.children(recursive=True)]:
                        with_kids = p.cpu_times()
                        seen[p.pid] = with_kids.user + with_kids.system
                except psutil.Error:
                    pass
                time.sleep(0.1)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:  # timed out or interrupted: it must not outlive the bench
                stop(proc)
        if proc.returncode != 0:
            raise SystemExit(f"bench: error: loadgen failed: {err.strip()}")
        return json.loads(out.read_text()), sum(seen.values())


PROBE = """
import ctypes, time
ctypes.CDLL(None).prctl(29, 1)  # same 1 ns timer slack as the load generator
lags = []
t = time.perf_counter_ns()
for _ in range(%(n)d):
    t += 1_000_000
    d = t - time.perf_counter_ns()
    if d > 0:
        time.sleep(d / 1e9)
    lags.append(time.perf_counter_ns() - t)
lags.sort()
print(*(lags[int(len(lags) * q)] / 1e6 for q in (0.5, 0.99, 0.999)))
"""


def wakeup_floor(seconds: int) -> tuple[float, float, float]:
    """How late a plain ``time.sleep`` wakes up here, 1000 times a second (ms p50/p99/p99.9):
    the machine's own floor under whatever else it is running, for the send-lag numbers."""
    out = subprocess.run(
        [PY, "-c", PROBE % {"n": seconds * 1000}],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def pct(h: dict[str, Any], p: float) -> float:
    for e in h.get("Percentiles") or []:
        if e["Percentile"] == p:
            return float(e["Value"])
    raise KeyError(p)


def protocol_section(a: argparse.Namespace, res: dict[str, Any], envoy_url: str | None) -> None:
    """Per protocol, against one echo server with all its listeners: pacing at 1000 qps over
    16 connections (-uniform), then the max rate, with h2load beside ours for HTTP/2."""
    d = a.duration
    srv, _ = start_echo(a.server_workers, extra=True)
    try:
        http = f"http://127.0.0.1:{ports['http']}/echo?size=1024"
        targets = {
            "http": [http],
            "h2": ["-h2", http],
            "grpc": ["-grpc", "-ping", f"127.0.0.1:{ports['grpc']}"],
            "tcp": ["-payload-size", "1024", f"tcp://127.0.0.1:{ports['tcp']}"],
        }
        for name in a.protocols.split(","):
            target = targets[name]
            r, cpu, wall = loadgen_run_cpu(
                ["-qps", "1000", "-c", "16", "-t", f"{d}s", "-uniform", "-r", "0.00001",
                 "-p", "50,90,99,99.9", *target],
                d,
            )  # fmt: skip
            lag = r["SendLagHistogram"]
            achieved = float(r["ActualQPS"])
            errors = r["ErrorsDurationHistogram"]["Count"]
            row: dict[str, Any] = {
                "actual_qps": achieved,
                "off_pct": abs(achieved - 1000) / 10,
                "lag_p99_ms": pct(lag, 99) * 1e3,
                "cpu_core_share": cpu / wall,
                "latency_p50_ms": pct(r["DurationHistogram"], 50) * 1e3,
                "errors": errors,
            }
            rates = []
            for _ in range(a.rounds):
                m, _, _ = loadgen_run_cpu(["-qps", "0", "-c", "16", "-t", f"{d}s", *target], d)
                rates.append(round(float(m["ActualQPS"])))
            row["max_qps"] = statistics.median(rates)
            ref = ""
            if name == "h2" and shutil.which("h2load"):
                refs = [round(h2load(http, d)) for _ in range(a.rounds)]
                row["h2load_qps"] = statistics.median(refs)
                row["ratio_h2load"] = row["max_qps"] / row["h2load_qps"]
                ref = (
                    f"; h2load -c 16 -m 1 {row['h2load_qps']:.0f} req/s, "
                    f"ratio {row['ratio_h2load']:.2f}"
                )
            if name == "http":
                refs = [round(wrk(http, d)) for _ in range(a.rounds)]
                row["wrk_qps"] = statistics.median(refs)
                row["ratio_wrk"] = row["max_qps"] / row["wrk_qps"]
                ref = f"; wrk -c 16 -t 2 {row['wrk_qps']:.0f} req/s, ratio {row['ratio_wrk']:.2f}"
            if name == "h2" and envoy_url and shutil.which("h2load"):
                # Our echo server's HTTP/2 is pure Python (h2), slower than either client:
                # against Envoy the clients, not the server, set the rate.
                ours = [
                    round(
                        float(
                            loadgen_run_cpu(
                                ["-qps", "0", "-c", "16", "-t", f"{d}s", "-h2", envoy_url], d
                            )[0]["ActualQPS"]
                        )
                    )
                    for _ in range(a.rounds)
                ]
                theirs = [round(h2load(envoy_url, d)) for _ in range(a.rounds)]
                row["envoy_max_qps"] = statistics.median(ours)
                row["envoy_h2load_qps"] = statistics.median(theirs)
                row["envoy_ratio_h2load"] = row["envoy_max_qps"] / row["envoy_h2load_qps"]
                ref += (
                    f"; against Envoy: ours {row['envoy_max_qps']:.0f}, h2load "
                    f"{row['envoy_h2load_qps']:.0f} req/s, ratio {row['envoy_ratio_h2load']:.2f}"
                )
            res[f"protocol_{name}"] = row
            print(
                f"{name:4s} 1000 qps, 16 conn, -uniform: achieved {achieved:.2f} "
                f"({row['off_pct']:.3f}% off), send lag p99 {row['lag_p99_ms']:.3f} ms, CPU "
                f"{100 * row['cpu_core_share']:.1f}% of a core, "
                f"p50 {row['latency_p50_ms']:.3f} ms, "
                f"{errors} errors; max {row['max_qps']:.0f} req/s (rounds {rates}){ref}",
                flush=True,
            )
    finally:
        stop(srv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved throughput rounds")
    ap.add_argument("--server-workers", type=int, default=2, help="echo server processes")
    ap.add_argument("--envoy", action="store_true", help="also use an Envoy direct response")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-echo", action="store_true", help="skip the echo server ceiling")
    ap.add_argument(
        "--protocols",
        default="http,h2,grpc,tcp",
        help="protocols for the per-protocol section ('' to skip): http,h2,grpc,tcp",
    )
    ap.add_argument("--json", help="write the numbers here too")
    a = ap.parse_args()
    d = a.duration
    res: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmpd:
            srv, port = start_echo(a.server_workers)
            procs.append(srv)
            base = f"http://127.0.0.1:{port}"
            url = f"{base}/echo?size=1024"
            targets = {"echo": url}
            if a.envoy:
                env, eport = start_envoy(Path(tmpd), 1)
                procs.append(env)
                targets["envoy"] = f"http://127.0.0.1:{eport}/"

            if not a.skip_throughput:
                for name, turl in targets.items():
                    w_list, l_list, l1_list = [], [], []
                    for _ in range(a.rounds):
                        w_list.append(wrk(turl, d))
                        r, _ = loadgen(["-qps", "0", "-c", "16", "-t", f"{d}s", turl], d)
                        l_list.append(round(float(r["ActualQPS"])))
                        r, _ = loadgen(
                            ["-qps", "0", "-c", "16", "-t", f"{d}s", "-workers", "1", turl], d
                        )
                        l1_list.append(round(float(r["ActualQPS"])))
                    wm = statistics.median(w_list)
                    lm, l1m = statistics.median(l_list), statistics.median(l1_list)
                    res[f"throughput_{name}"] = {
                        "wrk": w_list, "loadgen": l_list, "loadgen_1worker": l1_list,
                        "ratio": lm / wm, "ratio_1worker": l1m / wm,
                    }  # fmt: skip
                    print(
                        f"max throughput vs {name}: wrk -t 2 {wm:.0f} req/s; loadgen (auto "
                        f"workers) {lm:.0f} req/s, ratio {lm / wm:.2f}; loadgen -workers 1 "
                        f"{l1m:.0f} req/s, ratio {l1m / wm:.2f} (rounds: wrk {w_list}, "
                        f"loadgen {l_list}, -workers 1 {l1_list})",
                        flush=True,
                    )

            r, _ = loadgen(
                # -offset 5ms -r 0.00001: 10 us buckets from 5 ms up. With a coarse -r the
                # bucket holding 5 ms is 0.5-1 ms wide and an interpolated p50 lands mid-bucket
                # whatever the true median (bench/bench_echo_delay.py).
                ["-qps", "1000", "-c", "16", "-t", f"{d}s", "-uniform", "-offset", "5ms",
                 "-r", "0.00001", "-p", "50,90,99", f"{base}/echo?delay=5ms"],
                d,
            )  # fmt: skip
            h = r["DurationHistogram"]
            res["delay5ms"] = {"p50": pct(h, 50), "p90": pct(h, 90), "p99": pct(h, 99)}
            print(
                f"delay=5ms at 1000 qps, 16 conn: p50 {pct(h, 50) * 1e3:.3f} ms "
                f"(target within 0.15 of 5.0), p90 {pct(h, 90) * 1e3:.3f} ms, "
                f"p99 {pct(h, 99) * 1e3:.3f} ms",
                flush=True,
            )

            r, cpu = loadgen(
                ["-qps", "1000", "-c", "16", "-t", f"{d}s", "-uniform", "-r", "0.00001",
                 "-p", "50,90,99,99.9", url],
                d,
            )  # fmt: skip
            lag = r["SendLagHistogram"]
            secs = r["ActualDuration"] / 1e9
            achieved = float(r["ActualQPS"])
            res["pacing"] = {
                "actual_qps": achieved,
                "error_pct": abs(achieved - 1000) / 10,
                "lag_p50": pct(lag, 50),
                "lag_p99": pct(lag, 99),
                "lag_p999": pct(lag, 99.9),
                "cpu_core_share": cpu / secs,
                "latency_p50": pct(r["DurationHistogram"], 50),
                "latency_p99": pct(r["DurationHistogram"], 99),
            }
            print(
                f"1000 qps, 16 conn, -uniform: achieved {achieved:.2f} qps "
                f"({abs(achieved - 1000) / 10:.3f}% off), send lag p50 {pct(lag, 50) * 1e3:.3f} "
                f"p99 {pct(lag, 99) * 1e3:.3f} p99.9 {pct(lag, 99.9) * 1e3:.3f} ms, "
                f"CPU {100 * cpu / secs:.1f}% of a core; latency p50 "
                f"{pct(r['DurationHistogram'], 50) * 1e6:.0f} us",
                flush=True,
            )

            if a.protocols:
                protocol_section(a, res, targets.get("envoy"))

            floor = wakeup_floor(min(d, 5))
            res["sleep_wakeup_floor_ms"] = floor
            print(
                f"machine floor: time.sleep wakeups at 1 kHz late by p50 {floor[0]:.3f} "
                f"p99 {floor[1]:.3f} p99.9 {floor[2]:.3f} ms",
                flush=True,
            )

            for workers in sorted({1, a.server_workers}) if not a.skip_echo else []:
                s2, p2 = start_echo(workers)
                try:
                    rate = wrk(f"http://127.0.0.1:{p2}/echo?size=1024", d)
                finally:
                    stop(s2)
                res[f"echo_server_{workers}w"] = rate
                print(f"echo server, {workers} worker(s), wrk -c 16 -t 2: {rate:.0f} req/s")
    finally:
        for p in procs:
            stop(p)
    res["load_avg_end"] = os.getloadavg()
    print(f"load average start {res['load_avg_start']}, end {res['load_avg_end']}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
