"""False-positive rate of compare.py's verdicts: A/A comparisons of identical local matrices.

Runs the same matrix RUNS times with the real CLI (``runner/runner.py CONN QPS DURATION
--baseline --serversidecar --uniform --repeat REPEAT --platform local``), then compares every
pair of runs with ``meshperf.compare`` (the code behind ``runner/compare.py``). Nothing
changed between the runs, so every ``improved`` or ``regressed`` is a false positive; at 95%
intervals about 5% of (pair, test) comparisons would be if the method's assumptions held.

Reported per metric and per method:

- ``between-repeat``: each run's REPEAT repeats (the method compare.py uses with >= 3);
- ``within-run only``: the first repeat of each run alone (the single-run histogram
  bootstrap), to show how optimistic it is (p50 and p99).

Pairs share runs, so the comparisons are not independent; the rate is a measurement of this
machine on this day, not a property of the method alone.

Usage: .venv/bin/python bench/bench_compare_aa.py [--runs 7] [--repeat 3] [--duration 4]
       [--keep DIR] [--reuse DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "runner" / "runner.py"
sys.path.insert(0, str(REPO / "runner"))

from meshperf import compare as cmp  # noqa: E402

# The bootstrap alternative is reported for these; the between-repeat method for all.
BOOTSTRAP_METRICS = ("p50", "p99")


def run_matrix(out: Path, args: argparse.Namespace) -> None:
    cmd = [sys.executable, str(RUNNER), args.conn, args.qps, f"{args.duration:g}",
           "--baseline", "--serversidecar", "--uniform", "--repeat", str(args.repeat),
           "--platform", "local", "--output-dir", str(out), "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"runner.py failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")


def first_repeat_only(side: cmp.Side) -> cmp.Side:
    kept = [o for o in side.observations if o.row.get("repeat") in (0, None)]
    return cmp.Side(side.name, kept, side.skipped, side.run_ids)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--conn", default="16")
    ap.add_argument("--qps", default="1000")
    ap.add_argument("--keep", type=Path, help="keep the result directories here")
    ap.add_argument("--reuse", type=Path, help="compare the run-* directories already in DIR")
    args = ap.parse_args()

    started = time.monotonic()
    if args.reuse:
        dirs = sorted(p for p in args.reuse.iterdir() if p.is_dir() and p.name.startswith("run"))
        root = None
    else:
        root = Path(tempfile.mkdtemp(prefix="meshperf-aa-"))
        dirs = []
        for i in range(args.runs):
            d = root / f"run{i:02d}"
            run_matrix(d, args)
            dirs.append(d)
            print(f"run {i + 1}/{args.runs} done ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr)  # fmt: skip
    sides = [cmp.load_side(d.name, [str(d)]) for d in dirs]
    counts: dict[tuple[str, str], list[int]] = {}
    warned = 0
    total_rows = 0
    for a, b in itertools.combinations(sides, 2):
        for label, sa, sb in (
            ("between-repeat", a, b),
            ("within-run only", first_repeat_only(a), first_repeat_only(b)),
        ):
            result = cmp.compare(sa, sb)
            for c in result.changes:
                if label != "between-repeat" and c.metric not in BOOTSTRAP_METRICS:
                    continue
                hits = counts.setdefault((label, c.metric), [0, 0])
                hits[0] += c.verdict != cmp.NOT_SIGNIFICANT
                hits[1] += 1
                if label == "between-repeat":
                    total_rows += 1
                    warned += bool(c.warnings)
    pairs = len(sides) * (len(sides) - 1) // 2
    report = {
        "runs": len(sides),
        "pairs": pairs,
        "matrix": f"{args.conn} conn, {args.qps} qps, {args.duration:g} s, "
        f"baseline/serversidecar/both, {args.repeat} repeats",
        "false_positive_rate": {
            f"{label} {metric}": {
                "significant": h[0],
                "comparisons": h[1],
                "rate": round(h[0] / h[1], 3) if h[1] else None,
            }
            for (label, metric), h in sorted(counts.items())
        },  # fmt: skip
        "comparisons_using_results_with_warnings": f"{warned}/{total_rows}",
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=1))
    if root is not None:
        if args.keep:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
