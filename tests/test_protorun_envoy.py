"""The local sidecars' configs per protocol: what each listener and cluster holds, and that the
real Envoy accepts them (``envoy --mode validate``) with telemetry on and off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshperf.errors import ConfigError
from meshperf.local import certs, envoy

pytestmark = pytest.mark.envoy

H2_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@pytest.fixture(scope="module")
def ident(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("certs")
    ca = certs.CertAuthority(d)
    return {
        "ca": ca.cert_path,
        "server": ca.issue(certs.SERVER_SA),
        "client": ca.issue(certs.CLIENT_SA),
        "gateway": ca.issue(certs.INGRESS_SA),
    }


def _all(ident: dict[str, Any], telemetry: bool, logs: Path) -> dict[str, dict[str, Any]]:
    ca, srv, cli, gw = ident["ca"], ident["server"], ident["client"], ident["gateway"]
    ports = {"grpc_port": 20002, "tcp_port": 20003}
    return {
        "server": envoy.server_sidecar_config(
            20001, srv, ca, [cli.spiffe, gw.spiffe], telemetry, logs / "s.log", **ports
        ),
        "client": envoy.client_sidecar_config(
            30001, cli, ca, srv.spiffe, telemetry, logs / "c.log", **ports
        ),
        "gateway": envoy.gateway_config(30001, gw, ca, srv.spiffe, telemetry, None, **ports),
    }


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in items}


def _filter(listener: dict[str, Any]) -> dict[str, Any]:
    (chain,) = listener["filter_chains"]
    (f,) = chain["filters"]
    return f  # type: ignore[no-any-return]


@pytest.mark.parametrize("telemetry", [True, False])
def test_every_protocols_config_validates(
    ident: dict[str, Any], tmp_path: Path, telemetry: bool
) -> None:
    binary = envoy.find_envoy().path
    for name, config in _all(ident, telemetry, tmp_path).items():
        path = envoy.write_config(config, tmp_path / f"{name}-{telemetry}.json")
        envoy.validate_config(binary, path)  # raises ConfigError with Envoy's words


def test_validate_rejects_a_broken_tcp_listener(ident: dict[str, Any], tmp_path: Path) -> None:
    config = _all(ident, True, tmp_path)["client"]
    tcp = _by_name(config["static_resources"]["listeners"])[envoy.OUTBOUND_TCP]
    del _filter(tcp)["typed_config"]["stat_prefix"]  # required by TcpProxy's proto rules
    path = envoy.write_config(config, tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="envoy rejected broken.json"):
        envoy.validate_config(envoy.find_envoy().path, path)


def test_server_sidecar_listeners_and_app_clusters(ident: dict[str, Any], tmp_path: Path) -> None:
    cfg = _all(ident, True, tmp_path)["server"]["static_resources"]
    listeners = _by_name(cfg["listeners"])
    assert sorted(listeners) == sorted([
        "virtualInbound_plaintext", "virtualInbound_mtls",
        "virtualInbound_grpc_plaintext", "virtualInbound_grpc_mtls",
        "virtualInbound_tcp_plaintext", "virtualInbound_tcp_mtls",
    ])  # fmt: skip
    hcm = "envoy.filters.network.http_connection_manager"
    tcp = "envoy.filters.network.tcp_proxy"
    assert _filter(listeners["virtualInbound_grpc_mtls"])["name"] == hcm
    assert _filter(listeners["virtualInbound_tcp_mtls"])["name"] == tcp
    tcp_mtls = _filter(listeners["virtualInbound_tcp_mtls"])["typed_config"]
    assert tcp_mtls["cluster"] == "inbound|8078||"
    # The mTLS listeners require a client certificate; HTTP ones offer h2 by ALPN, TCP none.
    for name, alpn in [("virtualInbound_mtls", ["h2", "http/1.1"]),
                       ("virtualInbound_grpc_mtls", ["h2", "http/1.1"]),
                       ("virtualInbound_tcp_mtls", None)]:  # fmt: skip
        tls = listeners[name]["filter_chains"][0]["transport_socket"]["typed_config"]
        assert tls["require_client_certificate"] is True
        assert tls["common_tls_context"].get("alpn_protocols") == alpn, name
    clusters = _by_name(cfg["clusters"])
    ports = {n: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
             ["socket_address"]["port_value"] for n, c in clusters.items()}  # fmt: skip
    assert ports == {"inbound|8080||": 20001, "inbound|8079||": 20002, "inbound|8078||": 20003}
    http = clusters["inbound|8080||"]["typed_extension_protocol_options"][H2_OPTIONS]
    assert "use_downstream_protocol_config" in http  # HTTP/1.1 in, 1.1 out; h2c in, h2c out
    grpc = clusters["inbound|8079||"]["typed_extension_protocol_options"][H2_OPTIONS]
    assert grpc["explicit_http_config"]["http2_protocol_options"] == {
        "max_concurrent_streams": 1073741824
    }
    assert "typed_extension_protocol_options" not in clusters["inbound|8078||"]


def test_client_and_gateway_speak_mtls_per_port(ident: dict[str, Any], tmp_path: Path) -> None:
    configs = _all(ident, True, tmp_path)
    for role, names in [
        ("client", ["outbound_0.0.0.0_8080", "outbound_0.0.0.0_8079", "outbound_0.0.0.0_8078"]),
        ("gateway", ["gateway_http_8080", "gateway_grpc_8079", "gateway_tcp_8078"]),
    ]:
        cfg = configs[role]["static_resources"]
        assert sorted(_by_name(cfg["listeners"])) == sorted(names)
        clusters = _by_name(cfg["clusters"])
        for port, sni_port, alpn in [(30001, 8080, None), (20002, 8079, ["h2"]),
                                     (20003, 8078, None)]:  # fmt: skip
            name = f"outbound|{sni_port}||fortioserver.twopods.svc.cluster.local"
            c = clusters[name]
            ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            assert ep["address"]["socket_address"]["port_value"] == port
            tls = c["transport_socket"]["typed_config"]
            assert tls["sni"] == f"outbound_.{sni_port}_._.fortioserver.twopods.svc.cluster.local"
            ctx = tls["common_tls_context"]
            assert ctx["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
            assert ctx.get("alpn_protocols") == alpn, (role, name)
            san = ctx["validation_context"]["match_typed_subject_alt_names"]
            assert san == [{"san_type": "URI", "matcher": {"exact": ident["server"].spiffe}}]


def test_http_only_when_no_other_port_is_given(ident: dict[str, Any], tmp_path: Path) -> None:
    ca, srv, cli = ident["ca"], ident["server"], ident["client"]
    server = envoy.server_sidecar_config(1, srv, ca, [cli.spiffe], False, None)
    client = envoy.client_sidecar_config(2, cli, ca, srv.spiffe, False, None)
    assert [x["name"] for x in server["static_resources"]["listeners"]] == [
        "virtualInbound_plaintext", "virtualInbound_mtls",
    ]  # fmt: skip
    assert [x["name"] for x in client["static_resources"]["listeners"]] == ["outbound_0.0.0.0_8080"]


def test_tcp_access_log_only_with_telemetry(ident: dict[str, Any], tmp_path: Path) -> None:
    on = _all(ident, True, tmp_path)["server"]["static_resources"]["listeners"]
    off = _all(ident, False, tmp_path)["server"]["static_resources"]["listeners"]
    tcp_on = _filter(_by_name(on)["virtualInbound_tcp_plaintext"])["typed_config"]
    tcp_off = _filter(_by_name(off)["virtualInbound_tcp_plaintext"])["typed_config"]
    assert tcp_on["access_log"][0]["typed_config"]["path"] == str(tmp_path / "s.log")
    assert "access_log" not in tcp_off
