"""The chart model: series of points, titles and notes, built from normalized CSV tables.

Pure data, no Bokeh: ``build_chart`` groups the rows into series and pairs their points by x
(sorted by x, never by position); ``overhead_chart`` subtracts the baseline. The renderer only
draws what a ``Chart`` holds. Library functions return notes for the user instead of printing;
only the CLI decides where they go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from meshperf.errors import ConfigError, ResultsError
from meshperf.graphing.csvread import LoadedCsv
from meshperf.graphing.names import (
    FORMAT_ISTIO_TOOLS,
    ISTIO_TOOLS_PROXY_KEYS,
    LATENCY_METRICS,
    METRICS,
    MODE_ORDER,
    OUR_PROXY_KEYS,
    PROXIES,
    PROXY_TITLES,
    RESOURCE_METRICS,
    STATS,
    XAXES,
    fmt_number,
    fmt_qps,
)
from meshperf.stats import welch


@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a chart: points sorted by x, each the mean of the rows at that x.

    A series holds the rows of one test identity (source, mesh, platform, protocol, setup,
    variant, mode and the split dimensions); rows are repeats only when all of these are
    equal. ``y_min``/``y_max`` are the spread of the repeats at each x.
    """

    name: str
    mesh: str
    mode: str
    variant: str
    source: str
    held: tuple[tuple[str, float], ...]  # values of split dimensions (other axis, size)
    x: tuple[float, ...]
    y: tuple[float, ...]
    runs: tuple[int, ...]  # runs in each point (rows, or the repeats an aggregated row holds)
    actual_qps: tuple[float, ...]
    labels: tuple[str, ...]
    baseline: str = ""  # overhead series: the baseline series subtracted
    platform: str = ""
    protocol: str = ""
    setup: str = ""  # rows without a mode: their Labels value (or the --series column's)
    base_name: str = ""  # the name without split dimensions and file name
    run_ids: frozenset[str] = frozenset()
    y_min: tuple[float, ...] = ()
    y_max: tuple[float, ...] = ()
    values: tuple[tuple[float, ...], ...] = ()  # the repeats' values at each x
    warnings: tuple[str, ...] = ()  # meshperf.trust causes of the rows at each x ("" = none)
    interval: bool = False  # overhead: y_min/y_max are its 95% interval, not the spread

    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.x, self.y, strict=True))

    def spread(self) -> list[tuple[float, float, float]]:
        """(x, min, max) of the repeats at each x."""
        return list(zip(self.x, self.y_min, self.y_max, strict=True))


# Why an overhead series was not drawn: (cause, series name, detail for the example).
Skip = tuple[str, str, str]


@dataclasses.dataclass(frozen=True)
class Chart:
    """Everything a figure shows; ``make_figure`` only draws it."""

    metric: str  # p50.., cpu, mem, or overhead-p50..
    xaxis: str
    title: str
    x_label: str
    y_label: str
    series: tuple[Series, ...]
    notes: tuple[str, ...] = ()
    y_format: str = "0.000"
    skipped: tuple[Skip, ...] = ()  # overhead charts: the series left out, and why

    def by_name(self) -> dict[str, Series]:
        return {s.name: s for s in self.series}


def _axis_column(xaxis: str) -> str:
    if xaxis not in XAXES:
        raise ConfigError(f"unknown x axis {xaxis!r}; expected one of {', '.join(XAXES)}")
    return "conn" if xaxis == "connections" else "qps"


