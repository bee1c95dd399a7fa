"""What the local platform measures, and what the harness costs, for one matrix.

Runs the real CLI, ``runner/runner.py CONN QPS DURATION --baseline --serversidecar --uniform``
(16 connections, 1000 req/s in total by default) once per protocol of ``--protocols`` (http,
h2 = HTTP/2, grpc, tcp; one after the other, on the same machine state as far as it goes), then
prints from the result files:

- p50/p90/p99 per mode and the overhead of each mode over baseline (median over repeats);
- proxy CPU per 1000 req/s (cores) and proxy memory (RSS and USS, MB) per mode;
- the harness overhead: wall time of the whole matrix minus the sum of test durations, per
  test, split into start-up (before the first test) and per-test (between tests);
- with several protocols, one table of every protocol's overheads side by side.

Usage: .venv/bin/python bench/bench_local_matrix.py [--duration 30] [--repeat 1] [--keep DIR]
       [--protocols http,h2,grpc,tcp]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "runner" / "runner.py"
MODES = ("baseline", "serversidecar", "both")
PROXIES = {
    "serversidecar": ("fortioserver_deployment_proxy",),
    "both": ("fortio_deployment_proxy", "fortioserver_deployment_proxy"),
}


def pct(result: dict[str, Any], p: float) -> float:
    """A stored percentile in ms."""
    for item in result["DurationHistogram"]["Percentiles"]:
        if item["Percentile"] == p:
            return 1000.0 * float(item["Value"])
    raise KeyError(p)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--conn", default="16")
    ap.add_argument("--qps", default="1000")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="write results here (kept)")
    ap.add_argument(
        "--protocols",
        default="http",
        help="comma list of http, h2 (HTTP/2), grpc, tcp: one matrix each (default: http)",
    )
    args = ap.parse_args()
    protocols = [p.strip() for p in args.protocols.split(",")]
    bad = [p for p in protocols if p not in PROTOCOL_FLAGS]
    if bad:
        ap.error(f"unknown protocol {bad[0]!r}; choose from {', '.join(PROTOCOL_FLAGS)}")

    out = args.keep or Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    overheads: dict[str, dict[str, dict[float, float]]] = {}
    try:
        for protocol in protocols:
            sub = out / protocol
            code = _run(args, sub, protocol, overheads)
            if code:
                return code
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    if len(protocols) > 1:
        print("\noverhead over baseline per protocol, ms (p50 / p90 / p99):")
        print(f"{'protocol':<10}" + "".join(f"  {m:<28}" for m in MODES[1:]))
        for protocol, by_mode in overheads.items():
            cells = [
                " / ".join(f"{by_mode[m][p]:+.3f}" for p in (50.0, 90.0, 99.0)) for m in MODES[1:]
            ]
            print(f"{protocol:<10}" + "".join(f"  {c:<28}" for c in cells))
    return 0


# What each --protocols item adds to runner.py's command line.
PROTOCOL_FLAGS: dict[str, list[str]] = {
    "http": [],
    "h2": ["--h2"],
    "grpc": ["--protocol", "grpc"],
    "tcp": ["--protocol", "tcp"],
}


def _run(
    args: argparse.Namespace,
    out: Path,
    protocol: str,
    overheads: dict[str, dict[str, dict[float, float]]],
) -> int:
    cmd = [sys.executable, str(RUNNER), args.conn, args.qps, f"{args.duration:g}", "--baseline",
           "--serversidecar", "--uniform", "--repeat", str(args.repeat), "--platform", "local",
           "--output-dir", str(out), "--quiet", *PROTOCOL_FLAGS[protocol]]  # fmt: skip
    print("running:", " ".join(cmd[1:]), flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, timeout=3600, check=False, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode not in (0, 3):  # 3: some test had errors; its numbers still count
        print(proc.stdout, proc.stderr, sep="\n")
        print(f"runner exited {proc.returncode}")
        return 1

    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))
               if not p.name.startswith("run-")]  # fmt: skip
    run = json.loads(next(out.glob("run-*.json")).read_text())
    by_mode: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for r in results:
        by_mode[r["meshperf"]["mode"]].append(r)

    lat = {m: {p: statistics.median(pct(r, p) for r in rs) for p in (50.0, 90.0, 99.0)}
           for m, rs in by_mode.items()}  # fmt: skip
    overheads[protocol] = {
        m: {p: lat[m][p] - lat["baseline"][p] for p in lat[m]} for m in MODES
    }
    print(f"\n{protocol}: {args.conn} connections, {args.qps} req/s total, {args.duration:g} s,"
          " --uniform,"
          f" {args.repeat} repeat(s); machine: {run['machine']['cpus']} CPUs;"
          f" envoy {run['platform_metadata'].get('envoy', {}).get('version')}")  # fmt: skip
    print(f"\n{'mode':<14}{'achieved':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
          f"{'+p50':>8}{'+p90':>8}{'+p99':>8}  sendlag p99 ms")  # fmt: skip
    for m, rs in by_mode.items():
        achieved = statistics.median(r["ActualQPS"] for r in rs)
        d = {p: lat[m][p] - lat["baseline"][p] for p in lat[m]}
        lag = [r["SendLagHistogram"] for r in rs if "SendLagHistogram" in r]
        lag99 = (statistics.median(1000 * next(x["Value"] for x in h["Percentiles"]
                                               if x["Percentile"] == 99.0) for h in lag)
                 if lag else float("nan"))  # fmt: skip
        print(f"{m:<14}{achieved:>9.1f}{lat[m][50.0]:>9.3f}{lat[m][90.0]:>9.3f}{lat[m][99.0]:>9.3f}"
              f"{d[50.0]:>+8.3f}{d[90.0]:>+8.3f}{d[99.0]:>+8.3f}  {lag99:.3f}")  # fmt: skip

    print(f"\n{'mode':<14}{'proxy':<32}{'cores/1000qps':>14}{'RSS MB':>9}{'USS MB':>9}")
    for m, keys in PROXIES.items():
        for key in keys:
            cores, rss, uss = [], [], []
            for r in by_mode[m]:
                res = r["meshperf"]["resources"].get(key)
                if not res:
                    continue
                cores.append(res["cpu_mili"]["avg"] / 1000 / (r["ActualQPS"] / 1000))
                rss.append(res["mem_MB"]["max"])
                uss.append(res.get("mem_uss_MB", {}).get("max", float("nan")))
            if cores:
                print(f"{m:<14}{key:<32}{statistics.median(cores):>14.3f}"
                      f"{statistics.median(rss):>9.1f}{statistics.median(uss):>9.1f}")  # fmt: skip

    tests = run["tests"]
    n = len(tests)
    planned = sum(t["duration"] for t in tests)
    in_tests = sum(t["wall_seconds"] for t in tests)
    startup = wall - in_tests
    print(f"\nharness: {n} tests, wall {wall:.1f} s, test durations {planned:g} s;"
          f" overhead {(wall - planned) / n:.2f} s per test"
          f" (start-up and exit {startup:.1f} s once, {(in_tests - planned) / n:.2f} s inside"
          f" each test beyond its duration)")  # fmt: skip
    if args.keep is not None:
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
