"""Proxy CPU throttling from a real Prometheus (cAdvisor's CFS counters, backfilled): the
share of throttled periods over a test window, and fortio.py's warnings column from it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fortio_data
from meshperf import collect as col
from meshperf import prom
from meshperf.results import FortioResult, LoadReport
from needs import missing
from promserver import have_prometheus, running_prometheus

pytestmark = pytest.mark.prometheus

SCRAPE = 15.0
T0 = (int(time.time()) - 4 * 3600) // 3600 * 3600  # hours in the past: backfill rules
DURATION = 1200
# CFS periods are 100 ms: 10 per second. The server proxy is throttled in 3 of them per second
# from 300 s on; the client proxy never.
SERVER = {"pod": "fortioserver-6d5c9-aaaaa", "container": "istio-proxy"}
CLIENT = {"pod": "fortioclient-7f8b9-ccccc", "container": "istio-proxy"}


def _labels(c: dict[str, str]) -> str:
    items = {"namespace": "twopods", "job": "kubernetes-cadvisor", **c}
    return ",".join(f'{k}="{v}"' for k, v in sorted(items.items()))


class _CfsDataset:
    """What running_prometheus needs: an OpenMetrics file of CFS counters."""

    def write_openmetrics(self, path: Path) -> None:
        lines: list[str] = []
        times = [k * SCRAPE for k in range(int(DURATION / SCRAPE) + 1)]
        for metric, rate in (
            (prom.PERIODS_METRIC, lambda c, t: 10.0 * t),
            (prom.THROTTLED_METRIC,
             lambda c, t: 3.0 * max(0.0, t - 300) if c is SERVER else 0.0),
        ):  # fmt: skip
            lines.append(f"# TYPE {metric} counter")
            for c in (SERVER, CLIENT):
                for t in times:
                    lines.append(f"{metric}{{{_labels(c)}}} {1000 + rate(c, t)} {T0 + t:.3f}")
        lines.append("# EOF")
        path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[prom.PrometheusSource]:
    if not have_prometheus():
        missing("prometheus/promtool missing")
    with running_prometheus(tmp_path_factory.mktemp("cfs"), _CfsDataset()) as url:  # type: ignore[arg-type]
        s = prom.PrometheusSource(url, timeout=10)
        try:
            yield s
        finally:
            s.close()


def at(rel: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(T0 + rel, tz=dt.UTC)


def test_throttled_share_over_the_window(source: prom.PrometheusSource) -> None:
    got = prom.throttling(source, at(600), at(900))
    # 300 s: 3000 periods, 900 throttled on the server proxy; none on the client's.
    assert got["fortioserver_deployment_proxy"]["throttled"] == pytest.approx(0.3, abs=0.01)
    assert got["fortioserver_deployment_proxy"]["periods"] == pytest.approx(3000, rel=0.02)
    assert got["fortio_deployment_proxy"]["throttled"] == 0.0
    # Before the throttling started: nothing.
    early = prom.throttling(source, at(60), at(240))
    assert early["fortioserver_deployment_proxy"]["throttled"] == 0.0


def test_collect_warns_on_a_throttled_proxy(source: prom.PrometheusSource) -> None:
    said: list[str] = []
    doc = fortio_data.http_result(
        [0.0005] * 1000, labels="r1_qps_1000_c_4_1024_both", duration_s=600.0,
        start=at(400), extra={"ActualQPS": 1000.0},
    )  # fmt: skip
    rows = col.collect(
        LoadReport(results=[FortioResult(doc, "r.json")]), prometheus=source, notify=said.append
    ).rows
    (row,) = rows
    assert "throttled: fortioserver_deployment_proxy CPU-throttled in" in row["warnings"]
    assert "fortio_deployment_proxy CPU" not in row["warnings"]
