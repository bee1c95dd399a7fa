"""Collect fortio results (plus proxy CPU and memory) into one JSON and one CSV file.

Reads every result a fortio server or report serves (its index.tsv, HTML listing or browse
page), a results directory written by runner.py, or result JSON files. One row per test
(or per test key with --aggregate); latencies in microseconds, computed from the histogram
with fortio's percentile rule.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from typing import Any

from meshperf.argtypes import positive_float
from meshperf.cli import add_overwrite, add_timeout, print_error, script_parser
from meshperf.errors import ExitCode, MeshperfError, PrometheusError, exit_cli, missing_package

try:
    from meshperf import collect as col
    from meshperf.results import (
        DEFAULT_DEADLINE,
        DEFAULT_TIMEOUT,
        check_url,
        is_url,
        load_sources,
    )
except ModuleNotFoundError as e:  # requests, outside the project's environment
    missing_package(e)

try:  # only --prometheus needs it (and prometheus-api-client); the rest works without
    from meshperf.prom import PrometheusSource

    PROM_IMPORT_ERROR = ""
except ImportError as e:  # pragma: no cover - depends on the installed packages
    PrometheusSource = None  # type: ignore[assignment, misc]
    PROM_IMPORT_ERROR = str(e)

PROG = "fortio.py"
DEFAULT_PREFIX = "meshperf-results"

_DEFAULTS_TEXT = textwrap.fill(
    f"Default columns: {', '.join(col.DEFAULT_COLUMNS)}, then sendlag_p99 and every cpu/mem "
    f"column that has data (with --aggregate also {', '.join(col.AGGREGATE_COLUMNS)}).",
    width=88,
    break_on_hyphens=False,
    break_long_words=False,
)

EPILOG = f"""\
examples:
  # the 2019 scripts' command: a fortio server, CPU/memory from Prometheus, chosen columns
  python runner/fortio.py $FORTIO_CLIENT_URL --prometheus=$PROMETHEUS_URL \\
      --csv StartTime,ActualDuration,Labels,NumThreads,ActualQPS,p50,p90,p99,\\
cpu_mili_avg_fortioserver_deployment_proxy,mem_MB_max_fortioserver_deployment_proxy

  # a local run's directory, one row per test key across repeats
  python runner/fortio.py results/ --aggregate --output results/summary

columns (units): latencies min, avg, max, p50, p75, p90, p99, p999 (any p<digits>) and
sendlag_p99 in microseconds; ActualDuration in seconds; errorPercent in percent;
RequestedQPS 0 = max; cpu_mili_{{min,avg,max}}_<workload> in millicores;
mem_MB_{{min,avg,max}}_<workload> (RSS / working set) and mem_uss_MB_... in MB.
{_DEFAULTS_TEXT}

