"""meshperf.prom against a real Prometheus serving backfilled cAdvisor-style series.

Expected values are computed from the generator's parameters (``tests/promserver.py``), never
from meshperf's output: each container says which resource key it must count towards.
"""

from __future__ import annotations

import datetime as dt
import http.server
import math
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from meshperf import prom
from meshperf.errors import PrometheusError
from needs import missing, skip_unless
from promserver import MB, Container, Dataset, free_port, have_prometheus, running_prometheus

needs_prometheus = skip_unless(have_prometheus(), "prometheus/promtool missing")

SCRAPE = 15.0
RATE_WINDOW = 4 * SCRAPE
T0 = (int(time.time()) - 4 * 3600) // 3600 * 3600  # hours in the past: backfill rules
SRV_PROXY = "fortioserver_deployment_proxy"

CONTAINERS: tuple[Container, ...] = (
    # server pod 1, current label scheme; proxy memory steps from 40 to 60 MB at 900 s
    Container("fortioserver-6d5c9-aaaaa", "istio-proxy", cores=((0, 0.25),),
              mem_mb=((0, 40.0), (900, 60.0)), expect_key=SRV_PROXY),
    Container("fortioserver-6d5c9-aaaaa", "captured", cores=((0, 0.1),), mem_mb=((0, 10.0),),
              expect_key="fortioserver_deployment_captured"),
    Container("fortioserver-6d5c9-aaaaa", "uncaptured", cores=((0, 0.02),),
              mem_mb=((0, 8.0),), expect_key="fortioserver_deployment_uncaptured"),
    # cAdvisor's pod cgroup and pause container: already included in the containers above
    Container("fortioserver-6d5c9-aaaaa", "", cores=((0, 0.371),), mem_mb=((0, 59.0),)),
    Container("fortioserver-6d5c9-aaaaa", "POD", cores=((0, 0.001),), mem_mb=((0, 1.0),)),
    # server pod 2, pre-1.16 labels, scraped 7 s off the grid; its uncaptured container
    # appears late (600 s): sums by list position would misplace it
    Container("fortioserver-6d5c9-bbbbb", "istio-proxy", cores=((0, 0.15),), mem_mb=((0, 30.0),),
              scheme="old", phase_s=7, extra_labels=(("cpu", "total"),), expect_key=SRV_PROXY),
    Container("fortioserver-6d5c9-bbbbb", "istio-proxy", cores=((0, 0.9),), scheme="old",
              phase_s=7, metrics=(prom.CPU_METRIC,), extra_labels=(("cpu", "cpu00"),)),
    Container("fortioserver-6d5c9-bbbbb", "uncaptured", cores=((0, 0.04),), mem_mb=((0, 4.0),),
              scheme="old", phase_s=7, first_s=600,
              expect_key="fortioserver_deployment_uncaptured"),
    Container("fortioserver-6d5c9-bbbbb", "", cores=((0, 0.19),), mem_mb=((0, 34.0),),
              scheme="old", phase_s=7),
    Container("fortioserver-6d5c9-bbbbb", "POD", cores=((0, 0.001),), mem_mb=((0, 1.0),),
              scheme="old", phase_s=7),
    # client: old labels; proxy CPU steps from 0.3 to 0.5 cores at 900 s
    Container("fortioclient-7f8d-ccccc", "istio-proxy", cores=((0, 0.3), (900, 0.5)),
              mem_mb=((0, 50.0),), scheme="old", expect_key="fortio_deployment_proxy"),
    Container("fortioclient-7f8d-ccccc", "captured", cores=((0, 0.5),), mem_mb=((0, 20.0),),
              scheme="old", expect_key="fortio_deployment_loadgen"),
    Container("fortioclient-7f8d-ccccc", "istio-init", cores=((0, 0.0),), mem_mb=((0, 3.0),),
              scheme="old"),
    Container("fortioclient-7f8d-ccccc", "", cores=((0, 0.81),), mem_mb=((0, 73.0),),
              scheme="old"),
    Container("fortioclient-7f8d-ccccc", "POD", cores=((0, 0.001),), mem_mb=((0, 1.0),),
              scheme="old"),
    # one series carrying both schemes (Kubernetes 1.14/1.15): must count once
    Container("istio-ingressgateway-55d9-ddddd", "istio-proxy", cores=((0, 0.2),),
              mem_mb=((0, 45.0),), scheme="both", phase_s=3, expect_key="ingressgateway_proxy"),
    # ztunnel seen by two jobs under the two schemes: one container, counted once
    Container("ztunnel-eeeee", "istio-proxy", cores=((0, 0.05),), mem_mb=((0, 12.0),),
              namespace="istio-system", expect_key="ztunnel"),
    Container("ztunnel-eeeee", "istio-proxy", cores=((0, 0.05),), mem_mb=((0, 12.0),),
              namespace="istio-system", scheme="old", job="kubelet"),
    Container("waypoint-5b6c-fffff", "istio-proxy", cores=((0, 0.12),), mem_mb=((0, 25.0),),
              expect_key="waypoint_proxy"),
    Container("istio-telemetry-66f-ggggg", "mixer", cores=((0, 0.6),), mem_mb=((0, 100.0),),
              namespace="istio-system", scheme="old", expect_key="telemetry_mixer"),
    Container("istio-telemetry-66f-ggggg", "istio-proxy", cores=((0, 0.07),),
              mem_mb=((0, 22.0),), namespace="istio-system", scheme="old"),
    Container("istio-policy-77a-hhhhh", "mixer", cores=((0, 0.08),), mem_mb=((0, 33.0),),
              namespace="istio-system", scheme="old", expect_key="policy_mixer"),
    # another benchmark's server in another namespace, scraped by another job
    Container("fortioserver-9a9a-zzzzz", "istio-proxy", cores=((0, 1.0),), mem_mb=((0, 200.0),),
              namespace="other", job="other-job", expect_key=SRV_PROXY),
    # not a workload we report
    Container("kube-dns-1234-iiiii", "kubedns", cores=((0, 0.3),), mem_mb=((0, 15.0),),
              namespace="kube-system"),
)
DATASET = Dataset(t0=T0, duration_s=1800, interval_s=SCRAPE, containers=CONTAINERS)


