"""Read benchmark CSVs and turn them into Bokeh charts (the library behind ``runner/graph.py``).

Three CSV shapes are read, detected from their header:

* ``meshperf``: ours, written by ``runner/fortio.py``. Mode, mesh, conn and requested QPS are
  columns of their own; latency percentiles are integer microseconds; resources are
  ``cpu_mili_<stat>_<key>`` and ``mem_MB_<stat>_<key>``.
* ``istio2019``: the 2019 scripts' CSV (``--csv StartTime,ActualDuration,Labels,NumThreads,...``).
  Mode, requested QPS and label variant live only in the ``Labels`` value
  (``<run>_qps_<n>_c_<n>_<size>[_<variant>]_<base|serveronly|both|ingress>``); conn is
  ``NumThreads``. Resources use the same column names as ours.
* ``istio-tools``: today's istio/tools pipeline. Same label shape (the variant is the telemetry
  mode, e.g. ``v2-sd-full-nullvm``), resources named after container and pod:
  ``cpu_mili_avg_istio_proxy_fortioserver``, ``mem_Mi_avg_istio_proxy_fortioclient``, ...;
  usually only the average is recorded.

Every shape is normalized into one table (``LoadedCsv.table``) with the columns listed in
``NORMALIZED_COLUMNS`` plus ``<cpu|mem>_<proxy>_<stat>`` resource columns, so the chart code does
not care where a row came from. Points of a series are paired by their x value and sorted by it,
never by position. Library functions return notes for the user instead of printing; only the
CLI decides where they go.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from meshperf.errors import ConfigError, ResultsError
from meshperf.platform import (
    MODES,
    RESOURCE_CLIENT_PROXY,
    RESOURCE_INGRESS_PROXY,
    RESOURCE_SERVER_PROXY,
)

if TYPE_CHECKING:
    from bokeh.models.ui.ui_element import UIElement
    from bokeh.plotting import figure as Figure  # noqa: N812
    from selenium.webdriver.remote.webdriver import WebDriver

LATENCY_METRICS: tuple[str, ...] = ("p50", "p90", "p99", "p999")
RESOURCE_METRICS: tuple[str, ...] = ("cpu", "mem")
METRICS: tuple[str, ...] = (*LATENCY_METRICS, *RESOURCE_METRICS, "all")
XAXES: tuple[str, ...] = ("connections", "qps")
PROXIES: tuple[str, ...] = ("server", "client", "ingress", "ztunnel", "waypoint")
STATS: tuple[str, ...] = ("min", "avg", "max")

FORMAT_MESHPERF = "meshperf"
FORMAT_ISTIO2019 = "istio2019"
FORMAT_ISTIO_TOOLS = "istio-tools"
FORMAT_DESCRIPTIONS: dict[str, str] = {
    FORMAT_MESHPERF: "meshperf (runner/fortio.py)",
    FORMAT_ISTIO2019: "2019 perf/benchmark scripts (mode from the Labels suffix)",
    FORMAT_ISTIO_TOOLS: "istio/tools perf/benchmark pipeline (istio_proxy resource columns)",
}

NORMALIZED_COLUMNS: tuple[str, ...] = (
    "source",
    "mesh",
    "mode",
    "variant",
    "conn",
    "qps",
    "size",
    "actual_qps",
    "label",
    *LATENCY_METRICS,
)

# Our resource keys (also the 2019 scripts' Prometheus names) for each --proxy choice.
OUR_PROXY_KEYS: dict[str, str] = {
    "server": RESOURCE_SERVER_PROXY,
    "client": RESOURCE_CLIENT_PROXY,
    "ingress": RESOURCE_INGRESS_PROXY,
    # Ambient mode's proxies, as runner/fortio.py names them (meshperf.prom).
    "ztunnel": "ztunnel",
    "waypoint": "waypoint_proxy",
}
# istio/tools names columns <container>_<pod>; Linkerd runs of it name the container linkerd-proxy.
ISTIO_TOOLS_PROXY_KEYS: dict[str, tuple[str, ...]] = {
    "server": ("istio_proxy_fortioserver", "linkerd_proxy_fortioserver"),
    "client": ("istio_proxy_fortioclient", "linkerd_proxy_fortioclient"),
    "ingress": ("istio_proxy_istio-ingressgateway", "istio_proxy_ingressgateway"),
    "ztunnel": (),
    "waypoint": (),
}
PROXY_TITLES: dict[str, str] = {
    "server": "server sidecar",
    "client": "client sidecar",
    "ingress": "ingress gateway",
    "ztunnel": "ztunnel",
    "waypoint": "waypoint",
}

# Label suffixes written by the 2019 runner (base/serveronly/both/ingress) and by later
# istio/tools runners (baseline, clientonly).
LABEL_SUFFIX_MODE: dict[str, str] = {
    "base": "baseline",
    "baseline": "baseline",
    "serveronly": "serversidecar",
    "clientonly": "clientsidecar",
    "both": "both",
    "ingress": "ingress",
    "waypoint": "waypoint",
}
MODE_ORDER: tuple[str, ...] = (*MODES[:2], "clientsidecar", *MODES[2:])

_LABEL_RE = re.compile(
    r"^(?P<run>[^_]+)_qps_(?P<qps>[0-9.]+|max)_c_(?P<conn>\d+)_(?P<size>\d+)"
    r"(?:_(?P<variant>.+?))?_(?P<mode>" + "|".join(LABEL_SUFFIX_MODE) + r")$"
)
_LABEL_SUFFIX_RE = re.compile(r"_(?P<mode>" + "|".join(LABEL_SUFFIX_MODE) + r")$")
_LABEL_QPS_RE = re.compile(r"_qps_(?P<qps>[0-9.]+|max)_")
_ISTIO_TOOLS_RES_RE = re.compile(r"^(cpu_mili|mem_Mi|mem_MB)_(min|avg|max)_(istio|linkerd)_proxy_")
MESH_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")

# Variant the 2019 scripts wrote for the default (telemetry on); not worth a series name.
_DEFAULT_VARIANTS = frozenset({"mixer"})

# Chromium flags for exporting PNGs: headless, and no background traffic of any kind.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
CHROMIUM_CANDIDATES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome")
DEBIAN_CHROMIUM = "/usr/bin/chromium"
DEBIAN_CHROMEDRIVER = "/usr/bin/chromedriver"


# --------------------------------------------------------------------------------------------
# Reading CSVs


@dataclasses.dataclass(frozen=True)
class LoadedCsv:
    """One CSV, normalized. ``mem_unit`` is the unit its memory columns were written in."""

    path: Path
    format: str
    table: pd.DataFrame
    mem_unit: str
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name


def detect_format(columns: Iterable[str]) -> str:
    """Tell which CSV shape a header is; raise ResultsError naming what is missing."""
    cols = set(columns)
    if "mode" in cols and ("conn" in cols or "NumThreads" in cols):
        return FORMAT_MESHPERF
    if any(_ISTIO_TOOLS_RES_RE.match(c) for c in cols):
        return FORMAT_ISTIO_TOOLS
    if "Labels" in cols and ("NumThreads" in cols or "conn" in cols):
        return FORMAT_ISTIO2019
    missing = (
        sorted({"mode", "conn"} - cols)
        if "mode" in cols
        else sorted({"Labels", "NumThreads"} - cols)
    )
    raise ResultsError(
        f"unrecognized CSV: missing column(s) {', '.join(missing)}",
        hint="expected a runner/fortio.py CSV (mode, conn, ...) or one from the 2019 scripts or "
        "istio/tools (Labels, NumThreads, ...)",
    )


def _numbers(values: pd.Series) -> pd.Series:
    """Numeric column; the original writes '-' for missing values, which become NaN."""
    return pd.to_numeric(values.astype(str).str.strip(), errors="coerce")


def _qps_value(text: str) -> float:
    """Requested QPS; fortio writes "max" for unlimited, which TestSpec stores as 0."""
    text = text.strip()
    if text.lower() in ("max", "99999999"):
        return 0.0
    try:
        return float(text)
    except ValueError:
        return math.nan


def _resource_columns(columns: Sequence[str], fmt: str) -> tuple[dict[str, str], str]:
    """Map canonical ``<cpu|mem>_<proxy>_<stat>`` names to the CSV's columns, and the mem unit."""
    found: dict[str, str] = {}
    units: set[str] = set()
    cols = set(columns)
    for proxy in PROXIES:
        keys = (OUR_PROXY_KEYS[proxy],) + (
            ISTIO_TOOLS_PROXY_KEYS[proxy] if fmt == FORMAT_ISTIO_TOOLS else ()
        )
        for stat in STATS:
            for key in keys:
                cpu = f"cpu_mili_{stat}_{key}"
                if cpu in cols and f"cpu_{proxy}_{stat}" not in found:
                    found[f"cpu_{proxy}_{stat}"] = cpu
                for unit in ("MB", "Mi"):
                    mem = f"mem_{unit}_{stat}_{key}"
                    if mem in cols and f"mem_{proxy}_{stat}" not in found:
                        found[f"mem_{proxy}_{stat}"] = mem
                        units.add("MiB" if unit == "Mi" else "MB")
    mem_unit = "/".join(sorted(units)) if units else "MB"
    return found, mem_unit


