"""Read a benchmark CSV of any supported shape into one normalized table.

Three CSV shapes are read, detected from their header:

* ``meshperf``: ours, written by ``runner/fortio.py``. Mode, mesh, platform, conn and
  requested QPS are columns of their own; latency percentiles are microseconds; resources are
  ``cpu_mili_<stat>_<key>`` and ``mem_MB_<stat>_<key>``.
* ``istio2019``: the 2019 scripts' CSV (``--csv StartTime,ActualDuration,Labels,NumThreads,...``).
  Mode, requested QPS and label variant live only in the ``Labels`` value; conn is
  ``NumThreads``. Resources use the same column names as ours.
* ``istio-tools``: today's istio/tools pipeline. Labels of its grammar (telemetry mode, then
  extra labels), resources named after container and pod:
  ``cpu_mili_avg_istio_proxy_fortioserver``, ``mem_Mi_avg_istio_proxy_fortioclient``, ...;
  usually only the average is recorded.

Labels of every grammar are read by ``meshperf.labels``, the one label parser (its docstring
has the grammars). Every shape becomes one table (``LoadedCsv.table``: source, label, mode,
variant, telemetry, mesh, platform, protocol, run_id, setup, conn, qps, size, actual_qps, the
latency percentiles in ms, and ``<cpu|mem>_<proxy>_<stat>`` resource columns), so the chart
model does not care where a row came from.
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

from meshperf import labels
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
from meshperf.labels import LabelFacts

_ISTIO_TOOLS_RES_RE = re.compile(r"^(cpu_mili|mem_Mi|mem_MB)_(min|avg|max)_(istio|linkerd)_proxy_")

# The telemetry mode the 2019 scripts' default runs carry (Mixer on); not worth a series name.
_DEFAULT_TELEMETRY = "mixer"
# Every mode suffix a label may end in (meshperf.labels), for messages.
SUFFIXES_TEXT = ", ".join(f"_{s}" for s in labels.SUFFIX_MODE)


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


def _read(p: Path) -> pd.DataFrame:
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
    return raw


def _text(raw: pd.DataFrame, column: str) -> pd.Series:
    """A text column, stripped; all empty when the CSV does not have it."""
    if column not in raw:
        return pd.Series("", index=raw.index, dtype=object)
    return raw[column].astype(str).str.strip()


def _fill(values: pd.Series, fallback: Sequence[Any]) -> pd.Series:
    """Empty text (or NaN) replaced by the fallback of the same row (the label's facts)."""
    back = pd.Series(list(fallback), index=values.index)
    if pd.api.types.is_numeric_dtype(values):
        return values.fillna(back)
    return values.where(values != "", back)


def _mode(value: str) -> str:
    """Our spelling of a mode column's value (older CSVs wrote ``clientsidecar``)."""
    if value in labels.MODES or value == "":
        return value
    return labels.SUFFIX_MODE.get(value, value)


def _variant(telemetry: str, extra: str) -> str:
    """What a series name shows between mesh and mode: telemetry mode and extra labels.

    Our ``extra_labels`` column already holds the whole variant, telemetry mode first; a
    label's facts hold the two apart.
    """
    if telemetry and (extra == telemetry or extra.startswith(f"{telemetry}_")):
        full = extra
    else:
        full = "_".join(x for x in (telemetry, extra) if x)
    return "" if full == _DEFAULT_TELEMETRY else full


def _conn(
    t: pd.DataFrame, raw: pd.DataFrame, facts: Sequence[LabelFacts | None], fmt: str, name: str
) -> tuple[pd.Series, list[str]]:
    """Connections: the conn column, else NumThreads, else the label's ``_c_<n>_``."""
    notes: list[str] = []
    label_conn = pd.Series([f.conn if f else math.nan for f in facts], index=t.index)
    conn = _numbers(raw["conn"]) if "conn" in raw else pd.Series(math.nan, index=t.index)
    if "NumThreads" in raw:
        threads = _numbers(raw["NumThreads"])
        if fmt != FORMAT_MESHPERF and "conn" not in raw:
            # fortio runs at most as many threads as QPS allows: say where that happened.
            differ = int(((label_conn != threads) & label_conn.notna() & threads.notna()).sum())
            if differ:
                notes.append(
                    f"{name}: {differ} rows ran fewer threads (NumThreads) than the "
                    "connections asked for in their label; plotted at NumThreads"
                )
        conn = conn.fillna(threads)
    return conn.fillna(label_conn), notes


def _qps(
    raw: pd.DataFrame, facts: Sequence[LabelFacts | None], name: str, index: pd.Index
) -> tuple[pd.Series, list[str]]:
    """Requested QPS (0 = max): its column, else the label's ``_qps_<n>_``, else ActualQPS."""
    qps = pd.Series(math.nan, index=index)
    for column in ("RequestedQPS", "qps"):
        if column in raw:
            qps = qps.fillna(raw[column].map(_qps_value))
    label_qps = [(0.0 if f.qps is None else f.qps) if f else math.nan for f in facts]
    qps = qps.fillna(pd.Series(label_qps, index=index))
    notes: list[str] = []
    if qps.isna().any() and "ActualQPS" in raw:
        notes.append(
            f"{name}: {int(qps.isna().sum())} rows say no requested QPS (no column, no "
            "_qps_<n>_ in the label): taken as the achieved ActualQPS, rounded"
        )
        qps = qps.fillna(_numbers(raw["ActualQPS"]).round())
    return qps, notes


def _series_of(raw: pd.DataFrame, series: str) -> pd.Series:
    if series not in raw:
        raise ConfigError(
            f"--series {series}: no such column; the CSV has {', '.join(raw.columns)}"
        )
    return _text(raw, series).replace("", f"(no {series})")


def _mesh(
    raw: pd.DataFrame,
    t: pd.DataFrame,
    facts: Sequence[LabelFacts | None],
    fmt: str,
    mesh: str | None,
    name: str,
) -> tuple[pd.Series, list[str]]:
    """The mesh of each row: recorded, else the label's, else ``--mesh``; never guessed for
    a plain fortio run."""
    label_mesh = pd.Series([f.mesh if f else "" for f in facts], index=t.index, dtype=object)
    if "mesh" in raw:
        # Our results record the mesh that ran; plain fortio rows in the same CSV do not.
        return _fill(_fill(_text(raw, "mesh"), label_mesh), [mesh or ""] * len(t)), []
    if mesh is not None:
        return pd.Series(mesh, index=t.index, dtype=object), []
    if fmt != FORMAT_MESHPERF:
        # Labels of the 2019 scripts and istio/tools runs are Istio's (istio/tools marks
        # Linkerd runs); a row whose label is neither (a plain fortio run) claims no mesh.
        meshes = _fill(label_mesh, ["istio" if f else "" for f in facts])
        if not any(facts):
            return meshes, []
        taken = "/".join(sorted(set(meshes) - {""}))
        return meshes, [f"{name}: no mesh column; mesh taken as {taken} (name it with --mesh)"]
    # A CSV of ours with the mesh column left out (fortio.py --csv): unknown, not guessed.
    if (t["mode"] != "").any() and (label_mesh == "").any():
        return label_mesh, [f"{name}: no mesh column; the mesh is not known (name it with --mesh)"]
    return label_mesh, []


def _setup(
    raw: pd.DataFrame, t: pd.DataFrame, series: str | None, name: str
) -> tuple[pd.Series, list[str]]:
    """What names a row's series besides its mode: the ``--series`` column's value, else, for
    a row without a mode (a plain fortio run), its Labels value."""
    if series is not None:
        return _series_of(raw, series), []
    no_mode = t["mode"] == ""
    label = t["label"]
    setup = label.where(no_mode, "").replace("", "(no label)").where(no_mode, "")
    if not no_mode.any():
        return setup, []
    example = next((x for x in label[no_mode] if x), "")
    return setup, [
        f"{name}: {int(no_mode.sum())} of {len(t)} rows have no mode (no mode column value, "
        f"no Labels ending in {SUFFIXES_TEXT}"
        + (f", e.g. {example!r}" if example else "")
        + "): one series per Labels value (or name a column with --series)"
    ]


def load_csv(
    path: str | os.PathLike[str], mesh: str | None = None, series: str | None = None
) -> LoadedCsv:
    """Read one CSV of any supported shape into the normalized table.

    What identifies a test comes from its own column where the CSV has one, else from its
    label (``meshperf.labels``, the one label parser). ``mesh`` names the mesh for rows that
    carry none. Rows with no mode (plain fortio runs) get a series per ``Labels`` value;
    ``series`` names another column whose value names every row's series.
    Raises ResultsError for unreadable files, unknown shapes and CSVs without usable rows.
    """
    p = Path(path)
    if mesh is not None and not MESH_NAME.match(mesh):
        raise ConfigError(f"invalid mesh name {mesh!r}")
    raw = _read(p)
    try:
        fmt = detect_format(raw.columns)
    except ResultsError as e:
        raise ResultsError(f"{p}: {e}", hint=e.hint) from None
    if raw.empty:
        raise ResultsError(f"{p}: no data rows")

    notes: list[str] = []
    label = _text(raw, "Labels")
    facts = [labels.parse(x) for x in label]
    t = pd.DataFrame(index=raw.index)
    t["source"] = p.name
    t["label"] = label
    t["warnings"] = _text(raw, "warnings").replace("nan", "")  # meshperf.trust, fortio.py's CSV
    t["mode"] = _fill(_text(raw, "mode").map(_mode), [f.mode if f else "" for f in facts])
    # The variant from the label where it parses: the label holds everything the runner put
    # between size and mode (our protocol token, grpc or tcp, leads our extra labels there),
    # while an extra_labels column may hold only the user's --labels.
    parsed = pd.Series([f is not None for f in facts], index=t.index)
    telemetry = pd.Series([f.telemetry if f else "" for f in facts], index=t.index, dtype=object)
    telemetry = telemetry.where(parsed, _text(raw, "telemetry"))
    extra = pd.Series([f.extra if f else "" for f in facts], index=t.index, dtype=object)
    extra = extra.where(parsed, _text(raw, "extra_labels"))
    t["telemetry"] = telemetry
    t["variant"] = [_variant(tm, e) for tm, e in zip(telemetry, extra, strict=True)]
    t["platform"] = _text(raw, "platform")
    t["protocol"] = _text(raw, "protocol") if "protocol" in raw else _text(raw, "RunType")
    t["run_id"] = _fill(_text(raw, "run_id"), [f.run_id if f else "" for f in facts])

    t["conn"], more = _conn(t, raw, facts, fmt, p.name)
    notes.extend(more)
    t["qps"], more = _qps(raw, facts, p.name, t.index)
    notes.extend(more)
    size = _numbers(raw["size"]) if "size" in raw else pd.Series(math.nan, index=t.index)
    t["size"] = size.fillna(pd.Series([f.size if f else math.nan for f in facts], index=t.index))

    t["actual_qps"] = _numbers(raw["ActualQPS"]) if "ActualQPS" in raw else math.nan
    for metric in LATENCY_METRICS:
        # CSV latency columns are microseconds; charts are in milliseconds.
        t[metric] = _numbers(raw[metric]) / 1000.0 if metric in raw else math.nan
        # fortio.py --aggregate: each row is the median of its repeats, with their min and max.
        for end, column in (("lo", f"{metric}_min"), ("hi", f"{metric}_max")):
            t[f"{metric}_{end}"] = _numbers(raw[column]) / 1000.0 if column in raw else math.nan
    t["repeats"] = (_numbers(raw["repeats"]) if "repeats" in raw else pd.Series(
        math.nan, index=t.index)).fillna(1.0)  # fmt: skip
    resources, mem_unit = _resource_columns(list(raw.columns), fmt)
    for canonical, col in resources.items():
        t[canonical] = _numbers(raw[col])

    t["mesh"], more = _mesh(raw, t, facts, fmt, mesh, p.name)
    notes.extend(more)
    t["setup"], more = _setup(raw, t, series, p.name)
    notes.extend(more)
    bad_conn = t["conn"].isna()
    if bad_conn.any():
        notes.append(f"{p.name}: {int(bad_conn.sum())} rows without a connection count skipped")
        t = t[~bad_conn]
    t, more = _drop_impossible(t, p.name, list(resources))
    notes.extend(more)
    if t.empty:
        # Say why: the notes hold every reason rows were skipped.
        why = "; ".join(x.removeprefix(f"{p.name}: ") for x in notes)
        raise ResultsError(f"{p}: no usable rows" + (f" ({why})" if why else ""))
    return LoadedCsv(
        path=p, format=fmt, table=t.reset_index(drop=True), mem_unit=mem_unit, notes=tuple(notes)
    )
