"""The highest request rate each mode sustains under a p99 SLO on the local platform.

Runs the real CLI once per SLO (``--slo p99=2ms`` and ``--slo p99=5ms`` by default):

    runner/runner.py CONN 0 DURATION --baseline --serversidecar --find-max --slo SLO
        --find-max-resolution RES --uniform --platform local

then prints, from each run file's ``slo_search``, the rate found per mode (``>=`` where the
search ended on a step whose load was not offered, i.e. the generator's limit, not the mode's),
each sidecar mode's share of the baseline's rate, the number of steps, the wall time, and the
machine's load and CPU pressure over the run, without which the numbers cannot be judged.

Usage: .venv/bin/python bench/bench_search.py [--slo p99=2ms --slo p99=5ms] [--conn 8]
           [--duration 5] [--resolution 10%] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "runner" / "runner.py"
sys.path.insert(0, str(REPO / "runner"))
from meshperf import search  # noqa: E402 - after the path that finds it

PSI = Path("/proc/pressure/cpu")


def psi_total() -> float | None:
    try:
        for line in PSI.read_text().splitlines():
            if line.startswith("some "):
                return float(line.split("total=")[1])
    except (OSError, IndexError, ValueError):
        return None
    return None


def one(slo: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(RUNNER), args.conn, "0", f"{args.duration:g}", "--baseline",
           "--serversidecar", "--find-max", "--slo", slo, "--find-max-resolution",
           args.resolution, "--uniform", "--platform", "local", "--output-dir", str(out),
           "-q"]  # fmt: skip
    load0, psi0, t0 = os.getloadavg()[0], psi_total(), time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=7200, check=False)
    wall = time.monotonic() - t0
    psi1 = psi_total()
    if proc.returncode not in (0, 3):
        print(proc.stdout + proc.stderr, file=sys.stderr)
        raise SystemExit(f"runner.py failed with exit code {proc.returncode}")
    (run_file,) = out.glob("run-*.json")
    run = json.loads(run_file.read_text())
    pressure = (psi1 - psi0) / 1e6 / wall if psi0 is not None and psi1 is not None else None
    return {"slo": slo, "run": run, "wall": wall, "load": (load0, os.getloadavg()[0]),
            "pressure": pressure, "summary": proc.stdout}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--slo", action="append", default=None)
    ap.add_argument("--conn", default="8")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--resolution", default="10%")
    ap.add_argument("--keep", type=Path, default=None, help="write results here (kept)")
    args = ap.parse_args()
    slos = args.slo or ["p99=2ms", "p99=5ms"]
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        rows = [one(slo, args, root / slo.replace("=", "-").replace(",", "_")) for slo in slos]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"conn {args.conn}, {args.duration:g} s steps, resolution {args.resolution}, --uniform")
    print(f"{'SLO':<10} {'mode':<14} {'max req/s':>10} {'share':>6} {'steps':>5}  how it ended")
    for r in rows:
        recs = {x["mode"]: x for x in r["run"]["slo_search"]}
        # The runner's own rule: no share where both rates are lower bounds.
        shares = {s["mode"]: s for s in search.shares(r["run"]["slo_search"])}
        for mode in ("baseline", "serversidecar", "both"):
            x = recs.get(mode)
            if x is None:
                continue
            q = x["max_qps"]
            qtext = (">= " if x["lower_bound"] and q else "") + f"{q:g}"
            sh = shares.get(mode)
            mark = {"at most ": "<=", "at least ": ">="}.get(sh["qualifier"], "") if sh else ""
            share = "-" if sh is None else f"{mark}{sh['share_pct']:.0f}%"
            print(f"{r['slo']:<10} {mode:<14} {qtext:>10} {share:>6} {len(x['steps']):>5}"
                  f"  {x['outcome']}: {x['reason'][:90]}")  # fmt: skip
        p = "n/a" if r["pressure"] is None else f"{100 * r['pressure']:.0f}%"
        print(f"{r['slo']:<10} wall {r['wall']:.0f} s, load average {r['load'][0]:.1f} ->"
              f" {r['load'][1]:.1f}, CPU pressure (PSI some) {p} of the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