def _metric_values(
    data: LoadedCsv, metric: str, proxy: str, stat: str
) -> tuple[pd.Series, str, list[str]]:
    """The y values of ``metric`` for one CSV, the statistic used and notes."""
    t = data.table
    if metric in LATENCY_METRICS:
        if t[metric].isna().all():
            raise ResultsError(
                f"{data.path}: no {metric} column (latency percentile), or no value in it"
            )
        return t[metric], "", []
    if metric not in RESOURCE_METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if proxy not in PROXIES:
        raise ConfigError(f"unknown proxy {proxy!r}; expected one of {', '.join(PROXIES)}")
    if stat not in STATS:
        raise ConfigError(f"unknown statistic {stat!r}; expected one of {', '.join(STATS)}")
    have = [s for s in STATS if f"{metric}_{proxy}_{s}" in t]
    if stat in have:
        return t[f"{metric}_{proxy}_{stat}"], stat, []
    if len(have) == 1:
        note = (
            f"{data.name}: only the {have[0]} of {metric} of the {PROXY_TITLES[proxy]} is in "
            f"the CSV; plotting it instead of the {stat}"
        )
        return t[f"{metric}_{proxy}_{have[0]}"], have[0], [note]
    if have:
        raise ResultsError(
            f"{data.path}: no {stat} of {metric} for the {PROXY_TITLES[proxy]}; "
            f"choose --stat {' or '.join(have)}"
        )
    prefix = (
        "cpu_mili"
        if metric == "cpu"
        else ("mem_Mi" if data.format == FORMAT_ISTIO_TOOLS else "mem_MB")
    )
    key = (
        (ISTIO_TOOLS_PROXY_KEYS[proxy] or (OUR_PROXY_KEYS[proxy],))[0]
        if (data.format == FORMAT_ISTIO_TOOLS)
        else OUR_PROXY_KEYS[proxy]
    )
    raise ResultsError(
        f"{data.path}: missing column {prefix}_{stat}_{key} ({metric} of the {PROXY_TITLES[proxy]})"
    )


def _mode_rank(mode: str) -> tuple[int, str]:
    return (MODE_ORDER.index(mode), "") if mode in MODE_ORDER else (len(MODE_ORDER), mode)


@dataclasses.dataclass(frozen=True)
class _Rows:
    """The rows of one metric from every CSV, with the y value in column ``y``."""

    rows: pd.DataFrame
    stats_used: frozenset[str]
    notes: tuple[str, ...]


def _gather(datas: Sequence[LoadedCsv], metric: str, proxy: str, stat: str, xcol: str) -> _Rows:
    notes: list[str] = []
    frames: list[pd.DataFrame] = []
    stats_used: set[str] = set()
    for d in datas:
        y, used, more = _metric_values(d, metric, proxy, stat)
        notes.extend(more)
        if used:
            stats_used.add(used)
        # The spread a row brings: its repeats' min and max when the CSV holds them
        # (fortio.py --aggregate writes <metric>_min/_max), else its own value.
        lo, hi = (
            (d.table[f"{metric}_lo"], d.table[f"{metric}_hi"])
            if f"{metric}_lo" in d.table
            else (y, y)
        )
        f = d.table.assign(y=y, y_lo=lo.fillna(y), y_hi=hi.fillna(y))
        missing = f["y"].isna()
        if missing.all():
            notes.append(f"{d.name}: no {metric} values")
        elif missing.any():
            notes.append(f"{d.name}: {int(missing.sum())} rows without a {metric} value skipped")
        frames.append(f[~missing])
    rows = pd.concat(frames, ignore_index=True)
    if rows.empty:
        raise ResultsError(f"no {metric} values in {', '.join(d.name for d in datas)}")
    return _Rows(rows[rows[xcol].notna()], frozenset(stats_used), tuple(notes))


def _hold(rows: pd.DataFrame, metric: str, other: str, value: float) -> pd.DataFrame:
    """Only the rows whose other axis has ``value``; an error lists the values there are."""
    have = sorted(set(rows[other].dropna()))
    kept = rows[(rows[other] - float(value)).abs() <= 1e-9 * max(1.0, abs(value))]
    if kept.empty:
        raise ResultsError(
            f"no {metric} rows with {other} {fmt_number(value)}; the CSV has "
            f"{', '.join(fmt_number(v) for v in have) or 'none'}"
        )
    return kept


def _split_dimensions(rows: pd.DataFrame, other: str) -> tuple[list[str], list[str]]:
    """The dimensions (other axis, payload size) with several values: a series per value."""
    split: list[str] = []
    notes: list[str] = []
    for dim in (other, "size"):
        values = sorted(set(rows[dim].dropna()))
        if len(values) > 1:
            split.append(dim)
            unit = {"qps": "qps", "conn": "connections", "size": "byte payloads"}[dim]
            shown = ", ".join(fmt_qps(v) if dim == "qps" else fmt_number(v) for v in values)
            notes.append(
                f"the rows mix {unit} ({shown}): plotting one series per value"
                + (f"; pick one with --{other}" if dim == other else "")
            )
    return split, notes


# What tells series apart, beyond the split dimensions. Rows equal in all of them are repeats.
IDENTITY: tuple[str, ...] = ("source", "mesh", "platform", "protocol", "setup", "variant", "mode")
# Dimensions a series name shows only when the chart's rows differ in them.
_NAMED_WHEN_DIFFERENT: tuple[str, ...] = ("mesh", "platform", "protocol")


