"""How exactly the echo server holds ``delay=``: p50 of ``echo?delay=5ms`` from 50 to 2000 req/s.

    .venv/bin/python bench/bench_echo_delay.py [--delay 5ms] [--duration 5] [--conns 8,16]
                                               [--qps 50,200,400,1000,2000] [--json FILE]

fortio's Go server sleeps to within ~0.1 ms; the target here is p50 within 0.15 ms of the
delay (issue 14). Each point is the built-in generator (``-uniform``) against one echo server
worker on loopback; the same run's ``delay=0`` p50 is printed beside it, the loopback path the
delayed reply rides on too.

The histogram must be fine where the answer is: fortio's buckets widen with the value (at
``-r 0.0005`` the bucket holding 5 ms spans 5.0-5.5 ms, and a median interpolated inside it
reads ~5.25 ms whatever the true value). ``-offset`` set to the delay with ``-r 0.00001``
makes the buckets around the delay 10 us wide.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "runner")
    return env


def start_echo() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [PY, "-m", "meshperf.loadgen", "server", "-http-port", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    line = b""
    deadline = time.monotonic() + 20
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        if sel.select(0.5):
            line += os.read(proc.stdout.fileno(), 4096)
    m = re.search(rb":(\d+)\s*$", line)
    if m is None:
        proc.kill()
        raise SystemExit(f"bench: error: echo server did not start: {line!r}")
    return proc, int(m.group(1))


def p50(url: str, conns: int, qps: int, seconds: int, offset: str = "0s") -> float:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        subprocess.run(
            [PY, "-m", "meshperf.loadgen", "load", "-quiet", "-c", str(conns), "-qps", str(qps),
             "-t", f"{seconds}s", "-uniform", "-offset", offset, "-r", "0.00001", "-p", "50",
             "-json", str(out), url],
            check=True,
            timeout=seconds + 60,
            env=_env(),
        )  # fmt: skip
        res = json.loads(out.read_text())
    return float(res["DurationHistogram"]["Percentiles"][0]["Value"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay", default="5ms")
    ap.add_argument("--duration", type=int, default=5, help="seconds per point")
    ap.add_argument("--conns", default="8,16")
    ap.add_argument("--qps", default="50,200,400,1000,2000")
    ap.add_argument("--json", help="write the numbers here too")
    a = ap.parse_args()
    delay_ms = float(a.delay.removesuffix("ms"))
    srv, port = start_echo()
    rows: list[dict[str, Any]] = []
    try:
        for conns in (int(c) for c in a.conns.split(",")):
            for qps in (int(q) for q in a.qps.split(",")):
                c = min(conns, max(1, qps // 2))
                base = p50(f"http://127.0.0.1:{port}/echo", c, qps, a.duration)
                got = p50(
                    f"http://127.0.0.1:{port}/echo?delay={a.delay}", c, qps, a.duration, a.delay
                )
                off = got * 1e3 - delay_ms
                rows.append(
                    {"conns": c, "qps": qps, "p50_ms": got * 1e3, "p50_delay0_ms": base * 1e3}
                )
                print(
                    f"{c:3d} conn {qps:5d} qps: delay={a.delay} p50 {got * 1e3:.3f} ms "
                    f"({off:+.3f} ms; target within 0.15), delay=0 p50 {base * 1e3:.3f} ms",
                    flush=True,
                )
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(10)
    print(f"load average {os.getloadavg()}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
