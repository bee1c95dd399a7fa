"""CPU and memory of the mesh's proxies over a test's window, from Prometheus (cAdvisor series).

CPU is ``rate(container_cpu_usage_seconds_total[<rate window>])`` in millicores; memory is
``container_memory_working_set_bytes`` in MB (MiB, as the 2019 scripts reported it). Each is read
with one ``query_range`` at a fixed step, per pod and container, under both cAdvisor label
schemes (``pod``/``container`` and the pre-Kubernetes-1.16 ``pod_name``/``container_name``).
The series are mapped to workload keys (``fortioserver_deployment_proxy``, ...), summed per
workload *by timestamp*, and reduced to min/avg/max over the window.

The skips at both ends of a test and the minimum test length follow from the scrape interval
(read from the server's ``/api/v1/status/config``) and the rate window; ``docs/prometheus.md``
gives the derivation. Every failure to talk to Prometheus is a one-line ``PrometheusError``.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import json
import logging
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from meshperf.errors import PrometheusError
from meshperf.kube import paths
from meshperf.platform import (
    RESOURCE_CLIENT_PROXY,
    RESOURCE_INGRESS_PROXY,
    RESOURCE_LOADGEN,
    RESOURCE_SERVER_APP,
    RESOURCE_SERVER_PROXY,
)

log = logging.getLogger(__name__)

CPU_METRIC = "container_cpu_usage_seconds_total"
# Not container_memory_usage_bytes: that one includes page cache the kernel can drop at will,
# so a proxy writing access logs looks like it is leaking.
MEM_METRIC = "container_memory_working_set_bytes"
# cAdvisor's CFS counters: scheduling periods, and those in which the quota ran out.
THROTTLED_METRIC = "container_cpu_cfs_throttled_periods_total"
PERIODS_METRIC = "container_cpu_cfs_periods_total"

BYTES_PER_MB = 1024 * 1024
MILLICORES_PER_CORE = 1000.0

# Prometheus' own default when the config has no global.scrape_interval.
DEFAULT_SCRAPE_INTERVAL_S = 60.0
# rate() needs two samples in its window; four leave room for a missed scrape or two and match
# the usual "rate window >= 4 x scrape interval" rule (the 2019 scripts: 1m over 15 s scrapes).
RATE_WINDOW_SCRAPES = 4
# Clocks of the load generator's host and of Prometheus are not the same clock.
CLOCK_SLACK_S = 2.0
# A sample stamped t describes cAdvisor's view of up to one housekeeping period (~ one scrape)
# earlier, and the last scrape before the end may fall up to one interval before it.
END_SKIP_SCRAPES = 2
# Prometheus refuses query_range with more than 11000 points per series.
MAX_POINTS = 11000

RESOURCE_SERVER_UNCAPTURED = "fortioserver_deployment_uncaptured"
RESOURCE_ZTUNNEL = "ztunnel"
RESOURCE_WAYPOINT = "waypoint_proxy"
RESOURCE_TELEMETRY_MIXER = "telemetry_mixer"
RESOURCE_POLICY_MIXER = "policy_mixer"

# The proxy container names live with the meshes' other facts (meshperf.kube.paths).
PROXY_CONTAINERS = paths.PROXY_CONTAINERS
# Init containers have exited before a test; their leftover series are not load.
INIT_CONTAINERS = frozenset({"istio-init", "istio-validation", "linkerd-init",
                             "linkerd-network-validator"})
# cAdvisor's pod-level cgroup ("") and the pause container ("POD") repeat the containers'
# usage: counting them would double every total.
POD_LEVEL_CONTAINERS = ("", "POD")

# Pod-name prefixes of every workload we report, for the server-side pod filter.
POD_PREFIXES = ("fortioserver-", "fortioclient-", "fortio-", "istio-ingressgateway-", "ztunnel-",
                "waypoint-", "istio-telemetry-", "istio-policy-")
WAYPOINT_INFIX = "-waypoint-"

# Label schemes: (pod label, container label). Kubernetes 1.14/1.15 set both on one series.
LABEL_SCHEMES: tuple[tuple[str, str], ...] = (("pod", "container"), ("pod_name", "container_name"))

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
MATCH_OPS = ("=", "!=", "=~", "!~")
_RE2_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


Window = tuple[dt.datetime, dt.datetime]
# {"fortioserver_deployment_proxy": {"cpu_mili": {"min": .., "avg": .., "max": ..}, "mem_MB": ..}}
Resources = dict[str, dict[str, dict[str, float]]]


# --- PromQL builder -------------------------------------------------------------------------


def promql_string(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal.

    JSON's escapes (``\\"``, ``\\\\``, ``\\n``, ``\\u00XX``) are a subset of Go's, which PromQL
    uses, so nothing a user types can end the string early.
    """
    return json.dumps(value, ensure_ascii=False)


