"""Compare two sets of results test by test, with a 95% interval and a verdict per metric.

The two sides (BASE and NEW) are anything ``fortio.py`` reads (results directories, result
files, fortio server URLs), or ``fortio.py``'s own JSON/CSV output. Tests are matched on
``match`` columns (mode, conn, qps, size, protocol by default); what differs between the
sides (run ids, extra labels such as ``nomixer``) is what is being compared. Several results
with the same key on one side are repeats.

Per matched test and metric the change new/base, in % and in the metric's unit, with a 95%
interval (see ``meshperf.stats`` for the methods and why):

- ``between-repeat``: >= ``MIN_REPEATS`` results on each side (or 2 on one side when a
  repeat failed); Welch's t interval on log values, base and new are the geometric means of
  the repeats;
- ``within-run only, optimistic``: fewer repeats; a bootstrap of each run's own histogram
  (latency), calls (errors) or resource samples (CPU, memory), seeded;
- ``no interval``: neither (e.g. fortio.py rows of single runs): never significant.

A verdict is ``improved`` or ``regressed`` only when the interval excludes no change.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meshperf import collect as col
from meshperf import stats, trust
from meshperf.errors import ConfigError, ResultsError
from meshperf.results import (
    DEFAULT_TIMEOUT,
    FortioResult,
    LabelShape,
    LoadReport,
    Skipped,
    is_collected_rows,
    is_url,
    load_sources,
)

MIN_REPEATS = 3
METHOD_REPEATS = "between-repeat"
METHOD_BOOTSTRAP = "within-run only, optimistic"
METHOD_NONE = "no interval"

IMPROVED, REGRESSED, NOT_SIGNIFICANT = "improved", "regressed", "not significant"

# What a test is; --match picks among these.
MATCH_COLUMNS: tuple[str, ...] = (
    "mode", "conn", "qps", "size", "protocol", "mesh", "platform", "extra_labels", "arrival",
)  # fmt: skip
DEFAULT_MATCH: tuple[str, ...] = ("mode", "conn", "qps", "size", "protocol")
# Always in an output row, whatever --match says (the row keys).
ROW_KEYS: tuple[str, ...] = ("mode", "conn", "qps", "size", "protocol")

LATENCY_METRICS: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
# Metric -> (unit shown, lower is better).
_UNITS: dict[str, str] = {"qps": "req/s", "errors": "%"}
# Resource columns compared: the average CPU and memory of every proxy that has them.
RESOURCE_COMPARED = re.compile(r"^(?P<metric>cpu_mili|mem_MB)_avg_(?P<key>[A-Za-z0-9_]*proxy)$")

ROW_FIELDS: tuple[str, ...] = (
    "mode", "conn", "qps", "size", "protocol", "metric", "base", "new", "change_pct",
    "ci_low_pct", "ci_high_pct", "verdict", "method",
)  # fmt: skip


def metric_unit(metric: str) -> str:
    if metric in LATENCY_METRICS:
        return "us"
    if metric in _UNITS:
        return _UNITS[metric]
    return "millicores" if metric.startswith("cpu_mili") else "MB"


def higher_is_better(metric: str) -> bool:
    return metric == "qps"


# -- one side ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Observation:
    """One test result (one repeat) of one side, as a row plus what resampling needs."""

    row: Mapping[str, Any]
    result: FortioResult | None  # None for rows read from fortio.py output
    warnings: str

    def value(self, metric: str) -> float | None:
        name = {"qps": "ActualQPS", "errors": "errorPercent"}.get(metric, metric)
        v = self.row.get(name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        return float(v)

    def key_value(self, column: str) -> Any:
        if column == "qps":
            return self.row.get("RequestedQPS")
        if column == "protocol":
            return protocol_of(self.row, self.result)
        return self.row.get(column)


def protocol_of(row: Mapping[str, Any], result: FortioResult | None) -> str:
    """The result's protocol (FortioResult.protocol: http, http2, grpc, tcp), else the CSV's
    column, else fortio's RunType, so HTTP/1.1 and HTTP/2 runs never share a cell."""
    if result is not None:
        return result.protocol
    p = row.get("protocol")
    if p:
        return str(p)
    run_type = str(row.get("RunType") or "HTTP").lower()
    for name in ("grpc", "tcp", "udp"):
        if run_type.startswith(name):
            return name
    return "http"


