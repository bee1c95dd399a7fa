"""Test labels: the one place that knows how a fortio ``Labels`` value is built and read.

Three runners wrote the labels meshperf reads, with two grammars:

* **istio-2019**, the 2019 perf/benchmark scripts (istio/tools ``perf/benchmark/runner/runner.py``
  as of 2019-03 .. 2019-08): ``<runid>_qps_<qps>_c_<conn>_<size>[_<labels>]_<mode>``, the mode
  suffix one of ``base``, ``serveronly``, ``both``, ``ingress``; ``<labels>`` is ``--labels``
  verbatim (the README's Mixer-off step writes ``nomixer`` there).
* **istio-tools**, istio/tools ``perf/benchmark/runner/runner.py`` today
  (``generate_test_labels`` and ``execute_sidecar_mode``):
  ``[nighthawk_]<runid>_qps_<qps>_c_<conn>_<size>_<telemetry_mode>[_<extra>]_<mode>``, the mode
  one of ``no_istio``, ``serveronly``, ``clientonly``, ``both``, ``ingress`` (``base`` in the
  Nighthawk-era versions), and ``linkerd`` in place of the telemetry mode when the mesh is
  Linkerd. Telemetry modes are free text that may contain ``_`` (``istio_with_stats``,
  ``none_tcp``), so they are recognised from the values istio/tools' configs use.
* **meshperf**, ours (``format_label``): the 2019 grammar, so the 2019 tools still read it, with
  ``waypoint`` and ``clientonly`` added; what a test was is stored in the result's own block
  too, and a label is only parsed for results that lack it.

Modes come back in our spelling (``MODES``) with the spelling found kept in ``mode_spelling``.
A label that fits none of the grammars is not guessed at: ``parse`` returns None.
"""

from __future__ import annotations

import dataclasses
import re

# Ours, in the order the runner runs them. clientonly is a mode of labels we read (istio/tools
# runs it); the runner's own choice of modes lives in meshperf.platform.
MODES: tuple[str, ...] = (
    "baseline",
    "serversidecar",
    "clientonly",
    "both",
    "ingress",
    "waypoint",
)

# Mode suffix as written -> our mode. "baseline" and "clientsidecar" are spellings earlier
# meshperf CSV readers accepted; they cost nothing to keep readable.
SUFFIX_MODE: dict[str, str] = {
    "base": "baseline",
    "baseline": "baseline",
    "no_istio": "baseline",
    "serveronly": "serversidecar",
    "clientonly": "clientonly",
    "clientsidecar": "clientonly",
    "both": "both",
    "ingress": "ingress",
    "waypoint": "waypoint",
}

# Our mode -> the suffix format_label writes (the 2019 spellings where the 2019 scripts had one).
MODE_SUFFIX: dict[str, str] = {
    "baseline": "base",
    "serversidecar": "serveronly",
    "clientonly": "clientonly",
    "both": "both",
    "ingress": "ingress",
    "waypoint": "waypoint",
}

# Suffixes only istio/tools writes; a label ending in one of them is that scheme's.
_ISTIO_TOOLS_SUFFIXES = frozenset({"no_istio", "clientonly"})

# Telemetry modes seen in istio/tools (runner.py's --telemetry_mode help and defaults, the
# perf/benchmark/configs/*.yaml files) and the Mixer on/off label of late 2019
# (istio/tools 649931c9). Longest first, so "none_tcp" wins over "none".
TELEMETRY_MODES: tuple[str, ...] = tuple(
    sorted(
        {
            "mixer",
            "nomixer",
            "none",
            "none_tcp",
            "none_mtls",
            "no_istio",
            "istio_with_stats",
            "telemetryv2",
            "dryrun",
            "ingressgateway-tls-listener-stats",
        },
        key=lambda s: (-len(s), s),
    )
)
# istio/tools' Telemetry v2 variants: v2-nullvm, v2-sd-full-nullvm, v2-stats-wasm, ...
_TELEMETRY_V2 = r"v2-[A-Za-z0-9-]+"
LINKERD_TOKEN = "linkerd"

SCHEME_2019 = "istio-2019"
SCHEME_ISTIO_TOOLS = "istio-tools"
SCHEME_MESHPERF = "meshperf"