exit status: 0 all tests written; {int(ExitCode.TESTS_FAILED)} some tests, or their CPU/memory,
skipped (reasons printed); {int(ExitCode.ERROR)} nothing could be read, or bad input.
"""


def _instant(text: str) -> Any:
    try:
        return col.parse_instant(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(PROG, __doc__, EPILOG)
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="fortio server or report URL (e.g. $FORTIO_CLIENT_URL, http://host:8080, "
        ".../fortio/data/), a results directory, or result JSON files",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--output",
        "-o",
        metavar="PREFIX",
        default=DEFAULT_PREFIX,
        help="write PREFIX.json and PREFIX.csv (default: ./%(default)s)",
    )
    out.add_argument(
        "--csv",
        metavar="COLUMNS",
        help="comma-separated CSV columns (default: see below); resource columns of any "
        "workload are accepted and written empty when there is no data",
    )
    add_overwrite(out)
    out.add_argument(
        "--aggregate",
        action="store_true",
        help="one row per test key (platform, mesh, mode, conn, qps, size, protocol, extra "
        "labels, telemetry, RunType, fortio Version) across repeats: "
        "medians, p50/p99 min, max and spread",
    )
    sel = p.add_argument_group("selection")
    sel.add_argument(
        "--selector",
        metavar="S",
        help="keep tests whose Labels contain S, or, when S starts with ^, whose StartTime "
        "starts with S[1:] or lies in the period that date-time prefix names (compared with "
        "time zones; UTC unless S gives one): ^2018-04-03T23 is 23:00-24:00 UTC",
    )
    sel.add_argument(
        "--since",
        metavar="TIME",
        type=_instant,
        help="keep tests that started at or after TIME (2018-04-03, 2018-04-03T23:30, "
        "2018-04-03T16:32:58-07:00; UTC unless a zone is given)",
    )
    sel.add_argument(
        "--until",
        metavar="TIME",
        type=_instant,
        help="keep tests that started before TIME (same forms as --since)",
    )
    res = p.add_argument_group("CPU and memory")
    res.add_argument(
        "--prometheus",
        metavar="URL",
        default=None,
        help="Prometheus to read proxy CPU/memory from (default: $PROMETHEUS_URL; "
        "'' = none). Without it, local results' own samples are used",
    )
    res.add_argument(
        "--prom-selector",
        metavar="LABELS",
        help='extra PromQL label matchers, e.g. namespace="twopods"',
    )
    add_timeout(p, DEFAULT_TIMEOUT)
    p.add_argument(
        "--deadline",
        type=positive_float,
        default=DEFAULT_DEADLINE,
        metavar="S",
        help="seconds in which all of one URL source (listing and files) must arrive; what has "
        "not is skipped (default: %(default)s)",
    )
    return p


def _err(message: str, hint: str | None = None) -> None:
    print_error(PROG, message, hint)  # meshperf.cli: the one error line of every script


def _url_hint(source: str) -> str | None:
    # Suggest, never assume: a bare host could as well be a mistyped directory.
    if re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]+)?", source):
        port = "" if ":" in source else ":8080"
        return f"a fortio server is a URL: did you mean http://{source}{port} ?"
    if "://" in source:
        return "only http:// and https:// URLs are read"
    return None


def _make_prometheus(url: str, timeout: float, selector: str | None) -> Any:
    if PrometheusSource is None:
        raise MeshperfError(
            f"Prometheus support is not available ({PROM_IMPORT_ERROR})",
            hint="run without --prometheus and unset PROMETHEUS_URL",
        )
    return PrometheusSource(url, timeout=timeout, selector=selector)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prom_url = args.prometheus
    if prom_url is None:
        prom_url = os.environ.get("PROMETHEUS_URL") or None
    if not prom_url and args.prom_selector:
        parser.error("--prom-selector needs --prometheus or $PROMETHEUS_URL")
    if args.since is not None and args.until is not None and args.since >= args.until:
        parser.error("--since must be before --until")
    try:
        for source in args.sources:
            if is_url(source):
                check_url(source)
            elif not os.path.exists(source):
                raise MeshperfError(
                    f"{source}: not a URL nor an existing file or directory", _url_hint(source)
                )
        columns = (
            col.parse_columns(args.csv, aggregated=args.aggregate) if args.csv is not None else None
        )
        col.check_outputs(args.output, args.overwrite)
        prometheus = (
            _make_prometheus(prom_url, args.timeout, args.prom_selector) if prom_url else None
        )

        try:
            report = load_sources(args.sources, timeout=args.timeout, deadline=args.deadline)
            collected = col.collect(
                report,
                selector=args.selector,
                since=args.since,
                until=args.until,
                prometheus=prometheus,
                extra_percentiles=col.extra_percentiles(columns or ()),
                notify=lambda msg: print(f"{PROG}: {msg}", file=sys.stderr),
            )
        finally:
            if prometheus is not None:
                prometheus.close()
        for s in collected.skipped:
            # A file that is no fortio result is named, but is no test that went missing.
            verb = "skipped" if s.test else "ignored"
            print(f"{PROG}: {verb} {s.source}: {s.reason}", file=sys.stderr)
        skipped_tests = [s for s in collected.skipped if s.test]
        not_results = len(collected.skipped) - len(skipped_tests)
        rows = col.aggregate(collected.rows) if args.aggregate else collected.rows
        if not rows:
            why = (
                "no test matches "
                + " ".join(
                    f"--{k}" for k in ("selector", "since", "until") if getattr(args, k) is not None
                )
                if collected.selected_out
                else "no test could be read"
            )
            _err(f"{why}; nothing written")
            return ExitCode.ERROR
        if columns is None:
            columns = col.default_columns(rows, args.aggregate)
        json_path, csv_path = col.write_outputs(
            args.output, rows, columns, overwrite=args.overwrite
        )
    except PrometheusError as e:
        _err(f"Prometheus: {e}", e.hint)
        return ExitCode.ERROR
    except MeshperfError as e:
        _err(str(e), e.hint)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        _err("interrupted; nothing written")
        return ExitCode.INTERRUPTED

    print(json_path)
    print(csv_path)
    summary = (
        f"{collected.read} test{'' if collected.read == 1 else 's'} read, "
        f"{len(collected.rows)} written"
        + (f" as {len(rows)} aggregated rows" if args.aggregate else "")
        + f", {len(skipped_tests)} skipped"
    )
    if collected.selected_out:
        summary += f", {collected.selected_out} not selected"
    if collected.duplicates:
        summary += f", {len(collected.duplicates)} duplicates ignored"
    if collected.partial:
        summary += f", {len(collected.partial)} without CPU/memory"
    if collected.own_samples:
        summary += (
            f", {len(collected.own_samples)} with their own CPU/memory samples, not Prometheus's"
        )
    if not_results:
        summary += f", {not_results} file{'' if not_results == 1 else 's'} not fortio results"
    print(summary)
    incomplete = skipped_tests or collected.partial or collected.own_samples
    return ExitCode.TESTS_FAILED if incomplete else ExitCode.OK


if __name__ == "__main__":
    exit_cli(main)