def _core_name(key: dict[str, Any]) -> str:
    mode_part = (
        f"{key['variant']}_{key['mode']}"
        if key["variant"] and key["mode"]
        else (key["mode"] or key["variant"])
    )
    return " ".join(x for x in (key["setup"], mode_part) if x)


# How a split dimension's value reads in a series name: "500 qps", "16 conn", "1024 B".
_DIMENSION_UNITS: dict[str, str] = {"qps": "qps", "conn": "conn", "size": "B"}
_DIMENSION_WORDS: dict[str, str] = {"qps": "qps", "conn": "connections", "size": "payload size"}


def _held_values(held: Sequence[tuple[str, float]]) -> str:
    """``500 qps, 1024 B``: the values a series holds its split dimensions at."""
    return ", ".join(
        f"{fmt_qps(v) if d == 'qps' else fmt_number(v)} {_DIMENSION_UNITS[d]}" for d, v in held
    )


def _series_name(
    key: dict[str, Any], split: Sequence[str], shown: Sequence[str], with_source: bool
) -> tuple[str, str]:
    """The series' name and its base name (without split dimensions and file name)."""
    base = " ".join(x for x in (*(key[d] for d in shown), _core_name(key)) if x)
    held = _held_values([(d, key[d]) for d in split])
    name = base + (f" @ {held}" if held else "")
    if with_source:
        name += f" ({key['source']})"
    return name, base


def _shown_dimensions(
    keys: Sequence[dict[str, Any]], split: Sequence[str], n_csvs: int
) -> list[str]:
    """Which of mesh, platform and protocol the names show: those needed to tell apart series
    that would otherwise share a name (mesh also when the rows have several, or come from
    several CSVs, so a legend says whose line it is)."""
    meshes = {k["mesh"] for k in keys}
    shown = ["mesh"] if (len(meshes) > 1 or n_csvs > 1) and meshes != {""} else []
    for dim in _NAMED_WHEN_DIFFERENT:
        if dim in shown:
            continue
        seen: dict[str, set[str]] = {}
        for k in keys:
            seen.setdefault(_series_name(k, split, shown, False)[0], set()).add(k[dim])
        if any(len(v) > 1 for v in seen.values()):
            shown.append(dim)
    return [d for d in _NAMED_WHEN_DIFFERENT if d in shown]


def _warning_union(cells: pd.Series) -> str:
    """Every cause named by the rows of one point (``; ``-separated, as fortio.py writes)."""
    parts = (w.strip() for v in cells for w in str(v).split(";"))
    return "; ".join(dict.fromkeys(w for w in parts if w and w != "nan"))


def _make_series(
    rows: pd.DataFrame, xcol: str, split: Sequence[str], n_csvs: int
) -> tuple[list[Series], int]:
    """A series per identity, points grouped by x; also how many points averaged repeats."""
    keys = [*IDENTITY, *split]
    keyed = [
        (dict(zip(keys, k, strict=True)), g)
        for k, g in rows.groupby(keys, sort=False, dropna=False)
    ]
    shown = _shown_dimensions([k for k, _ in keyed], split, n_csvs)
    plain = [_series_name(k, split, shown, False)[0] for k, _ in keyed]
    clash = {n for n in plain if plain.count(n) > 1}
    series: list[Series] = []
    averaged = 0
    for (key, g), pname in zip(keyed, plain, strict=True):
        agg = g.groupby(xcol, sort=True).agg(
            y=("y", "mean"),
            y_min=("y_lo", "min"),
            y_max=("y_hi", "max"),
            rows=("y", "size"),
            runs=("repeats", "sum"),
            actual_qps=("actual_qps", "mean"),
            label=("label", lambda s: " | ".join(dict.fromkeys(str(v) for v in s))),
            values=("y", lambda s: tuple(float(v) for v in s)),
            warnings=("warnings", _warning_union),
        )
        averaged += int((agg["rows"] > 1).sum())
        name, base = _series_name(key, split, shown, pname in clash)
        series.append(
            Series(
                name=name,
                base_name=base,
                mesh=str(key["mesh"]),
                platform=str(key["platform"]),
                protocol=str(key["protocol"]),
                setup=str(key["setup"]),
                mode=str(key["mode"]),
                variant=str(key["variant"]),
                source=str(key["source"]),
                held=tuple((dim, float(key[dim])) for dim in split),
                run_ids=frozenset(str(v) for v in g["run_id"] if str(v)),
                x=tuple(float(v) for v in agg.index),
                y=tuple(float(v) for v in agg["y"]),
                y_min=tuple(float(v) for v in agg["y_min"]),
                y_max=tuple(float(v) for v in agg["y_max"]),
                runs=tuple(int(v) for v in agg["runs"]),
                actual_qps=tuple(float(v) for v in agg["actual_qps"]),
                labels=tuple(str(v) for v in agg["label"]),
                values=tuple(agg["values"]),
                warnings=tuple(str(v) for v in agg["warnings"]),
            )
        )
    sources = list(dict.fromkeys(rows["source"]))
    series.sort(
        key=lambda s: (
            sources.index(s.source), s.mesh, s.platform, s.protocol, s.setup, s.variant,
            _mode_rank(s.mode), s.held,
        )
    )  # fmt: skip
    return series, averaged


