"""Compare two sets of fortio results: per test and metric the change, its 95% interval and a
verdict (improved, regressed, not significant), and a gate a CI job can fail on.

BASE and NEW are what fortio.py reads (results directories, result JSON files, fortio server
URLs) or fortio.py's own JSON/CSV output; several sources per side are separated by commas.
Tests are matched on mode, conn, qps, size and protocol; with 3 or more repeats per side the
interval comes from the variation between repeats, else from a bootstrap of each run's
histogram ("within-run only, optimistic"). Method: docs/compare.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from meshperf.cli import add_overwrite, add_timeout, check_new_files, print_error, script_parser
from meshperf.errors import ExitCode, MeshperfError, exit_cli, missing_package

try:
    from meshperf import compare as cmp_mod
    from meshperf import stats
    from meshperf.results import DEFAULT_TIMEOUT, atomic_write_text
except ModuleNotFoundError as e:  # numpy/requests, outside the project's environment
    missing_package(e)

PROG = "compare.py"
# A significant regression past a --fail-on threshold: distinct from every other outcome so a
# CI job can tell "slower" from "could not compare".
EXIT_GATE = 4

EPILOG = f"""\
examples:
  # two runs of the same matrix (e.g. Istio 1.29 vs 1.30), each a results directory
  python runner/compare.py results-1.29 results-1.30

  # what telemetry costs: the same matrix with and without it
  python runner/compare.py results/with-telemetry results/no-telemetry --html telemetry.html

  # in CI: fail when p99 regressed significantly by more than 5%
  python runner/compare.py baseline-results new-results --fail-on 'regressed:p99>5%' --json cmp.json

metrics: p50 p90 p99 p999 (us, shown in ms), qps (achieved req/s), errors (%), and
cpu_mili_avg_<proxy> / mem_MB_avg_<proxy> where the results have them.

exit status: 0 compared (whatever the verdicts); {EXIT_GATE} a --fail-on gate tripped;
{int(ExitCode.ERROR)} nothing to compare or bad input.
"""


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(PROG, __doc__, EPILOG)
    p.add_argument("base", metavar="BASE", help="the reference results (comma list allowed)")
    p.add_argument("new", metavar="NEW", help="the results compared with it (comma list allowed)")
    p.add_argument(
        "--match",
        metavar="COLUMNS",
        default=",".join(cmp_mod.DEFAULT_MATCH),
        help="what makes two tests the same (default: %(default)s; also "
        + ", ".join(c for c in cmp_mod.MATCH_COLUMNS if c not in cmp_mod.DEFAULT_MATCH)
        + ")",
    )
    p.add_argument(
        "--metrics",
        metavar="NAMES",
        help="only these metrics (comma list, fnmatch patterns allowed, e.g. p50,p99,cpu_*)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    out.add_argument("--html", metavar="FILE", help="write a Bokeh chart of the changes")
    add_overwrite(out)
    gate = p.add_argument_group("gate")
    gate.add_argument(
        "--fail-on",
        metavar="RULE",
        action="append",
        default=[],
        help="VERDICT:METRIC[>N%%], e.g. regressed:p99>5%% or regressed:cpu_*; repeatable; "
        f"exit {EXIT_GATE} when a significant change trips it",
    )
    stat = p.add_argument_group("statistics")
    stat.add_argument(
        "--seed", type=int, default=stats.SEED, help="bootstrap seed (default: %(default)s)"
    )
    stat.add_argument(
        "--resamples",
        type=int,
        default=stats.BOOTSTRAP_RESAMPLES,
        help="bootstrap resamples (default: %(default)s)",
    )
    add_timeout(p, DEFAULT_TIMEOUT)
    return p


def _err(message: str, hint: str | None = None) -> None:
    print_error(PROG, message, hint)  # meshperf.cli: the one error line of every script


def _sources(text: str) -> list[str]:
    parts = [s.strip() for s in text.split(",") if s.strip()]
    # A path with a comma in it is still one path when it exists as given.
    return [text] if os.path.exists(text) else parts


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        gates = [cmp_mod.Gate.parse(g) for g in args.fail_on]
    except ValueError as e:
        parser.error(f"--fail-on: {e}")
    if args.resamples < 100:
        parser.error("--resamples must be at least 100")
    try:
        match = cmp_mod.parse_match(args.match)
        check_new_files([Path(p) for p in (args.json, args.html) if p], args.overwrite)
        sides = []
        for name, text in (("BASE", args.base), ("NEW", args.new)):
            sources = _sources(text)
            for s in sources:
                if not s.lower().startswith(("http://", "https://")) and not os.path.exists(s):
                    raise MeshperfError(f"{name} {s}: no such file or directory")
            side = cmp_mod.load_side(", ".join(sources), sources, timeout=args.timeout)
            for skipped in side.skipped:
                print(
                    f"{PROG}: {name}: skipped {skipped.source}: {skipped.reason}", file=sys.stderr
                )
            sides.append(side)
        comparison = cmp_mod.compare(
            sides[0], sides[1], match=match, seed=args.seed, resamples=args.resamples
        )
        if args.metrics:
            wanted = [m.strip() for m in args.metrics.split(",") if m.strip()]
            comparison.changes = [
                c
                for c in comparison.changes
                if any(cmp_mod.metric_matches(w, c.metric) for w in wanted)
            ]
            if not comparison.changes:
                raise MeshperfError(f"--metrics {args.metrics}: no such metric compared")
        tripped = cmp_mod.check_gates(comparison, gates)
        sys.stdout.write(cmp_mod.text_report(comparison))
        if args.json:
            atomic_write_text(args.json, cmp_mod.json_text(comparison), overwrite=args.overwrite)
            print(args.json)
        if args.html:
            cmp_mod.write_html(comparison, Path(args.html))
            print(args.html)
    except MeshperfError as e:
        _err(str(e), e.hint)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return ExitCode.INTERRUPTED
    if tripped:
        for line in tripped:
            print(f"{PROG}: gate: {line}", file=sys.stderr)
        return EXIT_GATE
    return ExitCode.OK


if __name__ == "__main__":
    exit_cli(main)