def _parse_label(label: str) -> dict[str, Any] | None:
    """Mode, variant, qps, conn and size from a label the 2019 or istio/tools runner wrote."""
    m = _LABEL_RE.match(label)
    if m:
        variant = m.group("variant") or ""
        return {
            "mode": LABEL_SUFFIX_MODE[m.group("mode")],
            "variant": "" if variant in _DEFAULT_VARIANTS else variant,
            "qps": _qps_value(m.group("qps")),
            "conn": int(m.group("conn")),
            "size": int(m.group("size")),
        }
    m = _LABEL_SUFFIX_RE.search(label)
    if not m:
        return None
    q = _LABEL_QPS_RE.search(label)
    return {
        "mode": LABEL_SUFFIX_MODE[m.group("mode")],
        "variant": "",
        "qps": _qps_value(q.group("qps")) if q else math.nan,
        "conn": None,
        "size": None,
    }


def load_csv(path: str | os.PathLike[str], mesh: str | None = None) -> LoadedCsv:
    """Read one CSV of any supported shape into the normalized table.

    ``mesh`` names the mesh for rows that carry none (CSVs without a ``mesh`` column).
    Raises ResultsError for unreadable files, unknown shapes and CSVs without rows.
    """
    p = Path(path)
    if mesh is not None and not MESH_NAME.match(mesh):
        raise ConfigError(f"invalid mesh name {mesh!r}")
    if not p.is_file():
        raise ResultsError(f"{p}: no such file")
    try:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ResultsError(f"{p}: empty file, no CSV header") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ResultsError(f"{p}: not a readable CSV: {str(e).splitlines()[0]}") from None
    except OSError as e:  # e.g. PermissionError, or an I/O error on a bad disk
        raise ResultsError(f"{p}: cannot read: {e.strerror or e}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    try:
        fmt = detect_format(raw.columns)
    except ResultsError as e:
        raise ResultsError(f"{p}: {e}", hint=e.hint) from None
    if raw.empty:
        raise ResultsError(f"{p}: no data rows")

    notes: list[str] = []
    n = len(raw)
    t = pd.DataFrame(index=raw.index)
    t["source"] = p.name
    t["label"] = raw["Labels"] if "Labels" in raw else ""
    if fmt == FORMAT_MESHPERF:
        t["mode"] = raw["mode"].str.strip()
        # Results of a plain fortio run (no meshperf block) leave mode empty; the 2019-shaped
        # label, when there is one, still says it.
        no_mode = t["mode"] == ""
        if no_mode.any():
            from_label = [
                (x or {}).get("mode", "") for x in map(_parse_label, t.loc[no_mode, "label"])
            ]
            t.loc[no_mode, "mode"] = from_label
            unknown = t["mode"] == ""
            if unknown.any():
                notes.append(f"{p.name}: {int(unknown.sum())} rows without a mode skipped")
                raw, t = raw[~unknown], t[~unknown]
        t["variant"] = raw["extra_labels"].str.strip() if "extra_labels" in raw else ""
        t["conn"] = _numbers(raw["conn"]) if "conn" in raw else math.nan
        if "NumThreads" in raw:
            t["conn"] = t["conn"].fillna(_numbers(raw["NumThreads"]))
        if "RequestedQPS" in raw:
            t["qps"] = raw["RequestedQPS"].map(_qps_value)
        elif "qps" in raw:
            t["qps"] = raw["qps"].map(_qps_value)
        else:
            raise ResultsError(f"{p}: missing column RequestedQPS (or qps)")
        t["size"] = _numbers(raw["size"]) if "size" in raw else math.nan
    else:
        parsed = [_parse_label(str(lbl)) for lbl in raw["Labels"]] if "Labels" in raw else []
        bad = [str(raw["Labels"].iloc[i]) for i, x in enumerate(parsed) if x is None]
        if bad:
            notes.append(
                f"{p.name}: {len(bad)} of {n} rows skipped: no mode suffix "
                f"(_base, _serveronly, _both, _ingress) in Labels, e.g. {bad[0]!r}"
            )
        keep = [i for i, x in enumerate(parsed) if x is not None]
        if not keep:
            raise ResultsError(f"{p}: no row has a Labels value ending in a mode suffix")
        raw = raw.iloc[keep].reset_index(drop=True)
        t = t.iloc[keep].reset_index(drop=True)
        good = [x for x in parsed if x is not None]
        t["mode"] = [x["mode"] for x in good]
        t["variant"] = [x["variant"] for x in good]
        if "conn" in raw:
            t["conn"] = _numbers(raw["conn"])
        else:
            t["conn"] = _numbers(raw["NumThreads"])
            label_conn = [x["conn"] for x in good]
            differ = sum(
                1 for a, b in zip(label_conn, t["conn"], strict=True) if a is not None and a != b
            )
            if differ:
                notes.append(
                    f"{p.name}: {differ} rows ran fewer threads (NumThreads) than the "
                    "connections asked for in their label; plotted at NumThreads"
                )
        if "qps" in raw:
            t["qps"] = raw["qps"].map(_qps_value)
        else:
            t["qps"] = [x["qps"] for x in good]
            if t["qps"].isna().any():
                if "RequestedQPS" in raw:
                    t["qps"] = t["qps"].fillna(raw["RequestedQPS"].map(_qps_value))
                else:
                    t["qps"] = t["qps"].fillna(_numbers(raw["ActualQPS"]).round())
                    notes.append(
                        f"{p.name}: no _qps_<n>_ in some labels: their requested QPS is taken "
                        "as the achieved ActualQPS, rounded"
                    )
        t["size"] = [x["size"] if x["size"] is not None else math.nan for x in good]

    t["actual_qps"] = _numbers(raw["ActualQPS"]) if "ActualQPS" in raw else math.nan
    for metric in LATENCY_METRICS:
        # CSV latency columns are microseconds; charts are in milliseconds.
        t[metric] = _numbers(raw[metric]) / 1000.0 if metric in raw else math.nan
    resources, mem_unit = _resource_columns(list(raw.columns), fmt)
    for canonical, col in resources.items():
        t[canonical] = _numbers(raw[col])

    if "mesh" in raw and fmt == FORMAT_MESHPERF:
        meshes = raw["mesh"].str.strip()
        fallback = mesh or "istio"
        t["mesh"] = meshes.where(meshes != "", fallback)
    elif mesh is not None:
        t["mesh"] = mesh
    else:
        # The istio/tools runner writes "linkerd" as the variant of Linkerd runs.
        is_linkerd = t["variant"].astype(str).str.split("_").map(lambda parts: "linkerd" in parts)
        t["mesh"] = ["linkerd" if x else "istio" for x in is_linkerd]
        if "linkerd" in set(t["mesh"]):
            t.loc[t["mesh"] == "linkerd", "variant"] = t.loc[t["mesh"] == "linkerd", "variant"].map(
                lambda v: "_".join(x for x in str(v).split("_") if x != "linkerd")
            )
        notes.append(
            f"{p.name}: no mesh column; mesh taken as {'/'.join(sorted(set(t['mesh'])))} "
            "(name it with --mesh)"
        )
    bad_conn = t["conn"].isna()
    if bad_conn.any():
        notes.append(f"{p.name}: {int(bad_conn.sum())} rows without a connection count skipped")
        t = t[~bad_conn]
    t["mode"] = t["mode"].astype(str)
    t["variant"] = t["variant"].astype(str)
    if t.empty:
        raise ResultsError(f"{p}: no usable rows")
    return LoadedCsv(
        path=p, format=fmt, table=t.reset_index(drop=True), mem_unit=mem_unit, notes=tuple(notes)
    )


# --------------------------------------------------------------------------------------------
# Chart data


@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a chart: points sorted by x, each the mean of the rows at that x."""

    name: str
    mesh: str
    mode: str
    variant: str
    source: str
    held: tuple[tuple[str, float], ...]  # values of split dimensions (other axis, size)
    x: tuple[float, ...]
    y: tuple[float, ...]
    runs: tuple[int, ...]  # rows averaged into each point
    actual_qps: tuple[float, ...]
    labels: tuple[str, ...]
    baseline: str = ""  # overhead series: the baseline series subtracted

    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.x, self.y, strict=True))


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

    def by_name(self) -> dict[str, Series]:
        return {s.name: s for s in self.series}


def _fmt(v: float) -> str:
    return f"{v:g}" if not float(v).is_integer() else str(int(v))


def _fmt_qps(v: float) -> str:
    return "max" if v == 0 else _fmt(v)


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

    notes: list[str] = []
    frames: list[pd.DataFrame] = []
    stats_used: set[str] = set()
    for d in datas:
        y, used, more = _metric_values(d, metric, proxy, stat)
        notes.extend(more)
        if used:
            stats_used.add(used)
        f = d.table.assign(y=y)
        missing = f["y"].isna()
        if missing.all():
            notes.append(f"{d.name}: no {metric} values")
        elif missing.any():
            notes.append(f"{d.name}: {int(missing.sum())} rows without a {metric} value skipped")
        frames.append(f[~missing])
    rows = pd.concat(frames, ignore_index=True)
    if rows.empty:
        raise ResultsError(f"no {metric} values in {', '.join(d.name for d in datas)}")
    rows = rows[rows[xcol].notna()]

    if held_value is not None:
        have = sorted(set(rows[other].dropna()))
        rows = rows[(rows[other] - float(held_value)).abs() <= 1e-9 * max(1.0, abs(held_value))]
        if rows.empty:
            name = "qps" if other == "qps" else "conn"
            raise ResultsError(
                f"no {metric} rows with {name} {_fmt(held_value)}; the CSV has "
                f"{', '.join(_fmt(v) for v in have) or 'none'}"
            )

    split: list[str] = []
    for dim in (other, "size"):
        values = sorted(set(rows[dim].dropna()))
        if len(values) > 1:
            split.append(dim)
            unit = {"qps": "qps", "conn": "connections", "size": "byte payloads"}[dim]
            shown = ", ".join(_fmt_qps(v) if dim == "qps" else _fmt(v) for v in values)
            notes.append(
                f"the rows mix {unit} ({shown}): plotting one series per value"
                + (f"; pick one with --{other}" if dim == other else "")
            )
    for dim in split:
        rows = rows.assign(**{dim: rows[dim].fillna(-1.0)})

    meshes = sorted(set(rows["mesh"]))
    sources = list(dict.fromkeys(rows["source"]))
    prefix_mesh = len(meshes) > 1 or len(datas) > 1
    keys = ["source", "mesh", "variant", "mode", *split]
    groups = list(rows.groupby(keys, sort=False, dropna=False))

    def name_of(key: dict[str, Any], with_source: bool) -> str:
        base = f"{key['variant']}_{key['mode']}" if key["variant"] else key["mode"]
        if prefix_mesh:
            base = f"{key['mesh']} {base}"
        parts = []
        for dim in split:
            v = key[dim]
            if dim == "qps":
                parts.append(f"{_fmt_qps(v)} qps")
            elif dim == "conn":
                parts.append(f"{_fmt(v)} conn")
            else:
                parts.append(f"{_fmt(v)} B")
        if parts:
            base += " @ " + ", ".join(parts)
        if with_source:
            base += f" ({key['source']})"
        return base

    keyed = [(dict(zip(keys, k, strict=True)), g) for k, g in groups]
    plain = [name_of(k, False) for k, _ in keyed]
    clash = {n for n in plain if plain.count(n) > 1}
    series: list[Series] = []
    averaged = 0
    for (key, g), pname in zip(keyed, plain, strict=True):
        by_x = g.groupby(xcol, sort=True)
        agg = by_x.agg(
            y=("y", "mean"),
            runs=("y", "size"),
            actual_qps=("actual_qps", "mean"),
            label=("label", lambda s: " | ".join(dict.fromkeys(str(v) for v in s))),
        )
        averaged += int((agg["runs"] > 1).sum())
        series.append(
            Series(
                name=name_of(key, True) if pname in clash else pname,
                mesh=str(key["mesh"]),
                mode=str(key["mode"]),
                variant=str(key["variant"]),
                source=str(key["source"]),
                held=tuple((dim, float(key[dim])) for dim in split),
                x=tuple(float(v) for v in agg.index),
                y=tuple(float(v) for v in agg["y"]),
                runs=tuple(int(v) for v in agg["runs"]),
                actual_qps=tuple(float(v) for v in agg["actual_qps"]),
                labels=tuple(str(v) for v in agg["label"]),
            )
        )
    if averaged:
        notes.append(
            "points with several rows at the same x (repeats) show their mean; "
            "hover shows how many runs"
        )
    series.sort(
        key=lambda s: (sources.index(s.source), s.mesh, s.variant, _mode_rank(s.mode), s.held)
    )

    x_label = "connections" if xcol == "conn" else "requested QPS"
    if other in split:
        held_text = f"; {'qps' if other == 'qps' else 'connections'} varies (a series per value)"
    else:
        values = sorted(set(rows[other].dropna()))
        held_text = (
            (
                f" at {_fmt_qps(values[0])} qps"
                if other == "qps"
                else f" at {_fmt(values[0])} connections"
            )
            if values
            else ""
        )
    mesh_text = ", ".join(meshes)
    if metric in LATENCY_METRICS:
        what = f"{metric} latency"
        y_label = f"{metric} latency (ms)"
        y_format = "0.000"
    else:
        stat_text = "/".join(sorted(stats_used, key=STATS.index))
        what = f"{PROXY_TITLES[proxy]} {'CPU' if metric == 'cpu' else 'memory'} ({stat_text})"
        if metric == "cpu":
            y_label = f"{stat_text} CPU (millicores)"
        else:
            units = "/".join(sorted({d.mem_unit for d in datas}))
            y_label = f"{stat_text} memory ({units})"
        y_format = "0.0"
    title = f"{mesh_text}: {what} vs {x_label}{held_text}"
    return Chart(
        metric=metric,
        xaxis=xaxis,
        title=title,
        x_label=x_label,
        y_label=y_label,
        series=tuple(series),
        notes=tuple(notes),
        y_format=y_format,
    )


def _baseline_for(s: Series, baselines: Sequence[Series]) -> Series | None:
    """The baseline a series is compared with: same run first, then the mesh's, then no mesh's."""
    same_held = [b for b in baselines if b.held == s.held]
    for pick in (
        [b for b in same_held if (b.source, b.mesh, b.variant) == (s.source, s.mesh, s.variant)],
        [b for b in same_held if (b.source, b.mesh) == (s.source, s.mesh)],
        [b for b in same_held if b.mesh == s.mesh],
        [b for b in same_held if b.mesh in ("none", "baseline")],
        same_held if len({b.mesh for b in same_held}) == 1 else [],
    ):
        if len(pick) == 1:
            return pick[0]
    return None


def overhead_chart(chart: Chart) -> Chart:
    """Each non-baseline series minus its baseline at the same x (only x values both have)."""
    if chart.metric not in LATENCY_METRICS:
        raise ConfigError(f"overhead is computed for latency, not {chart.metric}")
    baselines = [s for s in chart.series if s.mode == "baseline"]
    notes: list[str] = []
    out: list[Series] = []
    if not baselines:
        notes.append(f"{chart.metric}: no baseline rows, so no overhead view")
    for s in chart.series:
        if s.mode == "baseline" or not baselines:
            continue
        b = _baseline_for(s, baselines)
        if b is None:
            notes.append(f"overhead {chart.metric}: no single baseline matches {s.name}; skipped")
            continue
        base = dict(zip(b.x, b.y, strict=True))
        idx = [i for i, x in enumerate(s.x) if x in base]
        if not idx:
            notes.append(f"overhead {chart.metric}: {s.name} shares no x value with {b.name}")
            continue
        out.append(
            dataclasses.replace(
                s,
                baseline=b.name,
                x=tuple(s.x[i] for i in idx),
                y=tuple(s.y[i] - base[s.x[i]] for i in idx),
                runs=tuple(s.runs[i] for i in idx),
                actual_qps=tuple(s.actual_qps[i] for i in idx),
                labels=tuple(s.labels[i] for i in idx),
            )
        )
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
    )


# --------------------------------------------------------------------------------------------
# Bokeh


def series_colors(names: Iterable[str]) -> dict[str, str]:
    """A color per series name, so one series keeps its color in every figure of a page."""
    from bokeh.palettes import Category10_10, Category20_20

    unique = list(dict.fromkeys(names))
    palette = Category10_10 if len(unique) <= 10 else Category20_20
    return {n: palette[i % len(palette)] for i, n in enumerate(unique)}


def make_figure(
    chart: Chart, width: int = 640, height: int = 400, colors: dict[str, str] | None = None
) -> Figure:
    """One Bokeh 3 figure: a line plus markers per series, hover with the exact values."""
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    # The legend sits below the plot: grow the figure so the plot keeps its height.
    legend_rows = math.ceil(len(chart.series) / 2)
    p = figure(
        title=chart.title,
        x_axis_label=chart.x_label,
        y_axis_label=chart.y_label,
        width=width,
        height=height + 22 * legend_rows + 20,
        tools="pan,box_zoom,wheel_zoom,reset,save",
        toolbar_location="above",
        name=chart.metric,
    )
    colors = {**series_colors(s.name for s in chart.series), **(colors or {})}
    markers = ("circle", "square", "triangle", "diamond", "inverted_triangle", "hex")
    points: list[Any] = []
    xs: set[float] = set()
    for i, s in enumerate(chart.series):
        source = ColumnDataSource(
            data={
                "x": list(s.x),
                "y": list(s.y),
                "series": [s.name] * len(s.x),
                "runs": list(s.runs),
                "actual_qps": list(s.actual_qps),
                "label": list(s.labels),
                "baseline": [s.baseline or "-"] * len(s.x),
            },
            name=s.name,
        )
        color = colors[s.name]
        p.line("x", "y", source=source, legend_label=s.name, color=color, line_width=2, name=s.name)
        points.append(
            p.scatter(
                "x",
                "y",
                source=source,
                legend_label=s.name,
                color=color,
                size=8,
                marker=markers[(i // 10) % len(markers)],
                name=s.name,
            )
        )
        xs.update(s.x)
    x_fmt = "0" if chart.xaxis == "connections" else "0.[00]"
    p.add_tools(
        HoverTool(
            renderers=points,
            tooltips=[
                ("series", "@series"),
                (chart.x_label, f"@x{{{x_fmt}}}"),
                (chart.y_label, f"@y{{{chart.y_format}}}"),
                ("achieved QPS", "@actual_qps{0.0}"),
                ("runs", "@runs"),
                ("label", "@label"),
                *((("minus", "@baseline"),) if chart.metric.startswith("overhead-") else ()),
            ],
        )
    )
    if 0 < len(xs) <= 16:
        p.xaxis.ticker = sorted(xs)
    if not chart.metric.startswith("overhead-"):
        p.y_range.start = 0  # type: ignore[attr-defined]  # a DataRange1d at run time
    if chart.series:
        # Below the plot, so it never hides a point; click an entry to hide its series.
        legend = p.legend[0]
        p.add_layout(legend, "below")
        legend.ncols = 2
        legend.click_policy = "hide"
        legend.location = "top_left"
    return p


def _notes_div(notes: Sequence[str], width: int) -> Any:
    from bokeh.models.widgets.markups import Div

    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return Div(
        text=f"<ul style='color:#555;font-size:12px'>{items}</ul>", width=width, name="notes"
    )


def build_page(
    datas: Sequence[LoadedCsv],
    metric: str,
    xaxis: str = "connections",
    *,
    qps: float | None = None,
    conn: int | None = None,
    proxy: str = "server",
    stat: str = "max",
) -> tuple[UIElement, list[Chart], list[str]]:
    """The layout for one metric, or for ``all``: every metric plus the overhead view.

    Returns the layout, the charts drawn (in page order) and the notes for the user (those of
    loading the CSVs included).
    """
    from bokeh.layouts import column, gridplot
    from bokeh.models.widgets.markups import Div

    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    opts: dict[str, Any] = {"qps": qps, "conn": conn, "proxy": proxy, "stat": stat}
    # The page also says how each CSV was read; the returned notes leave that to the caller.
    read_as = [f"{d.name}: read as {FORMAT_DESCRIPTIONS[d.format]}" for d in datas]
    load_notes = [n for d in datas for n in d.notes]
    if metric != "all":
        chart = build_chart(datas, metric, xaxis, **opts)
        if not chart.series:
            raise ResultsError(f"no {metric} data to plot")
        notes = list(dict.fromkeys([*load_notes, *chart.notes]))
        items: list[Any] = [make_figure(chart, 800, 480), _notes_div([*read_as, *notes], 800)]
        return column(*items, name="page"), [chart], notes

    charts: list[Chart] = []
    notes = list(load_notes)
    latency: list[Chart] = []
    for m in (*LATENCY_METRICS, *RESOURCE_METRICS):
        try:
            c = build_chart(datas, m, xaxis, **opts)
        except ResultsError as e:
            notes.append(f"{m}: not drawn: {e}")
            continue
        notes.extend(c.notes)
        if c.series:
            charts.append(c)
            if m in LATENCY_METRICS:
                latency.append(c)
    overheads: list[Chart] = []
    for c in latency:
        o = overhead_chart(c)
        notes.extend(o.notes)
        if o.series:
            overheads.append(o)
    if not charts:
        raise ResultsError("no metric could be plotted: " + "; ".join(notes))
    notes = list(dict.fromkeys(notes))
    w, h = 600, 320
    colors = series_colors(s.name for c in charts for s in c.series)
    sections: list[Any] = [
        Div(
            text=f"<h2 style='margin:4px 0'>{html.escape(', '.join(d.name for d in datas))}</h2>",
            width=2 * w,
        )
    ]
    lat: list[Any] = [make_figure(c, w, h, colors) for c in charts if c.metric in LATENCY_METRICS]
    if lat:
        sections += [Div(text="<h3>Latency</h3>", width=2 * w), gridplot(lat, ncols=2)]
    if overheads:
        over: list[Any] = [make_figure(o, w, h, colors) for o in overheads]
        sections += [
            Div(
                text="<h3>Overhead vs baseline (latency minus baseline at the same x)</h3>",
                width=2 * w,
            ),
            gridplot(over, ncols=2),
        ]
    else:
        sections.append(
            Div(
                text="<h3>Overhead vs baseline</h3><p>not available: no baseline "
                "series matches the other modes</p>",
                width=2 * w,
            )
        )
    res: list[Any] = [make_figure(c, w, h, colors) for c in charts if c.metric in RESOURCE_METRICS]
    if res:
        sections += [Div(text="<h3>CPU and memory</h3>", width=2 * w), gridplot(res, ncols=2)]
    sections.append(_notes_div([*read_as, *notes], 2 * w))
    charts.extend(overheads)
    return column(*sections, name="page"), charts, notes


def write_html(layout: UIElement, path: Path, title: str) -> Path:
    """Self-contained HTML: BokehJS inlined so the report opens offline, written atomically."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    text = file_html(layout, resources=INLINE, title=title)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def find_chromium() -> tuple[str, str]:
    """Paths of a Chromium and its chromedriver, or ConfigError saying what is missing."""
    browser = next((w for c in CHROMIUM_CANDIDATES if (w := shutil.which(c))), None)
    if browser is None and os.access(DEBIAN_CHROMIUM, os.X_OK):
        browser = DEBIAN_CHROMIUM
    driver = shutil.which("chromedriver")
    if driver is None and os.access(DEBIAN_CHROMEDRIVER, os.X_OK):
        driver = DEBIAN_CHROMEDRIVER
    if browser is None or driver is None:
        missing = " and ".join(
            n for n, v in (("chromium", browser), ("chromedriver", driver)) if v is None
        )
        raise ConfigError(
            f"no headless browser for --png: {missing} not found",
            hint="install Debian's chromium and chromium-driver (or put them on PATH)",
        )
    return browser, driver


def start_chromium(
    browser: str | None = None,
    driver: str | None = None,
    *,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
    capabilities: dict[str, Any] | None = None,
) -> WebDriver:
    """Headless Chromium through the given chromedriver; the caller must ``quit()`` it.

    Paths are passed explicitly so Selenium never tries to download a driver.
    """
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    if browser is None or driver is None:
        found_browser, found_driver = find_chromium()
        browser = browser or found_browser
        driver = driver or found_driver
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, *extra_args):
        options.add_argument(flag)
    for k, v in (capabilities or {}).items():
        options.set_capability(k, v)
    try:
        wd = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except WebDriverException as e:
        first = (e.msg or str(e)).strip().splitlines()
        raise ConfigError(
            f"cannot start headless Chromium: {first[0] if first else type(e).__name__}"
        ) from None
    wd.set_page_load_timeout(timeout)
    wd.set_script_timeout(timeout)
    return wd