def _held_text(rows: pd.DataFrame, other: str, split: Sequence[str]) -> str:
    if other in split:
        return f"; {'qps' if other == 'qps' else 'connections'} varies (a series per value)"
    values = sorted(set(rows[other].dropna()))
    if not values:
        return ""
    if other == "qps":
        return f" at {fmt_qps(values[0])} qps"
    return f" at {fmt_number(values[0])} connections"


def _labels(
    datas: Sequence[LoadedCsv], metric: str, proxy: str, stats_used: frozenset[str]
) -> tuple[str, str, str]:
    """What the y axis shows (for the title), its label and its hover number format."""
    if metric in LATENCY_METRICS:
        return f"{metric} latency", f"{metric} latency (ms)", "0.000"
    stat_text = "/".join(sorted(stats_used, key=STATS.index))
    what = f"{PROXY_TITLES[proxy]} {'CPU' if metric == 'cpu' else 'memory'} ({stat_text})"
    if metric == "cpu":
        return what, f"{stat_text} CPU (millicores)", "0.0"
    units = "/".join(sorted({d.mem_unit for d in datas}))
    return what, f"{stat_text} memory ({units})", "0.0"


def _who(rows: pd.DataFrame) -> str:
    """The title's subject: the meshes and platforms the rows recorded (none when unknown)."""
    meshes = ", ".join(sorted(set(rows["mesh"]) - {""}))
    platforms = ", ".join(sorted(set(rows["platform"]) - {""}))
    who = f"{meshes} on {platforms}" if meshes and platforms else (meshes or platforms)
    return f"{who}: " if who else ""


def build_chart(
    datas: Sequence[LoadedCsv],
    metric: str,
    xaxis: str = "connections",
    *,
    qps: float | None = None,
    conn: int | None = None,
    proxy: str = "server",
    stat: str = "max",
) -> Chart:
    """Group the rows of every CSV into series and pair their points by x.

    ``qps`` (x = connections) or ``conn`` (x = qps) keeps only the rows with that value of the
    other axis. Without it, each distinct value of the other axis becomes its own series, as does
    each payload size, so no line ever mixes them.
    """
    if not datas:
        raise ConfigError("no CSV given")
    xcol = _axis_column(xaxis)
    other = "qps" if xcol == "conn" else "conn"
    if xaxis == "connections" and conn is not None:
        raise ConfigError("--conn holds connections constant; with --xaxis connections use --qps")
    if xaxis == "qps" and qps is not None:
        raise ConfigError("--qps holds QPS constant; with --xaxis qps use --conn")
    held_value = qps if xcol == "conn" else conn

    gathered = _gather(datas, metric, proxy, stat, xcol)
    notes = list(gathered.notes)
    rows = gathered.rows
    if held_value is not None:
        rows = _hold(rows, metric, other, held_value)
    split, more = _split_dimensions(rows, other)
    notes.extend(more)
    for dim in split:
        rows = rows.assign(**{dim: rows[dim].fillna(-1.0)})

    series, averaged = _make_series(rows, xcol, split, len(datas))
    if averaged:
        notes.append(
            "points with several rows at the same x (repeats) show their mean; "
            "hover shows how many runs"
        )
    x_label = "connections" if xcol == "conn" else "requested QPS"
    what, y_label, y_format = _labels(datas, metric, proxy, gathered.stats_used)
    return Chart(
        metric=metric,
        xaxis=xaxis,
        title=_who(rows) + f"{what} vs {x_label}{_held_text(rows, other, split)}",
        x_label=x_label,
        y_label=y_label,
        series=tuple(series),
        notes=tuple(notes),
        y_format=y_format,
    )