@dataclasses.dataclass
class Side:
    name: str
    observations: list[Observation]
    skipped: list[Skipped]
    run_ids: list[str]


def _number_cell(text: str) -> Any:
    if text == "":
        return None
    try:
        f = float(text)
    except ValueError:
        return text
    return int(f) if f.is_integer() and "." not in text and "e" not in text.lower() else f


def _label_facts(row: dict[str, Any]) -> dict[str, Any]:
    """Rows of the 2019 scripts' CSVs have only Labels: read mode, conn, qps, size from it."""
    shape = LabelShape.parse(str(row.get("Labels") or ""))
    if shape is None:
        return row
    facts = {
        "mode": shape.mode,
        "conn": shape.conn,
        "RequestedQPS": 0 if shape.qps is None else shape.qps,
        "size": shape.size,
        "extra_labels": shape.extra_labels,
        "run_id": shape.run_id,
    }
    return {**facts, **{k: v for k, v in row.items() if v not in (None, "")}}


def read_rows(path: Path) -> list[dict[str, Any]] | None:
    """fortio.py's output (``PREFIX.json`` rows or a CSV); None when ``path`` is not one."""
    if path.suffix.lower() == ".csv":
        try:
            with path.open(encoding="utf-8", newline="") as f:
                rows = [{k: _number_cell(v or "") for k, v in r.items()} for r in csv.DictReader(f)]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise ResultsError(f"{path}: cannot read as CSV ({e})") from None
        if rows and not any(c in rows[0] for c in ("p50", "Labels")):
            raise ResultsError(f"{path}: not a fortio.py CSV (no p50 or Labels column)")
        return [_label_facts(r) for r in rows]
    if path.suffix.lower() != ".json":
        return None
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # the results loader says what is wrong with it
    if not is_collected_rows(doc):
        return None
    return [_label_facts(dict(r)) for r in doc]


def load_side(
    name: str,
    sources: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Side:
    """Every usable test of ``sources``: results through meshperf.results, rows as they are."""
    observations: list[Observation] = []
    result_sources: list[str] = []
    for source in sources:
        rows = None if is_url(source) or Path(source).is_dir() else read_rows(Path(source))
        if rows is None:
            result_sources.append(source)
            continue
        for row in rows:
            observations.append(Observation(row, None, str(row.get("warnings") or "")))
    report = load_sources(result_sources, timeout=timeout) if result_sources else LoadReport()
    collected = col.collect(report)
    by_source = {r.source: r for r in report.results}
    for row in collected.rows:
        # The warnings column fortio.py writes (meshperf.trust), so both say the same.
        r = by_source.get(str(row.get("source")))
        observations.append(Observation(row, r, str(row.get("warnings") or "")))
    run_ids = sorted({str(o.row.get("run_id")) for o in observations if o.row.get("run_id")})
    return Side(name, observations, list(collected.skipped), run_ids)


# -- comparing -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Change:
    key: tuple[tuple[str, Any], ...]  # (column, value) of the match columns and ROW_KEYS
    metric: str
    base: float
    new: float
    change_pct: float | None
    change_abs: float
    ci_low_pct: float | None
    ci_high_pct: float | None
    ci_low_abs: float | None
    ci_high_abs: float | None
    verdict: str
    method: str
    n_base: int
    n_new: int
    warnings: tuple[str, ...]  # the warnings of the results used, "BASE <source>: ..."

    @property
    def ratio(self) -> float | None:
        return self.new / self.base if self.base > 0 and self.new > 0 else None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.key)
        for k in ROW_KEYS:
            out.setdefault(k, None)
        out.update(
            metric=self.metric,
            unit=metric_unit(self.metric),
            base=_round(self.base),
            new=_round(self.new),
            change_pct=_round(self.change_pct),
            change_abs=_round(self.change_abs),
            ci_low_pct=_round(self.ci_low_pct),
            ci_high_pct=_round(self.ci_high_pct),
            ci_low_abs=_round(self.ci_low_abs),
            ci_high_abs=_round(self.ci_high_abs),
            verdict=self.verdict,
            method=self.method,
            n_base=self.n_base,
            n_new=self.n_new,
            warnings=list(self.warnings),
        )
        return out


