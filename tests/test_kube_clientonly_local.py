"""--clientonly on the local platform: loadgen -> client sidecar (outbound) -> app, no server
sidecar. The path is checked on the real Envoy's own counters, not assumed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshperf.local import envoy as envoy_mod
from meshperf.local.platform import LOADGEN, LocalPlatform
from meshperf.platform import (
    RESOURCE_CLIENT_PROXY,
    RESOURCE_LOADGEN,
    RESOURCE_SERVER_APP,
    RESULT_KEY,
    RunOptions,
)
from meshperf.platform import (
    TestSpec as Spec,
)
from needs import skip_unless

REPO = Path(__file__).resolve().parents[1]
needs_loadgen = skip_unless(LOADGEN.is_file(), f"{LOADGEN} (echo server) not present")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    out = tmp_path_factory.mktemp("results")
    p = LocalPlatform.from_options(RunOptions(output_dir=out, run_id="c1", proxy_concurrency=1))
    try:
        p.start(("clientonly",))
        yield p
    finally:
        p.close()


@pytest.mark.envoy
@needs_loadgen
def test_clientonly_crosses_the_client_sidecar_and_no_server_sidecar(
    platform: LocalPlatform,
) -> None:
    assert set(platform.proxies) == {"clientonly"}  # no server sidecar was even started
    proxy = platform.proxies["clientonly"]
    assert platform.target("clientonly", 64).startswith(
        f"http://127.0.0.1:{proxy.ports[envoy_mod.CLIENTONLY_OUTBOUND]}/"
    )
    before = proxy.stats(r"upstream_rq_total")
    spec = Spec(mode="clientonly", conn=2, qps=100, duration=1.5, size=64, uniform=True,
                    labels="c1_qps_100_c_2_64_clientonly", run_id="c1")  # fmt: skip
    r = platform.run_test(spec)
    block = r[RESULT_KEY]
    assert block["mode"] == "clientonly" and r["Labels"].endswith("_clientonly")
    assert set(r["RetCodes"]) == {"200"}
    after = proxy.stats(r"upstream_rq_total")
    key = f"cluster.{envoy_mod.CLIENTONLY_CLUSTER}.upstream_rq_total"
    # Every request of the test (and the start-up check's) went through this Envoy's cluster,
    # which points at the app's own port.
    assert after[key] - before.get(key, 0) >= r["DurationHistogram"]["Count"] > 0
    cluster = envoy_mod.clientonly_sidecar_config(platform.app_port, True, None)
    (c,) = cluster["static_resources"]["clusters"]
    endpoint = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == platform.app_port
    assert "transport_socket" not in c  # plain text to the app: no server sidecar to speak to
    assert set(block["resources"]) == {RESOURCE_SERVER_APP, RESOURCE_LOADGEN, RESOURCE_CLIENT_PROXY}