def regex_literal(text: str) -> str:
    """``text`` escaped so an RE2 regex (PromQL ``=~``) matches it literally."""
    return _RE2_META.sub(r"\\\1", text)


@dataclasses.dataclass(frozen=True)
class Matcher:
    """One label matcher, ``label op "value"``; validated when made, escaped when rendered."""

    label: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if not _LABEL_NAME.match(self.label):
            raise ValueError(f"invalid label name {self.label!r}")
        if self.op not in MATCH_OPS:
            raise ValueError(f"invalid matcher operator {self.op!r}")
        if not isinstance(self.value, str):
            raise ValueError(f"label value must be a string, got {self.value!r}")

    def render(self) -> str:
        return f"{self.label}{self.op}{promql_string(self.value)}"


def vector_selector(metric: str, matchers: Iterable[Matcher]) -> str:
    """``metric{m1,m2,...}``."""
    if not _METRIC_NAME.match(metric):
        raise ValueError(f"invalid metric name {metric!r}")
    return metric + "{" + ",".join(m.render() for m in matchers) + "}"


_SEL_MATCHER = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)\s*"""
)
_GO_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "a": "\a",
               "b": "\b", "f": "\f", "v": "\v"}


def _unquote(lit: str) -> str:
    """The value of a PromQL string literal (the common Go escapes; ``\\x``/``\\u`` refused)."""
    if lit[0] == "`":
        return lit[1:-1]
    body = lit[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]  # the matcher regex guarantees a character after a backslash
            if nxt not in _GO_ESCAPES:
                raise ValueError(f"unsupported escape \\{nxt} in {lit}")
            out.append(_GO_ESCAPES[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_selector(text: str) -> tuple[Matcher, ...]:
    """Matchers from user text such as ``job="kubernetes-cadvisor", namespace=~"twopods|x"``.

    Braces around the list are allowed. Values are decoded here and re-escaped on render, so
    the text can only ever add label matchers to a selector.
    """
    s = text.strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1]
    matchers: list[Matcher] = []
    pos = 0
    while pos < len(s):
        m = _SEL_MATCHER.match(s, pos)
        if m is None:
            raise ValueError(
                f"cannot parse label matcher at {s[pos:pos + 20]!r}; "
                'expected label="value" (or !=, =~, !~), comma-separated'
            )
        matchers.append(Matcher(m.group(1), m.group(2), _unquote(m.group(3))))
        pos = m.end()
        if pos < len(s):
            if s[pos] != ",":
                raise ValueError(f"expected ',' at {s[pos:pos + 20]!r}")
            pos += 1
            if not s[pos:].strip():
                break  # a trailing comma, as PromQL allows
    if not matchers and s.strip():
        raise ValueError(f"no label matcher in {text!r}")
    return tuple(matchers)


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
                   "w": 7 * 86400.0, "y": 365 * 86400.0}


def parse_prom_duration(text: str) -> float:
    """Seconds of a Prometheus duration (``15s``, ``1m30s``, ``500ms``)."""
    s = str(text).strip()
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if m is None:
            raise ValueError(f"invalid Prometheus duration {text!r}")
        total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s or total <= 0:
        raise ValueError(f"invalid Prometheus duration {text!r}")
    return total


def format_prom_duration(seconds: float) -> str:
    """``60.0`` -> ``"60s"``, ``1.5`` -> ``"1500ms"``."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _pod_regex() -> str:
    prefixes = "|".join(regex_literal(p) for p in POD_PREFIXES)
    return f"(?:{prefixes}).*|.*{regex_literal(WAYPOINT_INFIX)}.*"


