"""Read a benchmark CSV of any supported shape into one normalized table.

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

Every shape becomes one table (``LoadedCsv.table``: source, label, mode, variant, conn, qps,
size, actual_qps, mesh, the latency percentiles in ms, and ``<cpu|mem>_<proxy>_<stat>``
resource columns), so the chart model does not care where a row came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from meshperf.errors import ConfigError, ResultsError
from meshperf.graphing.names import (
    FORMAT_ISTIO2019,
    FORMAT_ISTIO_TOOLS,
    FORMAT_MESHPERF,
    ISTIO_TOOLS_PROXY_KEYS,
    LATENCY_METRICS,
    MESH_NAME,
    OUR_PROXY_KEYS,
    PROXIES,
    STATS,
)

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

_LABEL_RE = re.compile(
    r"^(?P<run>[^_]+)_qps_(?P<qps>[0-9.]+|max)_c_(?P<conn>\d+)_(?P<size>\d+)"
    r"(?:_(?P<variant>.+?))?_(?P<mode>" + "|".join(LABEL_SUFFIX_MODE) + r")$"
)
_LABEL_SUFFIX_RE = re.compile(r"_(?P<mode>" + "|".join(LABEL_SUFFIX_MODE) + r")$")
_LABEL_QPS_RE = re.compile(r"_qps_(?P<qps>[0-9.]+|max)_")
_ISTIO_TOOLS_RES_RE = re.compile(r"^(cpu_mili|mem_Mi|mem_MB)_(min|avg|max)_(istio|linkerd)_proxy_")

# Variant the 2019 scripts wrote for the default (telemetry on); not worth a series name.
_DEFAULT_VARIANTS = frozenset({"mixer"})


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


def _drop_impossible(
    t: pd.DataFrame, name: str, resource_columns: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Skip rows whose latency is infinite or negative, and drop such resource values.

    A latency of inf (fortio's histogram end) or below zero cannot be a measurement: the row
    is skipped as a whole, since its other percentiles come from the same broken histogram.
    A negative or infinite CPU/memory value is dropped alone, so the latency still draws.
    """
    notes: list[str] = []
    bad_rows = pd.Series(False, index=t.index)
    causes: list[str] = []
    for metric in LATENCY_METRICS:
        v = t[metric]
        inf = v.isin([math.inf, -math.inf])
        neg = (v < 0) & ~inf
        if inf.any():
            causes.append(f"{metric} = inf in {int(inf.sum())}")
        if neg.any():
            causes.append(f"{metric} negative in {int(neg.sum())}")
        bad_rows |= inf | neg
    if bad_rows.any():
        example = str(t.loc[bad_rows, "label"].iloc[0])
        notes.append(
            f"{name}: {int(bad_rows.sum())} rows with impossible latency skipped "
            f"({', '.join(causes)})" + (f", e.g. {example!r}" if example else "")
        )
        t = t[~bad_rows]
    for col in resource_columns:
        v = t[col]
        bad = v.isin([math.inf, -math.inf]) | (v < 0)
        if bad.any():
            notes.append(f"{name}: {int(bad.sum())} negative or infinite {col} values dropped")
            t = t.assign(**{col: v.where(~bad)})
    return t, notes


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
    t, more = _drop_impossible(t, p.name, list(resources))
    notes.extend(more)
    t["mode"] = t["mode"].astype(str)
    t["variant"] = t["variant"].astype(str)
    if t.empty:
        # Say why: the notes hold every reason rows were skipped.
        why = "; ".join(n.removeprefix(f"{p.name}: ") for n in notes)
        raise ResultsError(f"{p}: no usable rows" + (f" ({why})" if why else ""))
    return LoadedCsv(
        path=p, format=fmt, table=t.reset_index(drop=True), mem_unit=mem_unit, notes=tuple(notes)
    )