def export_png(layout: UIElement, path: Path, *, timeout: int = 30) -> Path:
    """Render ``layout`` to a PNG with headless Chromium (bokeh.io.export_png)."""
    from bokeh.io import export_png as bokeh_export_png
    from selenium.common.exceptions import WebDriverException

    wd = start_chromium(timeout=timeout)
    try:
        bokeh_export_png(layout, filename=path, webdriver=wd, timeout=timeout)
    except (WebDriverException, RuntimeError) as e:
        raise ConfigError(f"PNG export failed: {str(e).strip().splitlines()[0]}") from None
    finally:
        wd.quit()
    return path


def default_output(
    csv: Path,
    metric: str,
    xaxis: str,
    qps: float | None,
    conn: int | None,
    proxy: str = "server",
    stat: str = "max",
) -> Path:
    """``<csv dir>/<csv stem>_<metric>[_<proxy>][_<stat>]_<xaxis>[_qps<n>|_conn<n>].html``.

    The proxy and statistic appear when they are not the defaults, so charts of different
    proxies of one CSV do not overwrite each other.
    """
    held = f"_qps{_fmt(qps)}" if qps is not None else (f"_conn{conn}" if conn is not None else "")
    which = ""
    if metric in ("cpu", "mem"):
        which = ("" if proxy == "server" else f"_{proxy}") + ("" if stat == "max" else f"_{stat}")
    return csv.with_name(f"{csv.stem}_{metric}{which}_{xaxis}{held}.html")