def resource_queries(rate_window_s: float, extra: Sequence[Matcher] = ()) -> tuple[str, str]:
    """The (CPU, memory) PromQL: one selector per label scheme joined with ``or``.

    ``or`` keeps a series that carries both schemes once; the pod-level series are dropped on
    the server already.
    """
    window = format_prom_duration(rate_window_s)
    pods = _pod_regex()
    cpu_parts: list[str] = []
    mem_parts: list[str] = []
    for pod_label, container_label in LABEL_SCHEMES:
        base = [Matcher(pod_label, "=~", pods)]
        base += [Matcher(container_label, "!=", c) for c in POD_LEVEL_CONTAINERS]
        base += list(extra)
        # Old cAdvisors also exported per-CPU series beside cpu="total"; newer ones no label.
        cpu_sel = vector_selector(CPU_METRIC, [*base, Matcher("cpu", "=~", "total|")])
        cpu_parts.append(f"rate({cpu_sel}[{window}])")
        mem_parts.append(vector_selector(MEM_METRIC, base))
    return " or ".join(cpu_parts), " or ".join(mem_parts)


def throttling_queries(window_s: float, extra: Sequence[Matcher] = ()) -> tuple[str, str]:
    """The (throttled periods, periods) PromQL: CFS periods counted over the whole window.

    ``increase`` over the window evaluated at its end gives one value per container; only
    containers with a CPU limit have CFS periods. meshperf.trust warns on their ratio.
    """
    window = format_prom_duration(window_s)
    pods = _pod_regex()
    throttled: list[str] = []
    periods: list[str] = []
    for pod_label, container_label in LABEL_SCHEMES:
        base = [Matcher(pod_label, "=~", pods)]
        base += [Matcher(container_label, "!=", c) for c in POD_LEVEL_CONTAINERS]
        base += list(extra)
        throttled.append(f"increase({vector_selector(THROTTLED_METRIC, base)}[{window}])")
        periods.append(f"increase({vector_selector(PERIODS_METRIC, base)}[{window}])")
    return " or ".join(throttled), " or ".join(periods)


# --- workloads ------------------------------------------------------------------------------


def classify(pod: str, container: str) -> str | None:
    """The resource key a pod's container counts towards, or None if it is not reported."""
    if container in POD_LEVEL_CONTAINERS or container in INIT_CONTAINERS:
        return None
    proxy = container in PROXY_CONTAINERS
    # Waypoints first: a waypoint for the server may well be named "fortioserver-waypoint".
    if pod.startswith("waypoint-") or WAYPOINT_INFIX in pod:
        return RESOURCE_WAYPOINT
    if pod.startswith("ztunnel-"):
        return RESOURCE_ZTUNNEL
    if pod.startswith("istio-ingressgateway-"):
        return RESOURCE_INGRESS_PROXY if proxy else None
    if pod.startswith("istio-telemetry-"):
        return RESOURCE_TELEMETRY_MIXER if container == "mixer" else None
    if pod.startswith("istio-policy-"):
        return RESOURCE_POLICY_MIXER if container == "mixer" else None
    if pod.startswith("fortioserver-"):
        if proxy:
            return RESOURCE_SERVER_PROXY
        return {"captured": RESOURCE_SERVER_APP,
                "uncaptured": RESOURCE_SERVER_UNCAPTURED}.get(container)
    if pod.startswith(("fortioclient-", "fortio-")):
        return RESOURCE_CLIENT_PROXY if proxy else RESOURCE_LOADGEN
    return None