def _baseline_for(
    s: Series, baselines: Sequence[Series], explicit: bool
) -> tuple[Series | None, Skip | None]:
    """The baseline a series is compared with, or why there is none.

    Same held values always (the same other-axis value and payload size). Then, in order:
    the same test but for the mode; the same run (a run id in common: istio/tools runs one
    baseline per run, not per telemetry variant); the same CSV and mesh; the mesh's only
    baseline; a ``none`` mesh's; the only mesh's. ``explicit``: the user named the baseline
    series (``--baseline-series``), so any one of it at the same held values will do.
    """
    same_held = [b for b in baselines if b.held == s.held]
    if not same_held:
        what = " and ".join(_DIMENSION_WORDS[d] for d, _ in s.held) or "values"
        return None, (f"no baseline at the same {what}", s.name, "")

    def ident(x: Series) -> tuple[str, ...]:
        return (x.source, x.mesh, x.platform, x.protocol)

    picks = (
        [same_held, [b for b in same_held if b.source == s.source]]
        if explicit
        else [
            [
                b
                for b in same_held
                if ident(b) == ident(s) and (b.setup, b.variant) == (s.setup, s.variant)
            ],
            [b for b in same_held if ident(b) == ident(s) and b.run_ids & s.run_ids],
            [b for b in same_held if ident(b) == ident(s)],
            [
                b
                for b in same_held
                if (b.mesh, b.platform, b.protocol) == (s.mesh, s.platform, s.protocol)
            ],
            [b for b in same_held if b.mesh == s.mesh],
            [b for b in same_held if b.mesh in ("none", "baseline")],
            same_held if len({b.mesh for b in same_held}) == 1 else [],
        ]
    )
    for pick in picks:
        if len(pick) == 1:
            return pick[0], None
    names = ", ".join(sorted(b.name for b in same_held))
    return None, (
        "several baselines could apply; name one with --baseline-series", s.name,
        f" (candidates: {names})",
    )  # fmt: skip


def summarize_skips(skips: Sequence[tuple[str, Skip]]) -> list[str]:
    """One note per cause, with how many series it hit and one example.

    ``skips`` pairs a metric with a skip; a cause seen in several overhead charts (p50, p90,
    ...) is one line naming them all.
    """
    by_cause: dict[str, tuple[list[str], dict[str, None], tuple[str, str]]] = {}
    for metric, (cause, name, detail) in skips:
        metrics, names, _ = by_cause.setdefault(cause, ([], {}, (name, detail)))
        if metric not in metrics:
            metrics.append(metric)
        names[name] = None
    return [
        f"overhead {', '.join(metrics)}: {len(names)} series not drawn: {cause}; "
        f"e.g. {example!r}{detail}"
        for cause, (metrics, names, (example, detail)) in by_cause.items()
    ]


