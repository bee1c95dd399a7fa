"""meshperf.loadcmd: the one builder of the load generator's argv, for both platforms."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshperf import loadcmd
from meshperf.goduration import parse_duration
from meshperf.kube.platform import fortio_argv
from meshperf.platform import TestSpec as Spec


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2592000.0, "2592000"),
        (1234567.0, "1234567"),
        (1234567.5, "1234567.5"),
        (0.0001, "0.0001"),
        (0.00005, "0.00005"),
        (1e-7, "0.0000001"),
        (99.9, "99.9"),
        (1e16, "10000000000000000"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_numbers_are_plain_decimals_with_every_digit(value: float, text: str) -> None:
    assert loadcmd.num(value) == text
    assert float(text) == value


def test_num_refuses_non_finite() -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        loadcmd.num(float("inf"))


def test_thirty_day_test_gets_a_duration_our_parser_reads() -> None:
    # `:g` made this "2.592e+06s", which Go and meshperf.goduration reject.
    spec = Spec(mode="baseline", conn=1, qps=2_000_000, duration=2_592_000)
    argv = loadcmd.load_argv(["lg"], spec, "http://h:1/", json_to="-")
    assert _after(argv, "-t") == "2592000s"
    assert parse_duration(_after(argv, "-t")) == 2_592_000 * 10**9
    assert _after(argv, "-qps") == "2000000"


def test_both_platforms_get_the_same_flags_from_one_builder() -> None:
    spec = Spec(
        mode="both",
        conn=4,
        qps=1234567.5,
        duration=0.25,
        labels="x_qps_1_c_4_1024_both",
        jitter=True,
        protocol="http",
        h2=True,
        headers=("X-A:1", "Host: example"),
        keepalive=False,
        connection_reuse=(10, 30),
    )
    local = loadcmd.load_argv(["lg"], spec, "http://h:1/echo?size=1024", json_to="/r.json")
    kube = fortio_argv(spec, "http://h:1/echo?size=1024", "/var/lib/fortio/r.json")
    assert local == [
        "lg", "load", "-c", "4", "-qps", "1234567.5", "-t", "0.25s", "-r", "0.0001",
        "-p", "50,75,90,99,99.9", "-jitter", "-h2", "-H", "X-A:1", "-H", "Host: example",
        "-keepalive=false", "-connection-reuse", "10:30",
        "-labels", "x_qps_1_c_4_1024_both", "-json", "/r.json", "http://h:1/echo?size=1024",
    ]  # fmt: skip
    # The kubernetes platform adds only its own flags before -json.
    i = local.index("-json")
    assert kube[0] == "fortio"
    assert kube[1:i] == local[1:i]
    assert kube[i : i + 3] == ["-httpbufferkb", "128", "-a"]
    assert kube[i + 3 :] == ["-json", "/var/lib/fortio/r.json", "http://h:1/echo?size=1024"]


def test_grpc_is_fortio_grpc_ping_with_the_payload_as_size() -> None:
    spec = Spec(mode="baseline", conn=2, qps=100, duration=1, size=512, protocol="grpc")
    argv = loadcmd.load_argv(["lg"], spec, "127.0.0.1:8079", json_to="-")
    i = argv.index("-grpc")
    assert argv[i : i + 4] == ["-grpc", "-ping", "-payload-size", "512"]
    assert "-h2" not in argv  # gRPC is HTTP/2 by itself; fortio's -h2 is an HTTP flag
    assert argv[-1] == "127.0.0.1:8079"
    assert spec.result_block(platform="p", mesh="m", run_id="r")["h2"] is True


def test_tcp_sends_the_size_as_payload_and_no_http_flags() -> None:
    spec = Spec(mode="baseline", conn=2, qps=100, duration=1, size=64, protocol="tcp")
    argv = loadcmd.load_argv(["lg"], spec, "tcp://127.0.0.1:8078", json_to="-")
    assert "-grpc" not in argv and "-h2" not in argv and "-H" not in argv
    assert _after(argv, "-payload-size") == "64"
    block = spec.result_block(platform="p", mesh="m", run_id="r")
    assert (block["protocol"], block["h2"]) == ("tcp", False)
    assert "headers" not in block and "keepalive" not in block


def test_size_zero_sends_no_payload_flag() -> None:
    spec = Spec(mode="baseline", conn=1, qps=1, duration=1, size=0, protocol="tcp")
    assert "-payload-size" not in loadcmd.load_argv(["lg"], spec, "tcp://h:1", json_to="-")


def test_cacert_is_passed_and_recorded(tmp_path: Path) -> None:
    spec = Spec(mode="ingress", conn=1, qps=1, duration=1, cacert="/ca.pem")
    argv = loadcmd.load_argv(["lg"], spec, "https://gw:443/echo?size=1", json_to="-")
    assert _after(argv, "-cacert") == "/ca.pem"
    assert spec.result_block(platform="p", mesh="m", run_id="r")["cacert"] == "/ca.pem"


@pytest.mark.parametrize(
    ("protocol", "tls", "url"),
    [
        ("http", False, "http://10.0.0.1:8077/echo?size=10"),
        ("http", True, "https://10.0.0.1:8077/echo?size=10"),
        ("grpc", False, "10.0.0.1:8077"),
        ("grpc", True, "https://10.0.0.1:8077"),
        ("tcp", False, "tcp://10.0.0.1:8077"),
    ],
)
def test_target_urls_are_fortios_forms(protocol: str, tls: bool, url: str) -> None:
    assert loadcmd.target_url(protocol, "10.0.0.1", 8077, 10, tls=tls) == url


# ---- bad input: one line each, from the checks the runner and TestSpec share ------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "quic"}, "unknown protocol 'quic'; expected one of http, grpc, tcp"),
        ({"protocol": "tcp", "h2": True}, "--h2 is HTTP/2; --protocol tcp carries no HTTP"),
        ({"protocol": "tcp", "headers": ("A:b",)}, "--headers are HTTP headers"),
        ({"protocol": "grpc", "keepalive": False}, "--no-keepalive applies to --protocol http"),
        ({"protocol": "tcp", "connection_reuse": (1, 2)}, "--connection-reuse applies to"),
        ({"headers": ("nocolon",)}, "header 'nocolon' has no ':'"),
        ({"connection_reuse": (5, 2)}, "MIN is larger than MAX"),
    ],
)
def test_spec_refuses_contradictions(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as e:
        Spec(mode="baseline", conn=1, qps=1, duration=1, **kwargs)  # type: ignore[arg-type]
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("X-A:1", ("X-A:1",)),
        ("X-A: 1,Host:h", ("X-A: 1", "Host:h")),
        (" X-B :v", ("X-B:v",)),
        ("X-Empty:", ("X-Empty:",)),
    ],
)
def test_parse_headers(text: str, expected: tuple[str, ...]) -> None:
    assert loadcmd.parse_headers(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("novalue", "has no ':' (expected Name:value)"),
        ("A:1,,B:2", "header '' has no ':'"),
        (":v", "'' is not a header name"),
        ("Bad Name:v", "'Bad Name' is not a header name"),
    ],
)
def test_parse_headers_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="header") as e:
        loadcmd.parse_headers(text)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("text", "expected"), [("10:30", (10, 30)), ("7", (7, 7)), ("1:1", (1, 1))]
)
def test_connection_reuse(text: str, expected: tuple[int, int]) -> None:
    assert loadcmd.parse_connection_reuse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5:2", "MIN is larger than MAX"),
        ("0:3", "MIN must be >= 1"),
        ("a:b", "is not MIN:MAX"),
        ("1:2:3", "is not MIN:MAX"),
        ("-1:2", "is not MIN:MAX"),
    ],
)
def test_connection_reuse_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        loadcmd.parse_connection_reuse(text)
    assert message in str(e.value)


def test_cacert_must_be_a_pem_certificate(tmp_path: Path) -> None:
    good = tmp_path / "ca.pem"
    good.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert loadcmd.check_cacert(str(good)) == str(good)
    bad = tmp_path / "ca.der"
    bad.write_bytes(b"\x30\x82\x01\x0a")
    with pytest.raises(ValueError, match=r"ca.der is not a PEM certificate file"):
        loadcmd.check_cacert(str(bad))
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not a PEM certificate file"):
        loadcmd.check_cacert(str(key))
    with pytest.raises(ValueError, match="No such file"):
        loadcmd.check_cacert(str(tmp_path / "missing.pem"))