def _identity(labels: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(namespace, pod, container) under whichever label scheme the series uses."""
    for pod_label, container_label in LABEL_SCHEMES:
        pod = labels.get(pod_label, "")
        if pod:
            return labels.get("namespace", ""), pod, labels.get(container_label, "")
    return None


def _stats(values: Iterable[float]) -> dict[str, float]:
    vals = list(values)
    return {"min": min(vals), "avg": math.fsum(vals) / len(vals), "max": max(vals)}


def summarize(
    series: Sequence[Mapping[str, Any]], scale: float, ztunnels: Collection[str] | None = None
) -> dict[str, dict[str, float]]:
    """Per-workload min/avg/max of ``scale`` x (sum over its containers at each timestamp).

    ``ztunnels``: the ztunnel pods that carried the test (those on the client's and the
    server's nodes, as the kubernetes platform records them); the idle ztunnels of every other
    node are left out. None counts every ztunnel (results that do not say).

    ``series`` is a query_range ``result``. Timestamps are matched by value, never by list
    position: a container whose series starts late, or misses a step, only contributes where
    it has points. The same container seen twice (two label schemes on two series, or two
    scrape jobs) counts once, with the larger value.
    """
    per_container: dict[tuple[str, str, str, str], dict[int, float]] = {}
    for s in series:
        labels = s.get("metric") or {}
        ident = _identity(labels)
        if ident is None:
            continue
        key = classify(ident[1], ident[2])
        if key is None or (key == RESOURCE_ZTUNNEL and ztunnels is not None
                           and ident[1] not in ztunnels):
            continue
        points = per_container.setdefault((key, *ident), {})
        for ts, raw in s.get("values") or ():
            v = float(raw)
            if not math.isfinite(v):
                continue
            t_ms = round(float(ts) * 1000)  # step timestamps are exact to the millisecond
            points[t_ms] = max(points.get(t_ms, v), v)
    totals: dict[str, dict[int, float]] = {}
    for (key, *_ident), points in per_container.items():
        total = totals.setdefault(key, {})
        for t_ms, v in points.items():
            total[t_ms] = total.get(t_ms, 0.0) + v
    return {key: _stats(v * scale for v in total.values())
            for key, total in sorted(totals.items()) if total}


# --- timing ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    """Rate window, skips and minimum test length derived from one scrape interval."""

    scrape_interval: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scrape_interval) and self.scrape_interval > 0):
            raise ValueError(f"scrape interval must be > 0, got {self.scrape_interval}")

    @property
    def rate_window(self) -> float:
        return RATE_WINDOW_SCRAPES * self.scrape_interval

    @property
    def start_skip(self) -> float:
        # The first rate must see only samples taken after the test started.
        return self.rate_window + CLOCK_SLACK_S

    @property
    def end_skip(self) -> float:
        return END_SKIP_SCRAPES * self.scrape_interval

    @property
    def min_duration(self) -> float:
        # At exactly this length the window is one instant: one rate over a full window.
        return self.start_skip + self.end_skip

    def step(self, span_s: float) -> float:
        """One point per scrape, coarser only if Prometheus' point limit demands it."""
        return max(self.scrape_interval, math.ceil(span_s / (MAX_POINTS - 1)))

    def window(self, start: dt.datetime, duration_s: float) -> Window | str:
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"test duration must be > 0, got {duration_s}")
        if duration_s < self.min_duration:
            return (
                f"test too short for CPU/memory: {duration_s:g}s < {self.min_duration:g}s "
                f"(skip {self.start_skip:g}s = rate window {self.rate_window:g}s "
                f"+ {CLOCK_SLACK_S:g}s at the start, {self.end_skip:g}s at the end, "
                f"for {self.scrape_interval:g}s scrapes)"
            )
        return (start + dt.timedelta(seconds=self.start_skip),
                start + dt.timedelta(seconds=duration_s - self.end_skip))


def scrape_interval_from_config(config_yaml: str, job: str | None = None) -> float:
    """The scrape interval (s) a Prometheus config gives ``job``, else its global one (1m)."""
    try:
        config = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"unreadable Prometheus config: {e}") from None
    if not isinstance(config, dict):
        raise ValueError("unreadable Prometheus config: not a mapping")
    glob = config.get("global") or {}
    interval = DEFAULT_SCRAPE_INTERVAL_S
    if isinstance(glob, dict) and glob.get("scrape_interval"):
        interval = parse_prom_duration(glob["scrape_interval"])
    if job is not None:
        for sc in config.get("scrape_configs") or ():
            if isinstance(sc, dict) and sc.get("job_name") == job and sc.get("scrape_interval"):
                interval = parse_prom_duration(sc["scrape_interval"])
    return interval