def overhead_chart(chart: Chart, baseline_series: str | None = None) -> Chart:
    """Each non-baseline series minus its baseline at the same x (only x values both have).

    The one place the overhead is computed. ``baseline_series`` names the series to subtract
    (its name, or its name without the `` @ ...`` split values); by default the ``baseline``
    mode's series are the candidates.
    """
    if chart.metric not in LATENCY_METRICS:
        raise ConfigError(f"overhead is computed for latency, not {chart.metric}")
    if baseline_series is not None:
        baselines = [s for s in chart.series if baseline_series in (s.name, s.base_name)]
        if not baselines:
            have = ", ".join(dict.fromkeys(s.base_name or s.name for s in chart.series))
            raise ConfigError(
                f"--baseline-series {baseline_series!r}: no such series in the {chart.metric} "
                f"chart; the series are: {have}"
            )
    else:
        baselines = [s for s in chart.series if s.mode == "baseline"]
    notes: list[str] = []
    skipped: list[Skip] = []
    out: list[Series] = []
    if not baselines:
        notes.append(
            f"{chart.metric}: no baseline rows, so no overhead view"
            + ("; name a series with --baseline-series" if chart.series else "")
        )
    for s in chart.series:
        # A baseline minus a baseline is no proxy's cost: those series are left out.
        if s in baselines or s.mode == "baseline" or not baselines:
            continue
        b, why = _baseline_for(s, baselines, baseline_series is not None)
        if b is None:
            assert why is not None
            skipped.append(why)
            continue
        base = dict(zip(b.x, b.y, strict=True))
        idx = [i for i, x in enumerate(s.x) if x in base]
        if not idx:
            skipped.append(("no x value in common with its baseline", s.name, f" ({b.name})"))
            continue
        # With repeats on both sides the whiskers are the overhead's 95% interval (Welch's,
        # between repeats: meshperf.stats), not the spread of one side.
        lows, highs = [], []
        b_at = dict(zip(b.x, b.values or [()] * len(b.x), strict=True))
        b_warn = dict(zip(b.x, b.warnings or [""] * len(b.x), strict=True))
        for i in idx:
            mine, theirs = (s.values[i] if s.values else ()), b_at[s.x[i]]
            lo = hi = None
            if len(mine) >= 2 and len(theirs) >= 2:
                _, lo, hi = welch(list(theirs), list(mine))
            lows.append(s.y[i] - base[s.x[i]] if lo is None else lo)
            highs.append(s.y[i] - base[s.x[i]] if hi is None else hi)
        warn = [
            "; ".join(w for w in ((s.warnings[i] if s.warnings else ""), b_warn[s.x[i]]) if w)
            for i in idx
        ]
        out.append(
            dataclasses.replace(
                s,
                baseline=b.name,
                x=tuple(s.x[i] for i in idx),
                y=tuple(s.y[i] - base[s.x[i]] for i in idx),
                y_min=tuple(lows),
                y_max=tuple(highs),
                interval=True,
                warnings=tuple(warn),
                runs=tuple(s.runs[i] for i in idx),
                actual_qps=tuple(s.actual_qps[i] for i in idx),
                labels=tuple(s.labels[i] for i in idx),
            )
        )
    notes.extend(summarize_skips([(chart.metric, x) for x in skipped]))
    title = chart.title.replace(f"{chart.metric} latency", f"{chart.metric} added latency", 1)
    return Chart(
        metric=f"overhead-{chart.metric}",
        xaxis=chart.xaxis,
        title=title,
        x_label=chart.x_label,
        y_label=f"{chart.metric} minus baseline (ms)",
        series=tuple(out),
        notes=tuple(notes),
        y_format=chart.y_format,
        skipped=tuple(skipped),
    )


def build_all(
    datas: Sequence[LoadedCsv],
    xaxis: str = "connections",
    *,
    qps: float | None = None,
    conn: int | None = None,
    proxy: str = "server",
    stat: str = "max",
    baseline_series: str | None = None,
) -> tuple[list[Chart], list[Chart], list[str]]:
    """The charts of the ``all`` page: every metric the CSVs have, then the overhead view.

    Returns the metric charts, the overhead charts and the notes (a metric that cannot be
    drawn is a note, not an error; the overhead view's skipped series summed up, one line per
    cause for all percentiles together). ResultsError when no metric can be drawn at all.
    """
    opts: dict[str, Any] = {"qps": qps, "conn": conn, "proxy": proxy, "stat": stat}
    charts: list[Chart] = []
    notes: list[str] = []
    for m in (*LATENCY_METRICS, *RESOURCE_METRICS):
        try:
            c = build_chart(datas, m, xaxis, **opts)
        except ResultsError as e:
            notes.append(f"{m}: not drawn: {e}")
            continue
        notes.extend(c.notes)
        if c.series:
            charts.append(c)
    if not charts:
        load_notes = [n for d in datas for n in d.notes]
        raise ResultsError("no metric could be plotted: " + "; ".join([*load_notes, *notes]))
    overheads: list[Chart] = []
    skips: list[tuple[str, Skip]] = []
    without_baseline: list[str] = []
    for c in (c for c in charts if c.metric in LATENCY_METRICS):
        o = overhead_chart(c, baseline_series)
        skips.extend((c.metric, x) for x in o.skipped)
        if baseline_series is None and not any(s.mode == "baseline" for s in c.series):
            without_baseline.append(c.metric)
        if o.series:
            overheads.append(o)
    if without_baseline:
        notes.append(
            f"{', '.join(without_baseline)}: no baseline rows, so no overhead view; "
            "name a series to subtract with --baseline-series"
        )
    notes.extend(summarize_skips(skips))
    return charts, overheads, notes