def _round(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.6g}")


def _verdict(metric: str, lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None or (lo <= 0.0 <= hi):
        return NOT_SIGNIFICANT
    up = lo > 0.0
    return IMPROVED if up == higher_is_better(metric) else REGRESSED


def _resamples(
    o: Observation, metric: str, gen: np.random.Generator, resamples: int
) -> np.ndarray | None:
    """Bootstrap replicates of one observation's metric, or None when it has no raw data."""
    r = o.result
    if r is None:
        return None
    if metric in LATENCY_METRICS:
        reps = stats.bootstrap_percentiles(
            r.duration_histogram, [LATENCY_METRICS[metric]], gen, resamples
        )
        return np.asarray(reps[:, 0] * 1e6)  # seconds -> µs, the rows' unit
    if metric == "errors":
        return stats.bootstrap_proportion(r.error_count, r.count, gen, resamples)
    m = RESOURCE_COMPARED.match(metric)
    if m is not None:
        block = r.resources.get(m["key"]) or {}
        samples = block.get("samples") if isinstance(block, Mapping) else None
        column = {"cpu_mili": 1, "mem_MB": 2}[m["metric"]]
        if isinstance(samples, list) and len(samples) >= 2:
            return stats.bootstrap_mean([s[column] for s in samples], gen, resamples)
    return None  # achieved QPS: one number per run, nothing inside it to resample


def compare_metric(
    key: tuple[tuple[str, Any], ...],
    metric: str,
    base: Sequence[Observation],
    new: Sequence[Observation],
    *,
    gen: np.random.Generator,
    resamples: int = stats.BOOTSTRAP_RESAMPLES,
    min_repeats: int = MIN_REPEATS,
) -> Change | None:
    """One metric of one matched test; None when a side has no value for it."""
    bo = [o for o in base if o.value(metric) is not None]
    no = [o for o in new if o.value(metric) is not None]
    if not bo or not no:
        return None
    bv = [o.value(metric) or 0.0 for o in bo]
    nv = [o.value(metric) or 0.0 for o in no]
    positive = all(v > 0 for v in (*bv, *nv))
    lo_pct = hi_pct = lo_abs = hi_abs = None
    repeats = len(bv) >= min_repeats and len(nv) >= min_repeats
    # A failed repeat leaves 2 on a side: the spread of 2 still measures run-to-run variation,
    # which a within-run bootstrap would ignore (wide, but honest; the method says 2 vs 3).
    if repeats or (min(len(bv), len(nv)) >= 2 and max(len(bv), len(nv)) >= min_repeats):
        method = f"{METHOD_REPEATS} ({len(bv)} vs {len(nv)})"
        if positive:
            b, n = stats.geomean(bv), stats.geomean(nv)
            _, rlo, rhi = stats.welch_ratio(bv, nv)
            lo_pct, hi_pct = 100 * (rlo - 1), 100 * (rhi - 1)
            lo_abs, hi_abs = b * (rlo - 1), b * (rhi - 1)
        else:
            b, n = sum(bv) / len(bv), sum(nv) / len(nv)
            _, lo_abs, hi_abs = stats.welch(bv, nv)
    else:
        b, n = sum(bv) / len(bv), sum(nv) / len(nv)
        reps_b = [_resamples(o, metric, gen, resamples) for o in bo]
        reps_n = [_resamples(o, metric, gen, resamples) for o in no]
        if all(x is not None for x in (*reps_b, *reps_n)):
            method = METHOD_BOOTSTRAP
            # A side's replicate is the mean of its runs' replicates, as its value is theirs.
            rb = np.mean(np.vstack([x for x in reps_b if x is not None]), axis=0)
            rn = np.mean(np.vstack([x for x in reps_n if x is not None]), axis=0)
            lo_abs, hi_abs = stats.interval_of(rb, rn)
            if b > 0 and bool(np.all(rb > 0)):
                rlo, rhi = stats.ratio_interval_of(rb, rn)
                lo_pct, hi_pct = 100 * (rlo - 1), 100 * (rhi - 1)
        else:
            method = METHOD_NONE
    change_pct = 100 * (n / b - 1) if b > 0 else None
    if lo_pct is None and lo_abs is not None and b > 0 and hi_abs is not None:
        lo_pct, hi_pct = 100 * lo_abs / b, 100 * hi_abs / b
    verdict = (
        _verdict(metric, lo_pct, hi_pct) if lo_pct is not None else _verdict(metric, lo_abs, hi_abs)
    )
    warnings = tuple(
        f"{side} {o.row.get('source') or o.row.get('Labels')}: {o.warnings}"
        for side, obs in (("base", bo), ("new", no))
        for o in obs
        if o.warnings
    )
    return Change(
        key, metric, b, n, change_pct, n - b, lo_pct, hi_pct, lo_abs, hi_abs, verdict, method,
        len(bv), len(nv), warnings,
    )  # fmt: skip


def metrics_of(observations: Iterable[Observation]) -> list[str]:
    """Latency, rate and errors always; CPU and memory of the proxies that have them."""
    names = [*LATENCY_METRICS, "qps", "errors"]
    resources = sorted({c for o in observations for c in o.row if RESOURCE_COMPARED.match(c)})
    return names + resources


def parse_match(text: str) -> tuple[str, ...]:
    cols = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in cols if c not in MATCH_COLUMNS]
    if bad or not cols:
        raise ConfigError(
            f"--match: unknown column {', '.join(bad) or '(none)'}; "
            f"choose from {', '.join(MATCH_COLUMNS)}"
        )
    return cols