@pytest.fixture(scope="module")
def prom_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not have_prometheus():
        missing("prometheus/promtool missing")
    with running_prometheus(tmp_path_factory.mktemp("prom"), DATASET, scrape_interval="15s",
                            job_intervals={"kubelet": "30s"}) as url:
        yield url


def at(rel_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(T0 + rel_s, tz=dt.UTC)


def expected(
    start_rel: float, end_rel: float, include: Callable[[Container], bool] = lambda c: True
) -> dict[str, dict[str, dict[str, float]]]:
    """What the generator's series imply for the window, workload by workload."""
    times = [start_rel + k * SCRAPE for k in range(int((end_rel - start_rel) // SCRAPE) + 1)]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for metric, value, scale in (
        ("cpu_mili", lambda c, t: DATASET.expected_rate(c, t, RATE_WINDOW), 1000.0),
        ("mem_MB", DATASET.expected_gauge, 1.0 / MB),
    ):
        totals: dict[str, dict[float, float]] = {}
        for c in CONTAINERS:
            if c.expect_key is None or not include(c):
                continue
            for t in times:
                v = value(c, t)
                if v is not None:
                    tot = totals.setdefault(c.expect_key, {})
                    tot[t] = tot.get(t, 0.0) + v * scale
        for key, tot in totals.items():
            vals = list(tot.values())
            out.setdefault(key, {})[metric] = {
                "min": min(vals), "avg": math.fsum(vals) / len(vals), "max": max(vals)}
    return out


def assert_resources(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key, metrics in want.items():
        assert sorted(got[key]) == sorted(metrics), key
        for metric, stats in metrics.items():
            for stat, v in stats.items():
                assert got[key][metric][stat] == pytest.approx(v, rel=1e-9, abs=1e-9), (
                    key, metric, stat)


# --- against the real server ----------------------------------------------------------------


@pytest.mark.prometheus
@needs_prometheus
def test_resources_match_series(prom_url: str) -> None:
    with prom.PrometheusSource(prom_url, timeout=5) as src:
        got = src.resources(at(360), at(1200))
    assert_resources(got, expected(360, 1200))


@pytest.mark.prometheus
@needs_prometheus
def test_readable_numbers(prom_url: str) -> None:
    """The same facts in plain numbers from the parameters above, for a reader to check."""
    with prom.PrometheusSource(prom_url, timeout=5, selector='namespace!="other"') as src:
        got = src.resources(at(360), at(1200))
    srv = got[SRV_PROXY]
    # 250 + 150 millicores, per-CPU and pod-level series not added
    assert srv["cpu_mili"] == pytest.approx({"min": 400, "avg": 400, "max": 400})
    assert srv["mem_MB"]["min"] == pytest.approx(70) and srv["mem_MB"]["max"] == pytest.approx(90)
    # 8 MB alone until the second pod's first sample at 607 s, then 8 + 4: aligned by time
    unc = got["fortioserver_deployment_uncaptured"]["mem_MB"]
    n_before, n_after = len(range(360, 607, 15)), len(range(615, 1201, 15))
    assert unc == pytest.approx(
        {"min": 8, "max": 12, "avg": (8 * n_before + 12 * n_after) / (n_before + n_after)})
    unc_cpu = got["fortioserver_deployment_uncaptured"]["cpu_mili"]
    assert unc_cpu["min"] == pytest.approx(20) and unc_cpu["max"] == pytest.approx(60)
    assert 20 < unc_cpu["avg"] < 60
    # one series with both label schemes and one container seen by two jobs: counted once
    assert got["ingressgateway_proxy"]["cpu_mili"]["avg"] == pytest.approx(200)
    assert got["ingressgateway_proxy"]["mem_MB"]["max"] == pytest.approx(45)
    assert got["ztunnel"]["cpu_mili"]["max"] == pytest.approx(50)
    # client proxy: 300 then 500 millicores
    cli = got["fortio_deployment_proxy"]["cpu_mili"]
    assert cli["min"] == pytest.approx(300) and cli["max"] == pytest.approx(500)


@pytest.mark.prometheus
@needs_prometheus
@pytest.mark.parametrize(
    ("selector", "include"),
    [
        ('namespace="twopods"', lambda c: c.namespace == "twopods"),
        ('job="kubernetes-cadvisor"', lambda c: c.job == "kubernetes-cadvisor"),
        ('{namespace=~"twopods|istio-system", job!="other-job",}',
         lambda c: c.namespace in ("twopods", "istio-system")),
    ],
)
def test_selector_narrows(
    prom_url: str, selector: str, include: Callable[[Container], bool]
) -> None:
    with prom.PrometheusSource(prom_url, timeout=5, selector=selector) as src:
        got = src.resources(at(360), at(1200))
    want = expected(360, 1200, include)
    assert_resources(got, want)
    assert got[SRV_PROXY] != expected(360, 1200)[SRV_PROXY]  # the other namespace's is gone


@pytest.mark.prometheus
@needs_prometheus
def test_window_then_resources(prom_url: str) -> None:
    """A 600 s test started at 300 s: the window skips 62 s and 30 s; off-grid steps."""
    with prom.PrometheusSource(prom_url, timeout=5) as src:
        window = src.window(at(300.5), 600)
        assert window == (at(362.5), at(870.5))
        assert not isinstance(window, str)
        got = src.resources(*window)
    # query_range takes whole seconds (round half to even: T0 is even)
    assert_resources(got, expected(362, 870))


@pytest.mark.prometheus
@needs_prometheus
def test_window_derivation_from_config(prom_url: str) -> None:
    start = at(0)
    with prom.PrometheusSource(prom_url) as src:
        t = src.timing()
        assert (t.scrape_interval, t.rate_window, t.start_skip, t.end_skip, t.min_duration) == (
            15, 60, 62, 30, 92)
        assert src.window(start, 92) == (at(62), at(62))
        short = src.window(start, 91.5)
        assert isinstance(short, str)
        assert "too short" in short and "92s" in short and "\n" not in short
    # the job the selector pins has its own 30 s interval in the config
    with prom.PrometheusSource(prom_url, selector='job="kubelet"') as src:
        assert src.timing().scrape_interval == 30
        assert src.window(start, 300) == (at(122), at(240))
        assert "182s" in str(src.window(start, 181))


@pytest.mark.prometheus
@needs_prometheus
def test_bad_query_is_one_line_error(prom_url: str) -> None:
    with prom.PrometheusSource(prom_url, selector='namespace=~"("') as src:
        with pytest.raises(PrometheusError) as e:
            src.resources(at(360), at(1200))
    msg = str(e.value)
    assert "HTTP 400" in msg and "bad_data" in msg and "\n" not in msg


@pytest.mark.prometheus
@needs_prometheus
def test_selector_values_are_escaped(prom_url: str) -> None:
    # Unescaped, this would close the string and the selector and inject "or" a query.
    sel = r'namespace="x\"} or container_memory_working_set_bytes{namespace=\"twopods"'
    with prom.PrometheusSource(prom_url, selector=sel) as src:
        assert src.resources(at(360), at(1200)) == {}


@pytest.mark.prometheus
@needs_prometheus
def test_minimum_length_test_gives_one_point(prom_url: str) -> None:
    """A 92 s test: start and end of the window coincide; one full rate window is read."""
    with prom.PrometheusSource(prom_url, timeout=5) as src:
        window = src.window(at(300), 92)
        assert window == (at(362), at(362))
        got = src.resources(*window)
    assert_resources(got, expected(362, 362))
    assert got[SRV_PROXY]["cpu_mili"]["min"] == got[SRV_PROXY]["cpu_mili"]["max"]


@pytest.mark.prometheus
@needs_prometheus
def test_empty_window_is_empty(prom_url: str) -> None:
    with prom.PrometheusSource(prom_url) as src:
        assert src.resources(at(-7200), at(-3600)) == {}


# --- failures at the wire -------------------------------------------------------------------


def test_unreachable_is_one_line_error() -> None:
    src = prom.PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(PrometheusError) as e:
        src.window(at(0), 600)
    msg = str(e.value)
    assert "cannot reach Prometheus" in msg and "refused" in msg and "\n" not in msg
    assert e.value.hint and "port-forward" in e.value.hint


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "500"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.startswith("/api/v1/status/config"):
            body = b'{"status":"success","data":{"yaml":"global:\\n  scrape_interval: 15s\\n"}}'
            self._send(200, body)
        elif self.mode == "500":
            self._send(500, b'{"status":"error","errorType":"internal","error":"boom\\nagain"}')
        elif self.mode == "html":
            self._send(200, b"<html>not prometheus</html>")
        else:  # "slow"
            time.sleep(1.5)
            self._send(200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}')

    def _send(self, code: int, body: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def fake_server(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("H", (_Handler,), {"mode": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("fake_server", "expect"),
    [("500", "HTTP 500: internal: boom again"), ("html", "not a Prometheus API answer"),
     ("slow", "timed out")],
    indirect=["fake_server"],
)
def test_http_failures_are_one_line_errors(fake_server: str, expect: str) -> None:
    with prom.PrometheusSource(fake_server, timeout=0.3) as src:
        with pytest.raises(PrometheusError) as e:
            src.resources(at(0), at(600))
    assert expect in str(e.value) and "\n" not in str(e.value)


# --- pure parts -----------------------------------------------------------------------------


def test_summarize_sums_by_timestamp_not_position() -> None:
    series = [
        {"metric": {"pod": "fortioserver-a", "container": "istio-proxy"},
         "values": [[100, "1"], [115, "2"], [130, "3"]]},
        {"metric": {"pod_name": "fortioserver-b", "container_name": "linkerd-proxy"},
         "values": [[115, "10"], [130, "20"]]},
    ]
    got = prom.summarize(series, 1.0)
    assert got == {SRV_PROXY: {"min": 1.0, "avg": (1 + 12 + 23) / 3, "max": 23.0}}


@pytest.mark.parametrize(
    ("pod", "container", "key"),
    [
        ("fortioserver-1-a", "linkerd-proxy", SRV_PROXY),
        ("fortio-1-a", "istio-proxy", "fortio_deployment_proxy"),
        ("fortioserver-waypoint-x", "istio-proxy", "waypoint_proxy"),
        ("istio-ingressgateway-1-a", "istio-proxy", "ingressgateway_proxy"),
        ("fortioserver-1-a", "POD", None),
        ("fortioserver-1-a", "", None),
        ("fortioclient-1-a", "POD", None),
        ("ztunnel-x", "", None),
        ("fortioclient-1-a", "captured", "fortio_deployment_loadgen"),
        ("fortioclient-1-a", "linkerd-init", None),
        ("istio-policy-1-a", "istio-proxy", None),
        ("other-1-a", "istio-proxy", None),
    ],
)
def test_classify(pod: str, container: str, key: str | None) -> None:
    assert prom.classify(pod, container) == key


def test_selector_parse_and_render() -> None:
    ms = prom.parse_selector(r' job = "a\"b\\c" , ns!~`x|y`, ')
    assert [m.render() for m in ms] == [r'job="a\"b\\c"', 'ns!~"x|y"']
    for bad in ['job=kubelet', 'job="a" namespace="b"', '1abc="x"', 'job=="x"', 'job="\\x41"']:
        with pytest.raises(PrometheusError, match="bad selector"):
            prom.PrometheusSource("http://127.0.0.1:9", selector=bad)
    with pytest.raises(PrometheusError, match="not an http"):
        prom.PrometheusSource("127.0.0.1:9090")


def test_queries_cover_both_schemes_and_drop_pod_level() -> None:
    cpu, mem = prom.resource_queries(60, prom.parse_selector('job="kubelet"'))
    assert cpu.count("rate(") == 2 and "[60s]" in cpu and " or " in cpu
    for q in (cpu, mem):
        for label in ("pod", "pod_name"):
            assert f"{label}=~" in q
        for label in ("container", "container_name"):
            assert f'{label}!=""' in q and f'{label}!="POD"' in q
        assert q.count('job="kubelet"') == 2


def test_scrape_interval_from_config() -> None:
    assert prom.scrape_interval_from_config("scrape_configs: []\n") == 60
    cfg = (
        "global:\n  scrape_interval: 15s\n"
        "scrape_configs:\n- job_name: k\n  scrape_interval: 1m30s\n"
    )
    assert prom.scrape_interval_from_config(cfg) == 15
    assert prom.scrape_interval_from_config(cfg, "k") == 90
    assert prom.scrape_interval_from_config(cfg, "other") == 15
    t = prom.Timing(60)
    assert (t.rate_window, t.start_skip, t.end_skip, t.min_duration) == (240, 242, 120, 362)
    assert prom.Timing(15).step(10 * 24 * 3600) > 15  # stays under Prometheus' point limit


def test_naive_datetimes_are_refused() -> None:
    src = prom.PrometheusSource("http://127.0.0.1:9", scrape_interval=15)
    with pytest.raises(ValueError, match="time zone"):
        src.window(dt.datetime(2026, 1, 1), 600)
