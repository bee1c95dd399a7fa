"""HTTP/2, gRPC and TCP on the local platform, with real Envoy sidecars and the built-in
generator and echo server.

Two kinds of check:

- the bar of issue 13, through ``python runner/runner.py 4 500 3 --baseline --platform local``
  with ``--h2``, ``--protocol grpc`` and ``--protocol tcp``: two results each, no errors,
  >= 475 req/s achieved, the two sidecars' p50 above the baseline's, no process left behind;
- that each path is the one it claims, from the Envoys' own counters: HTTP/2 on every hop for
  --h2 and gRPC (client sidecar in and out, server sidecar in and out to the app), HTTP/1.1 on
  every hop by default, and TCP through tcp_proxy with no HTTP codec at all.

Each run gets its own TMPDIR, as in test_e2e_local.py: the platform puts its work dir there,
so "nothing left behind" looks for processes carrying that mark only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import marked_processes
from meshperf.local import envoy
from meshperf.local.platform import LocalPlatform
from meshperf.platform import RESULT_KEY, RunOptions
from meshperf.platform import TestSpec as Spec

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "runner" / "runner.py"

pytestmark = pytest.mark.envoy


def _p50(result: dict[str, Any]) -> float:
    pct = {p["Percentile"]: p["Value"] for p in result["DurationHistogram"]["Percentiles"]}
    return float(pct[50])


@pytest.mark.parametrize(
    ("flags", "protocol", "h2", "run_type", "ok_code"),
    [
        (("--h2",), "http", True, "HTTP", "200"),
        (("--protocol", "grpc"), "grpc", True, "GRPC Ping PayloadLength=1024", "SERVING"),
        (("--protocol", "tcp"), "tcp", False, "TCP", "OK"),
    ],
)
def test_bar_each_protocol_through_runner(
    tmp_path: Path, flags: tuple[str, ...], protocol: str, h2: bool, run_type: str, ok_code: str
) -> None:
    mark = str(tmp_path / f"tmp-{uuid.uuid4().hex[:8]}")
    os.mkdir(mark)
    env = dict(os.environ, TMPDIR=mark, KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    env.pop("ENVOY_BIN", None)
    out_dir = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "4", "500", "3", "--baseline", "--platform", "local",
         "--output-dir", str(out_dir), "-q", *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    results = [
        json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))
        if not p.name.startswith("run-")
    ]  # fmt: skip
    by_mode = {r[RESULT_KEY]["mode"]: r for r in results}
    assert len(results) == 2 and set(by_mode) == {"baseline", "both"}
    for mode, r in by_mode.items():
        block = r[RESULT_KEY]
        assert (block["protocol"], block["h2"]) == (protocol, h2), mode
        assert r["RunType"] == run_type, mode
        assert set(r["RetCodes"]) == {ok_code}, (mode, r["RetCodes"])  # zero errors
        assert r["DurationHistogram"]["Count"] == r["RetCodes"][ok_code]
        assert r["ActualQPS"] >= 475, (mode, r["ActualQPS"])
        token = "h2" if protocol == "http" else protocol
        assert f"_{token}_" in r["Labels"], r["Labels"]
    assert _p50(by_mode["both"]) > _p50(by_mode["baseline"])
    run = json.loads(next(out_dir.glob("run-*.json")).read_text())
    assert [t["protocol"] for t in run["tests"]] == [protocol, protocol]
    deadline = time.monotonic() + 5  # reaping can trail the runner's exit by a moment
    while left := marked_processes(mark):
        if time.monotonic() > deadline:
            pytest.fail(f"processes left behind: {left}")
        time.sleep(0.2)


# ---- the path each protocol takes, from the Envoys' counters ---------------------------------


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    out = tmp_path_factory.mktemp("protocols")
    opts = RunOptions(
        output_dir=out, run_id="0badcafe", proxy_concurrency=1, protocols=("http", "grpc", "tcp")
    )
    p = LocalPlatform.from_options(opts)
    try:
        p.start(("baseline", "serversidecar", "both", "ingress"))
        yield p
    finally:
        p.close()


def _spec(mode: str, protocol: str, h2: bool = False) -> Spec:
    return Spec(mode=mode, conn=2, qps=200, duration=1.0, size=128, protocol=protocol, h2=h2,
                labels=f"x_{protocol}_{mode}", run_id="0badcafe")  # fmt: skip


def _delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def _stats(p: LocalPlatform) -> dict[str, dict[str, int]]:
    return {name: proxy.stats() for name, proxy in p.proxies.items()}


@pytest.mark.parametrize(
    ("protocol", "h2", "codec"),
    [("http", False, "http1"), ("http", True, "http2"), ("grpc", False, "http2")],
)
def test_http_and_grpc_hops_use_the_claimed_codec(
    platform: LocalPlatform, protocol: str, h2: bool, codec: str
) -> None:
    """Client sidecar in and out, server sidecar in (mTLS) and out to the app: one codec."""
    port = envoy.SERVICE_PORTS[protocol]
    before = _stats(platform)
    result = platform.run_test(_spec("both", protocol, h2))
    after = _stats(platform)
    count = result["DurationHistogram"]["Count"]
    assert count > 100
    other = "http1" if codec == "http2" else "http2"
    # Per request, the codec each sidecar's connection manager took it in with: the loadgen's
    # hop (client sidecar) and the sidecar-to-sidecar mTLS hop (server sidecar).
    for proxy, listener in [("client", f"outbound_0.0.0.0_{port}"),
                            ("server", f"inbound_0.0.0.0_{port}_mtls")]:  # fmt: skip
        key = f"http.{listener}.downstream_rq_{codec}_total"
        assert _delta(before[proxy], after[proxy], key) >= count, key
        wrong = key.replace(codec, other)
        assert _delta(before[proxy], after[proxy], wrong) == 0, wrong
    # Upstream connections outlive a test (pooled, and one HTTP/2 connection carries all
    # streams), so these count connections since the start: the codec was used, and a gRPC
    # cluster never opened an HTTP/1.1 connection.
    for proxy, cluster in [("client", envoy.server_cluster(protocol)),
                           ("server", envoy.app_cluster(protocol))]:  # fmt: skip
        assert after[proxy][f"cluster.{cluster}.upstream_cx_{codec}_total"] >= 1, cluster
        rq = f"cluster.{cluster}.upstream_rq_total"
        assert _delta(before[proxy], after[proxy], rq) >= count, rq
        if protocol == "grpc":
            assert after[proxy].get(f"cluster.{cluster}.upstream_cx_http1_total", 0) == 0


def test_tcp_goes_through_tcp_proxy_and_no_http(platform: LocalPlatform) -> None:
    port = envoy.SERVICE_PORTS["tcp"]
    before = _stats(platform)
    result = platform.run_test(_spec("both", "tcp"))
    after = _stats(platform)
    assert result["RetCodes"] == {"OK": result["DurationHistogram"]["Count"]}
    for proxy, key in [
        ("client", f"tcp.outbound_0.0.0.0_{port}.downstream_cx_total"),
        ("client", f"cluster.{envoy.server_cluster('tcp')}.upstream_cx_total"),
        ("server", f"tcp.inbound_0.0.0.0_{port}_mtls.downstream_cx_total"),
        ("server", f"cluster.{envoy.app_cluster('tcp')}.upstream_cx_total"),
    ]:
        assert _delta(before[proxy], after[proxy], key) >= 1, key
    for proxy in ("client", "server"):
        http = [k for k in after[proxy] if k.startswith("http.") and "admin" not in k]
        assert all(_delta(before[proxy], after[proxy], k) == 0 for k in http), http
    # mTLS between the sidecars: the client's TCP cluster made TLS connections.
    tls = f"cluster.{envoy.server_cluster('tcp')}.ssl.handshake"
    assert _delta(before["client"], after["client"], tls) >= 1


@pytest.mark.parametrize("protocol", ["grpc", "tcp"])
@pytest.mark.parametrize("mode", ["baseline", "serversidecar", "ingress"])
def test_other_modes_carry_the_protocol(platform: LocalPlatform, mode: str, protocol: str) -> None:
    result = platform.run_test(_spec(mode, protocol))
    ok = "SERVING" if protocol == "grpc" else "OK"
    assert set(result["RetCodes"]) == {ok}
    block = result[RESULT_KEY]
    assert block["protocol"] == protocol and block["mode"] == mode
    assert block["target"] == platform.target(mode, 128, protocol)
    if mode == "baseline":
        assert block["target"].endswith(f":{platform.app_ports[protocol]}")


def test_a_protocol_not_started_is_refused(tmp_path: Path) -> None:
    p = LocalPlatform.from_options(RunOptions(output_dir=tmp_path, proxy_concurrency=1))
    try:
        p.start(("baseline",))
        with pytest.raises(Exception, match="protocol grpc was not started"):
            p.run_test(_spec("baseline", "grpc"))
    finally:
        p.close()


# ---- the result says what each proxy carried, and when that is not the claim ----------------


@pytest.mark.parametrize(
    ("mode", "protocol", "h2", "expected"),
    [
        ("both", "http", False, {"client": "http1", "server": "http1"}),
        ("both", "http", True, {"client": "http2", "server": "http2"}),
        ("ingress", "grpc", False, {"gateway": "http2", "server": "http2"}),
        ("serversidecar", "tcp", False, {"server": "tcp"}),
    ],
)
def test_result_records_what_each_proxy_carried(
    platform: LocalPlatform, mode: str, protocol: str, h2: bool, expected: dict[str, str]
) -> None:
    block = platform.run_test(_spec(mode, protocol, h2))[RESULT_KEY]
    assert block["proxy_codecs"] == expected
    assert "path_mismatch" not in block


def test_a_path_that_is_not_the_claimed_one_is_flagged(
    platform: LocalPlatform, capsys: pytest.CaptureFixture[str]
) -> None:
    """HTTP/1.1 requests sent down the both path while the test claims HTTP/2."""
    from meshperf.local.procs import http_get

    before = platform._codec_counters("both")
    for _ in range(3):
        status, _ = http_get(platform.target("both", 16), timeout=5.0)
        assert status == 200
    seen = platform._codecs_seen(_spec("both", "http", h2=True), before)
    assert seen["proxy_codecs"] == {"client": "http1", "server": "http1"}
    assert seen["path_mismatch"] == (
        "the client proxy carried http1, not http2; the server proxy carried http1, not http2"
    )
    assert "warning: test x_http_both: the client proxy carried http1" in capsys.readouterr().err


# ---- fortio's connection options reach the wire ------------------------------------------------


@pytest.mark.parametrize(
    ("options", "per_connection"),
    [({}, None), ({"keepalive": False}, 1), ({"connection_reuse": (5, 5)}, 5)],
)
def test_keepalive_and_connection_reuse_change_the_connections_the_sidecar_sees(
    platform: LocalPlatform, options: dict[str, Any], per_connection: int | None
) -> None:
    """The server sidecar's own count of downstream connections: 2 for the whole test with
    keep-alive (one per connection), one per request without, one per 5 requests with
    --connection-reuse 5:5."""
    key = "http.inbound_0.0.0.0_8080.downstream_cx_total"
    spec = Spec(mode="serversidecar", conn=2, qps=100, duration=1.0, size=16,
                labels="x_cx_serversidecar", run_id="0badcafe", **options)  # fmt: skip
    before = platform.proxies["server"].stats(key).get(key, 0)
    result = platform.run_test(spec)
    opened = platform.proxies["server"].stats(key).get(key, 0) - before
    count = result["DurationHistogram"]["Count"]
    assert set(result["RetCodes"]) == {"200"}
    if per_connection is None:
        assert opened <= spec.conn
    else:
        # Warm-up calls and the last, partly used connection of each worker come on top.
        expected = count / per_connection
        assert expected <= opened <= expected + 2 * spec.conn + 2, (opened, count)
    block = result[RESULT_KEY]
    assert ("keepalive" in block) == ("keepalive" in options)
    assert ("connection_reuse" in block) == ("connection_reuse" in options)


def test_clientonly_carries_grpc_and_tcp(tmp_path: Path) -> None:
    """The clientonly sidecar (its own Envoy, plain text to the app) for gRPC and TCP too."""
    opts = RunOptions(output_dir=tmp_path, proxy_concurrency=1, protocols=("http", "grpc", "tcp"))
    p = LocalPlatform.from_options(opts)
    try:
        p.start(("clientonly",))
        grpc = p.run_test(_spec("clientonly", "grpc"))
        tcp = p.run_test(_spec("clientonly", "tcp"))
    finally:
        p.close()
    assert set(grpc["RetCodes"]) == {"SERVING"} and set(tcp["RetCodes"]) == {"OK"}
    assert grpc[RESULT_KEY]["proxy_codecs"] == {"clientonly": "http2"}
    assert tcp[RESULT_KEY]["proxy_codecs"] == {"clientonly": "tcp"}