_SUFFIX_ALT = "|".join(sorted(map(re.escape, SUFFIX_MODE), key=lambda s: (-len(s), s)))
_LABEL_RE = re.compile(
    r"^(?P<prefix>nighthawk_)?(?P<run_id>[A-Za-z0-9]+)"
    r"_qps_(?P<qps>max|[0-9]+(?:\.[0-9]+)?)_c_(?P<conn>[0-9]+)_(?P<size>[0-9]+)"
    r"(?:_(?P<middle>.+?))?_(?P<mode>" + _SUFFIX_ALT + r")$"
)
_TELEMETRY_RE = re.compile(
    r"^(?P<telemetry>"
    + "|".join(map(re.escape, TELEMETRY_MODES))
    + "|"
    + _TELEMETRY_V2
    + "|"
    + LINKERD_TOKEN
    + r")(?:_(?P<extra>.+))?$"
)
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9]+$")
# What may go in a label part: it ends up in file names and Kubernetes label values.
_PART_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class LabelFacts:
    """What a label says about its test. ``qps`` is the requested total, None for ``max``."""

    mode: str
    conn: int
    qps: float | None
    size: int
    telemetry: str
    extra: str
    scheme: str
    run_id: str = ""
    mode_spelling: str = ""
    mesh: str = ""  # "linkerd" when the label says so; otherwise a label does not tell
    generator: str = ""  # "nighthawk" for istio/tools' Nighthawk runs, else "" (fortio or ours)

    @property
    def variant(self) -> str:
        """Everything between size and mode, as written: telemetry and extra labels together."""
        return "_".join(p for p in (self.telemetry, self.extra) if p)


def parse(label: str | None) -> LabelFacts | None:
    """The facts of a label any of the three runners wrote, or None (never guessed)."""
    m = _LABEL_RE.match(label or "")
    if m is None:
        return None
    spelling = m["mode"]
    middle = m["middle"] or ""
    telemetry = ""
    extra = middle
    mesh = ""
    t = _TELEMETRY_RE.match(middle)
    if t is not None:
        telemetry, extra = t["telemetry"], t["extra"] or ""
        if telemetry == LINKERD_TOKEN:
            telemetry, mesh = "", "linkerd"
    # "mixer"/"nomixer" sit where istio/tools put its telemetry mode from late 2019 on, but are
    # also what the 2019 README had users pass as --labels: they do not tell the scheme.
    tools_telemetry = telemetry not in ("", "mixer", "nomixer")
    if m["prefix"] or mesh or tools_telemetry or spelling in _ISTIO_TOOLS_SUFFIXES:
        scheme = SCHEME_ISTIO_TOOLS
    elif spelling == "waypoint":
        scheme = SCHEME_MESHPERF
    else:
        # The 2019 grammar is also ours: the label alone cannot tell them apart (our results
        # say so in their own block, which callers read first).
        scheme = SCHEME_2019
    return LabelFacts(
        mode=SUFFIX_MODE[spelling],
        conn=int(m["conn"]),
        qps=None if m["qps"] == "max" else float(m["qps"]),
        size=int(m["size"]),
        telemetry=telemetry,
        extra=extra,
        scheme=scheme,
        run_id=m["run_id"],
        mode_spelling=spelling,
        mesh=mesh,
        generator="nighthawk" if m["prefix"] else "",
    )


def format_qps(qps: float) -> str:
    """QPS as in labels and tables: ``max`` for 0, integers without ``.0``, exact otherwise."""
    if qps == 0:
        return "max"
    return str(int(qps)) if float(qps).is_integer() else f"{qps:.15g}"


def format_label(
    run_id: str,
    qps: float,
    conn: int,
    size: int,
    mode: str,
    extra: str = "",
    telemetry: str = "",
) -> str:
    """Our label: ``<runid>_qps_<qps>_c_<conn>_<size>[_<telemetry>][_<extra>]_<mode suffix>``.

    ``parse`` reads it back to the same facts (telemetry only when it is one istio/tools uses).
    Raises ValueError for a part that would make the label unreadable.
    """
    if not _RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} must be letters and digits")
    if mode not in MODE_SUFFIX:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if conn < 1 or size < 0 or qps < 0:
        raise ValueError(f"conn {conn}, size {size} and qps {qps} must be >= 1, >= 0, >= 0")
    for what, part in (("telemetry", telemetry), ("extra labels", extra)):
        if part and not _PART_RE.fullmatch(part):
            raise ValueError(f"{what} {part!r} may only contain A-Z a-z 0-9 _ . -")
    parts = [run_id, "qps", format_qps(qps), "c", str(conn), str(size)]
    parts += [p for p in (telemetry, extra) if p]
    parts.append(MODE_SUFFIX[mode])
    return "_".join(parts)