# --- the source -----------------------------------------------------------------------------


def _one_line(text: str, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _request_reason(e: requests.RequestException) -> str:
    if isinstance(e, requests.Timeout) or "timed out" in str(e):
        return "timed out"
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(e))
    if m:
        return m.group(1).strip().lower()
    return _one_line(str(e), 160) or type(e).__name__


def _api_error(e: PrometheusApiClientException) -> str:
    """'HTTP Status Code 400 (b'{...}')' -> 'HTTP 400: bad_data: <Prometheus' message>'."""
    m = re.match(r"HTTP Status Code (\d+) \((.*)\)\Z", str(e), re.S)
    if not m:
        return _one_line(str(e))
    status, body = m.group(1), m.group(2)
    detail = body
    try:
        raw = ast.literal_eval(body)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        detail = text
        doc = json.loads(text)
        if isinstance(doc, dict) and doc.get("error"):
            detail = f"{doc.get('errorType', 'error')}: {doc['error']}"
    except (ValueError, SyntaxError):
        pass
    return _one_line(f"HTTP {status}: {detail}" if detail.strip() else f"HTTP {status}")


class PrometheusSource:
    """Reads per-workload CPU/memory for test windows from one Prometheus server."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        selector: str | None = None,
        scrape_interval: float | None = None,
    ) -> None:
        """``selector``: extra label matchers added to every series selector, e.g.
        ``job="kubernetes-cadvisor"``. ``scrape_interval`` (s) overrides the server's config.
        """
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PrometheusError(
                f"not an http(s) URL: {url!r}", hint="e.g. --prometheus http://127.0.0.1:9090"
            )
        if not (math.isfinite(timeout) and timeout > 0):
            raise PrometheusError(f"timeout must be > 0, got {timeout}")
        try:
            self.matchers = parse_selector(selector) if selector else ()
        except ValueError as e:
            raise PrometheusError(
                f"bad selector {selector!r}: {e}", hint='e.g. --prom-selector \'job="kubelet"\''
            ) from None
        self.url = url.strip().rstrip("/")
        self.timeout = float(timeout)
        self._scrape_override = scrape_interval
        self._timing: Timing | None = None if scrape_interval is None else Timing(scrape_interval)
        self._session = requests.Session()
        # Retry refused connects and 502-504 (a port-forward or server starting) briefly; a
        # read timeout is not retried so a hung server costs one timeout, not three, and a
        # Retry-After header cannot stretch the wait past the timeout we promised.
        retry = Retry(total=2, connect=2, read=False, status=2, other=0, backoff_factor=0.2,
                      status_forcelist=(502, 503, 504), allowed_methods=None,
                      raise_on_status=False, respect_retry_after_header=False)
        self._client = PrometheusConnect(url=self.url, session=self._session, retry=retry,
                                         timeout=self.timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def job(self) -> str | None:
        """The job the selector pins with ``job="..."``, whose own scrape interval applies."""
        for m in self.matchers:
            if m.label == "job" and m.op == "=":
                return m.value
        return None

    def _fail(self, what: str, reason: str) -> PrometheusError:
        return PrometheusError(
            _one_line(f"{what} at {self.url}: {reason}"),
            hint="is Prometheus port-forwarded? kubectl -n istio-prometheus port-forward "
            "svc/prometheus 9090:9090, then --prometheus http://127.0.0.1:9090",
        )

    def timing(self) -> Timing:
        """Timing from the scrape interval in the server's config (fetched once)."""
        if self._timing is not None:
            return self._timing
        try:
            resp = self._session.get(f"{self.url}/api/v1/status/config", timeout=self.timeout)
        except requests.RequestException as e:
            raise self._fail("cannot reach Prometheus", _request_reason(e)) from None
        interval = DEFAULT_SCRAPE_INTERVAL_S
        if resp.status_code in (401, 403, 404, 405, 501):
            # Not every Prometheus-compatible server (or proxy) exposes its config.
            log.warning("%s: no config API (HTTP %s); assuming %gs scrapes",
                        self.url, resp.status_code, interval)
        elif resp.status_code != 200:
            raise self._fail("Prometheus config API failed", f"HTTP {resp.status_code}")
        else:
            try:
                interval = scrape_interval_from_config(resp.json()["data"]["yaml"], self.job)
            except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
                raise self._fail("unexpected /api/v1/status/config answer",
                                 str(e) or type(e).__name__) from None
        self._timing = Timing(interval)
        return self._timing

    def window(self, start: dt.datetime, duration_s: float) -> Window | str:
        """(start, end) to query for a test that started at ``start`` and ran ``duration_s``,
        or the reason it is too short to say anything about CPU/memory."""
        _require_aware(start)
        return self.timing().window(start, duration_s)

    def _query_range(self, query: str, start: dt.datetime, end: dt.datetime,
                     step: float) -> list[dict[str, Any]]:
        try:
            result = self._client.custom_query_range(
                query, start_time=start, end_time=end, step=f"{step:g}",
                params={"timeout": format_prom_duration(self.timeout)},
            )
        except (requests.JSONDecodeError, KeyError, TypeError) as e:
            # a 200 that is not a Prometheus answer: the URL points at something else
            raise self._fail("not a Prometheus API answer", type(e).__name__) from None
        except requests.RequestException as e:
            raise self._fail("cannot reach Prometheus", _request_reason(e)) from None
        except PrometheusApiClientException as e:
            raise self._fail("Prometheus query failed", _api_error(e)) from None
        if not isinstance(result, list):
            raise self._fail("not a Prometheus API answer", "result is not a list")
        return result

    def resources(
        self, start: dt.datetime, end: dt.datetime, ztunnels: Collection[str] | None = None
    ) -> Resources:
        """``{key: {"cpu_mili": {"min","avg","max"}, "mem_MB": {...}}}`` over [start, end].

        A workload without series is absent; a workload with only one metric has only that.
        ``ztunnels`` limits the ztunnel column to those pods (see ``summarize``).
        """
        _require_aware(start)
        _require_aware(end)
        if end < start:
            raise ValueError(f"window end {end} is before its start {start}")
        timing = self.timing()
        step = timing.step((end - start).total_seconds())
        cpu_q, mem_q = resource_queries(timing.rate_window, self.matchers)
        cpu = summarize(self._query_range(cpu_q, start, end, step), MILLICORES_PER_CORE, ztunnels)
        mem = summarize(self._query_range(mem_q, start, end, step), 1.0 / BYTES_PER_MB, ztunnels)
        out: Resources = {}
        for key in sorted(cpu.keys() | mem.keys()):
            entry: dict[str, dict[str, float]] = {}
            if key in cpu:
                entry["cpu_mili"] = cpu[key]
            if key in mem:
                entry["mem_MB"] = mem[key]
            out[key] = entry
        return out


def throttling(
    source: PrometheusSource, start: dt.datetime, end: dt.datetime
) -> dict[str, dict[str, float]]:
    """``{key: {"throttled": share of CFS periods throttled, "periods": n}}`` over [start, end]
    (``meshperf.throttled``); workloads without a CPU limit have no periods and are absent."""
    _require_aware(start)
    _require_aware(end)
    span = (end - start).total_seconds()
    if span <= 0:
        return {}
    thr_q, per_q = throttling_queries(span, source.matchers)
    step = max(span, source.timing().scrape_interval)
    thr = summarize(source._query_range(thr_q, end, end, step), 1.0)
    per = summarize(source._query_range(per_q, end, end, step), 1.0)
    out: dict[str, dict[str, float]] = {}
    for key, p in per.items():
        if p["avg"] > 0:
            t = thr.get(key, {}).get("avg", 0.0)
            out[key] = {"throttled": round(t / p["avg"], 4), "periods": round(p["avg"], 1)}
    return out


def _require_aware(t: dt.datetime) -> None:
    # A naive time would be read as this machine's local time: the 2019 scripts' StartTime[:19] bug.
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"datetime must carry a time zone: {t.isoformat()}")