@dataclasses.dataclass
class Comparison:
    base: Side
    new: Side
    match: tuple[str, ...]
    changes: list[Change]
    only_base: list[tuple[tuple[str, Any], ...]]
    only_new: list[tuple[tuple[str, Any], ...]]
    notes: list[str]

    def geomeans(self) -> dict[str, float]:
        """Per metric, the geometric mean of new/base over the matched tests (benchstat's)."""
        out: dict[str, float] = {}
        for metric in dict.fromkeys(c.metric for c in self.changes):
            ratios = [r for c in self.changes if c.metric == metric and (r := c.ratio)]
            if ratios:
                out[metric] = stats.geomean(ratios)
        return out

    def records(self) -> list[dict[str, Any]]:
        return [c.record() for c in self.changes]


def _group(
    observations: Sequence[Observation], match: Sequence[str]
) -> dict[tuple[tuple[str, Any], ...], list[Observation]]:
    groups: dict[tuple[tuple[str, Any], ...], list[Observation]] = {}
    for o in observations:
        key = tuple((c, o.key_value(c)) for c in match)
        groups.setdefault(key, []).append(o)
    return groups


def _key_sort(key: tuple[tuple[str, Any], ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for column, value in key:
        if column == "mode":
            order = ("baseline", "serversidecar", "clientonly", "both", "ingress", "waypoint")
            out.append((order.index(value) if value in order else len(order), str(value)))
        elif isinstance(value, int | float):
            out.append((0, float(value)))
        else:
            out.append((1, str(value)))
    return tuple(out)


def compare(
    base: Side,
    new: Side,
    *,
    match: Sequence[str] = DEFAULT_MATCH,
    seed: int = stats.SEED,
    resamples: int = stats.BOOTSTRAP_RESAMPLES,
    min_repeats: int = MIN_REPEATS,
) -> Comparison:
    """Every matched test and metric; raises ResultsError when no test is on both sides."""
    if not base.observations:
        raise ResultsError(f"{base.name}: no usable test result")
    if not new.observations:
        raise ResultsError(f"{new.name}: no usable test result")
    gb, gn = _group(base.observations, match), _group(new.observations, match)
    common = sorted((k for k in gb if k in gn), key=_key_sort)
    if not common:
        raise ResultsError(
            f"no test of {base.name} matches one of {new.name} on {', '.join(match)}",
            hint="--match COLUMNS chooses what makes two tests the same",
        )
    gen = stats.rng(seed)
    changes: list[Change] = []
    notes: list[str] = []
    for key in common:
        b, n = gb[key], gn[key]
        facts = dict(key)
        for k in ROW_KEYS:
            if k not in facts:
                facts[k] = b[0].key_value(k)
        full_key = tuple(facts.items())
        for metric in metrics_of([*b, *n]):
            c = compare_metric(
                full_key, metric, b, n, gen=gen, resamples=resamples, min_repeats=min_repeats
            )
            if c is not None:
                changes.append(c)
        for side, obs in ((base.name, b), (new.name, n)):
            labels = {str(o.row.get("extra_labels") or "") for o in obs}
            if len(labels) > 1:
                notes.append(
                    f"{side} {describe_key(full_key)}: repeats mix extra labels "
                    f"{', '.join(sorted(labels))} (add extra_labels to --match to separate them)"
                )
    only_base = sorted((k for k in gb if k not in gn), key=_key_sort)
    only_new = sorted((k for k in gn if k not in gb), key=_key_sort)
    return Comparison(base, new, tuple(match), changes, only_base, only_new, notes)


# -- text ----------------------------------------------------------------------------------------


def describe_key(key: Iterable[tuple[str, Any]]) -> str:
    parts: list[str] = []
    for column, value in key:
        if value in (None, ""):
            continue
        if column == "conn":
            parts.append(f"c{value}")
        elif column == "qps":
            parts.append("qmax" if not value else f"q{_num(value)}")
        elif column == "size":
            parts.append(f"{value}B")
        else:
            parts.append(str(value))
    return " ".join(parts) or "(all)"


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _display(metric: str, v: float) -> tuple[float, str]:
    """A value in the unit shown: latency in ms."""
    if metric in LATENCY_METRICS:
        return v / 1000.0, "ms"
    return v, metric_unit(metric)


def _fmt_value(metric: str, v: float) -> str:
    shown, _ = _display(metric, v)
    if metric in LATENCY_METRICS:
        return f"{shown:.3f}"
    if metric == "errors":
        return f"{shown:.2f}"
    return f"{shown:.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def format_change(c: Change) -> tuple[str, str]:
    """(change cell, interval cell) as shown in the table."""
    shown_abs, _ = _display(c.metric, c.change_abs)
    sign = "+" if shown_abs >= 0 else ""
    abs_text = f"{sign}{_fmt_value(c.metric, c.change_abs)}"
    change = f"{_pct(c.change_pct)} ({abs_text})" if c.change_pct is not None else abs_text
    if c.ci_low_pct is not None and c.ci_high_pct is not None:
        interval = f"[{c.ci_low_pct:+.1f}%, {c.ci_high_pct:+.1f}%]"
    elif c.ci_low_abs is not None and c.ci_high_abs is not None:
        interval = f"[{_fmt_value(c.metric, c.ci_low_abs)}, {_fmt_value(c.metric, c.ci_high_abs)}]"
    else:
        interval = "-"
    return change, interval


def _table(rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]


def _side_text(side: Side) -> str:
    runs = ", ".join(side.run_ids) if side.run_ids else "no run id"
    n = len(side.observations)
    return f"{side.name} ({n} result{'' if n == 1 else 's'}; run {runs})"


def _warning_summary(c: Change) -> str:
    """``base 2/3 results (behind 2, cpu-pressure 1); new 3/3 (...)``: causes counted."""
    parts: list[str] = []
    for side, total in (("base", c.n_base), ("new", c.n_new)):
        texts = [w.partition(": ")[2] for w in c.warnings if w.startswith(side + " ")]
        if not texts:
            continue
        counts: dict[str, int] = {}
        for t in texts:
            for code in dict.fromkeys(trust.codes(t)):
                counts[code] = counts.get(code, 0) + 1
        causes = ", ".join(f"{code} {n}" for code, n in counts.items())
        parts.append(f"{side} {len(texts)}/{total} results ({causes})")
    return "; ".join(parts)


def text_report(cmp: Comparison) -> str:
    """benchstat's layout: one block per metric, a line per test, the geometric mean last."""
    lines = [f"base: {_side_text(cmp.base)}", f"new:  {_side_text(cmp.new)}", ""]
    geo = cmp.geomeans()
    marked: list[Change] = []
    for metric in dict.fromkeys(c.metric for c in cmp.changes):
        rows_of = [c for c in cmp.changes if c.metric == metric]
        _, unit = _display(metric, rows_of[0].base)
        header = (f"{metric} ({unit})", "base", "new", "change", "95% CI", "verdict", "method")
        rows: list[tuple[str, ...]] = [header]
        for c in rows_of:
            change, interval = format_change(c)
            mark = " !" if c.warnings else ""
            if c.warnings:
                marked.append(c)
            rows.append(
                (
                    describe_key(c.key) + mark,
                    _fmt_value(metric, c.base),
                    _fmt_value(metric, c.new),
                    change,
                    interval,
                    c.verdict,
                    c.method,
                )
            )
        if metric in geo and len(rows_of) > 1:
            rows.append(("geomean", "", "", _pct(100 * (geo[metric] - 1)), "", "", ""))
        lines += _table(rows, {1, 2, 3})
        lines.append("")
    if marked:
        lines.append(
            "! results with warnings (their numbers may not be believed; each cause is in the "
            "--json rows and fortio.py's warnings column):"
        )
        seen: set[str] = set()
        for c in marked:
            line = f"  {describe_key(c.key)}: {_warning_summary(c)}"
            if line not in seen:
                seen.add(line)
                lines.append(line)
        lines.append("")
    for what, keys in (("only in base", cmp.only_base), ("only in new", cmp.only_new)):
        if keys:
            lines.append(f"{what} (not compared): {'; '.join(describe_key(k) for k in keys)}")
    lines += cmp.notes
    methods = {c.method.split(" (")[0] for c in cmp.changes}
    if METHOD_BOOTSTRAP in methods:
        lines.append(
            f"{METHOD_BOOTSTRAP}: fewer than {MIN_REPEATS} repeats per side, so the interval "
            "only covers the sampling noise inside each run; run with --repeat 3 or more for "
            "intervals that include run-to-run variation"
        )
    if any(RESOURCE_COMPARED.match(c.metric) and c.method.startswith(METHOD_REPEATS)
           for c in cmp.changes):  # fmt: skip
        lines.append(
            "CPU/memory: the repeats of one run share its proxy processes, so their interval "
            "misses what changes from one run's processes to the next; expect more false "
            "verdicts than for latency (docs/compare.md)"
        )
    if METHOD_NONE in methods:
        lines.append(f"{METHOD_NONE}: single values without raw data are never significant")
    return "\n".join(lines).rstrip() + "\n"


def json_text(cmp: Comparison) -> str:
    doc = {
        "base": {"sources": cmp.base.name, "run_ids": cmp.base.run_ids},
        "new": {"sources": cmp.new.name, "run_ids": cmp.new.run_ids},
        "match": list(cmp.match),
        "confidence": stats.CONFIDENCE,
        "rows": cmp.records(),
        "geomean_change_pct": {m: float(f"{100 * (g - 1):.6g}") for m, g in cmp.geomeans().items()},
        "only_base": [dict(k) for k in cmp.only_base],
        "only_new": [dict(k) for k in cmp.only_new],
    }
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


# -- the CI gate --------------------------------------------------------------------------------

_GATE = re.compile(r"^(?P<verdict>regressed|improved):(?P<metric>[A-Za-z0-9_*?\[\]]+)"
                   r"(?:>(?P<pct>[0-9]+(?:\.[0-9]+)?)%)?$")  # fmt: skip


def metric_matches(pattern: str, metric: str) -> bool:
    """A metric name or an fnmatch pattern (``cpu_*``), as --metrics and --fail-on take."""
    return fnmatch.fnmatchcase(metric, pattern)


@dataclasses.dataclass(frozen=True)
class Gate:
    """``regressed:p99>5%``: fail when a significant regression of p99 is over 5%."""

    verdict: str
    metric: str  # a name or an fnmatch pattern (cpu_mili_*)
    threshold_pct: float  # 0: any significant change

    @classmethod
    def parse(cls, text: str) -> Gate:
        m = _GATE.match(text.strip())
        if m is None:
            raise ValueError(
                f"{text!r} is not VERDICT:METRIC[>N%] (e.g. regressed:p99>5%, regressed:cpu_*)"
            )
        return cls(m["verdict"], m["metric"], float(m["pct"] or 0.0))

    def __str__(self) -> str:
        pct = f">{self.threshold_pct:g}%" if self.threshold_pct else ""
        return f"{self.verdict}:{self.metric}{pct}"

    def matches_metric(self, metric: str) -> bool:
        return metric_matches(self.metric, metric)

    def trips(self, c: Change) -> bool:
        if c.verdict != self.verdict or not self.matches_metric(c.metric):
            return False
        if not self.threshold_pct:
            return True
        return c.change_pct is not None and abs(c.change_pct) > self.threshold_pct


def check_gates(cmp: Comparison, gates: Sequence[Gate]) -> list[str]:
    """One line per change that trips a gate; raises ConfigError for a gate on no metric."""
    out: list[str] = []
    for g in gates:
        if not any(g.matches_metric(c.metric) for c in cmp.changes):
            have = ", ".join(dict.fromkeys(c.metric for c in cmp.changes))
            raise ConfigError(f"--fail-on {g}: no metric {g.metric} compared (have {have})")
        for c in cmp.changes:
            if g.trips(c):
                change, interval = format_change(c)
                out.append(f"{g}: {describe_key(c.key)} {c.metric} {change} {interval}")
    return out


# -- HTML ------------------------------------------------------------------------------------------

VERDICT_COLORS = {IMPROVED: "#2ca02c", REGRESSED: "#d62728", NOT_SIGNIFICANT: "#7f7f7f"}


def html_layout(cmp: Comparison) -> Any:
    """Bokeh: per metric, each test's change in % as a point with its 95% interval."""
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.models.annotations import Span
    from bokeh.models.widgets.markups import Div
    from bokeh.plotting import figure

    parts: list[Any] = [
        Div(
            text=f"<b>base</b> {html.escape(_side_text(cmp.base))}<br>"
            f"<b>new</b> {html.escape(_side_text(cmp.new))}",
            name="sides",
        )
    ]
    for metric in dict.fromkeys(c.metric for c in cmp.changes):
        rows = [c for c in cmp.changes if c.metric == metric and c.change_pct is not None]
        if not rows:
            continue
        names = [describe_key(c.key) + (" !" if c.warnings else "") for c in rows]
        lo = [c.ci_low_pct if c.ci_low_pct is not None else c.change_pct for c in rows]
        hi = [c.ci_high_pct if c.ci_high_pct is not None else c.change_pct for c in rows]
        source = ColumnDataSource(
            data={
                "test": names,
                "change": [c.change_pct for c in rows],
                "lo": lo,
                "hi": hi,
                "verdict": [c.verdict for c in rows],
                "method": [c.method for c in rows],
                "color": [VERDICT_COLORS[c.verdict] for c in rows],
                "base": [_fmt_value(metric, c.base) for c in rows],
                "new": [_fmt_value(metric, c.new) for c in rows],
                "warnings": ["; ".join(c.warnings) or "-" for c in rows],
            },
            name=f"data-{metric}",
        )
        _, unit = _display(metric, rows[0].base)
        p = figure(
            y_range=FactorRange(factors=list(reversed(names))),
            title=f"{metric}: change of new against base, with its 95% interval",
            x_axis_label=f"change of {metric} (%)",
            width=760,
            height=90 + 28 * len(rows),
            tools="pan,box_zoom,wheel_zoom,reset,save",
            name=f"compare-{metric}",
        )
        p.segment("lo", "test", "hi", "test", source=source, color="color", line_width=3)
        points = p.scatter("change", "test", source=source, color="color", size=9)
        p.add_layout(Span(location=0, dimension="height", line_color="#333", line_width=1))
        p.add_tools(
            HoverTool(
                renderers=[points],
                tooltips=[
                    ("test", "@test"),
                    (f"base ({unit})", "@base"),
                    (f"new ({unit})", "@new"),
                    ("change", "@change{+0.0}%"),
                    ("95% CI", "[@lo{+0.0}%, @hi{+0.0}%]"),
                    ("verdict", "@verdict"),
                    ("method", "@method"),
                    ("warnings", "@warnings"),
                ],
            )
        )
        parts.append(p)
    return column(*parts)


def write_html(cmp: Comparison, path: Path) -> Path:
    from meshperf.graphing.export import write_html as write_page

    return write_page(html_layout(cmp), path, "meshperf compare")


# -- within one run: each mode's overhead over baseline ------------------------------------------

OVERHEAD_METRICS: tuple[str, ...] = ("p50", "p90", "p99")


def overhead(
    base: Mapping[int, float], mode: Mapping[int, float]
) -> tuple[float, float | None, float | None, str]:
    """(mean overhead, low, high, how) of ``mode`` over ``base``, values keyed by repeat.

    ``--repeat`` interleaves the modes, so repeat i of a mode ran next to repeat i of the
    baseline: the differences of those pairs cancel what drifted between repeats (a paired t
    interval). Without common repeats, Welch's interval of the two means; one value each, no
    interval.
    """
    common = sorted(set(base) & set(mode))
    if len(common) >= 2:
        m, lo, hi = stats.mean_interval([mode[i] - base[i] for i in common])
        return m, lo, hi, f"paired, {len(common)} repeats"
    if len(base) >= 2 and len(mode) >= 2:
        d, lo, hi = stats.welch(list(base.values()), list(mode.values()))
        return d, lo, hi, f"{len(base)} vs {len(mode)} repeats"
    d = sum(mode.values()) / len(mode) - sum(base.values()) / len(base)
    return d, None, None, "single run"


def format_overhead(ms: float, lo: float | None, hi: float | None) -> str:
    """``+0.59 ms [0.55, 0.63]`` (the interval only when there is one)."""
    text = f"{ms:+.2f} ms"
    if lo is not None and hi is not None:
        text += f" [{lo:.2f}, {hi:.2f}]"
    return text


def overhead_lines(cells: Iterable[tuple[Mapping[str, Any], Mapping[str, float]]]) -> list[str]:
    """The runner summary's overhead block from (test facts, stats) per finished test.

    Facts: mode, conn, qps, size, extra_labels, repeat; stats: p50_ms, p90_ms, p99_ms.
    """
    groups: dict[tuple[Any, ...], dict[str, dict[int, Mapping[str, float]]]] = {}
    for facts, st in cells:
        if not st or facts.get("repeat") is None:
            continue
        key = tuple(facts.get(k) for k in ("conn", "qps", "size", "extra_labels"))
        modes = groups.setdefault(key, {})
        modes.setdefault(str(facts["mode"]), {})[int(facts["repeat"])] = st
    lines: list[str] = []
    for key, modes in groups.items():
        base = modes.get("baseline")
        if not base:
            continue
        conn, qps, size, extra = key
        where = describe_key([("conn", conn), ("qps", qps), ("size", size), ("x", extra)])
        for mode, by_repeat in modes.items():
            if mode == "baseline":
                continue
            parts, how = [], ""
            for metric in OVERHEAD_METRICS:
                col = f"{metric}_ms"
                b = {i: s[col] for i, s in base.items() if col in s}
                m = {i: s[col] for i, s in by_repeat.items() if col in s}
                if not b or not m:
                    continue
                d, lo, hi, how = overhead(b, m)
                parts.append(f"{metric} {format_overhead(d, lo, hi)}")
            if parts:
                lines.append(f"  {mode} {where}: {'  '.join(parts)}  ({how})")
    if lines:
        lines.insert(0, "overhead over baseline, mean and 95% interval:")
    return lines
