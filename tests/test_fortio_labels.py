"""meshperf.labels: the three label grammars, read back to the same facts."""

from __future__ import annotations

import pytest

from meshperf import labels as L
from meshperf.plan import make_label

# label -> (mode, conn, qps, size, telemetry, extra, scheme, mode_spelling)
CASES = {
    # 2019 scripts (the README's examples and its Mixer-off step, --labels=nomixer)
    "193ff770_qps_1000_c_1_1024_both": ("both", 1, 1000.0, 1024, "", "", "istio-2019", "both"),
    "ab12_qps_4000_c_64_1024_base": ("baseline", 64, 4000.0, 1024, "", "", "istio-2019", "base"),
    "ab12_qps_max_c_8_0_nomixer_serveronly": (
        "serversidecar",
        8,
        None,
        0,
        "nomixer",
        "",
        "istio-2019",
        "serveronly",
    ),
    "ab12_qps_10_c_2_512_no_mixer_v2_ingress": (
        "ingress",
        2,
        10.0,
        512,
        "",
        "no_mixer_v2",
        "istio-2019",
        "ingress",
    ),
    # istio/tools today: telemetry mode (may hold "_"), extra labels, its own mode spellings
    "0a1b2c3d_qps_1000_c_16_1024_istio_with_stats_no_istio": (
        "baseline",
        16,
        1000.0,
        1024,
        "istio_with_stats",
        "",
        "istio-tools",
        "no_istio",
    ),
    "0a1b2c3d_qps_500_c_2_1024_v2-sd-full-nullvm_mytag_x_both": (
        "both",
        2,
        500.0,
        1024,
        "v2-sd-full-nullvm",
        "mytag_x",
        "istio-tools",
        "both",
    ),
    "0a1b2c3d_qps_1000_c_4_1024_none_tcp_clientonly": (
        "clientonly",
        4,
        1000.0,
        1024,
        "none_tcp",
        "",
        "istio-tools",
        "clientonly",
    ),
    "0a1b2c3d_qps_1000_c_4_1024_no_istio_no_istio": (
        "baseline",
        4,
        1000.0,
        1024,
        "no_istio",
        "",
        "istio-tools",
        "no_istio",
    ),
    "nighthawk_0a1b2c3d_qps_100_c_1_0_none_serveronly": (
        "serversidecar",
        1,
        100.0,
        0,
        "none",
        "",
        "istio-tools",
        "serveronly",
    ),
    # ours
    "ab12_qps_10_c_2_512_waypoint": ("waypoint", 2, 10.0, 512, "", "", "meshperf", "waypoint"),
}


@pytest.mark.parametrize("label", sorted(CASES))
def test_parse(label: str) -> None:
    f = L.parse(label)
    assert f is not None
    got = (f.mode, f.conn, f.qps, f.size, f.telemetry, f.extra, f.scheme, f.mode_spelling)
    assert got == CASES[label]


def test_linkerd_takes_the_telemetry_place() -> None:
    f = L.parse("0a1b2c3d_qps_1000_c_16_1024_linkerd_serveronly")
    assert f is not None
    assert (f.mesh, f.telemetry, f.extra, f.mode, f.scheme) == (
        "linkerd",
        "",
        "",
        "serversidecar",
        "istio-tools",
    )


def test_nighthawk_prefix_and_run_id() -> None:
    f = L.parse("nighthawk_0a1b2c3d_qps_100_c_1_0_none_serveronly")
    assert f is not None
    assert (f.generator, f.run_id) == ("nighthawk", "0a1b2c3d")
    assert L.parse("0a1b2c3d_qps_100_c_1_0_none_serveronly").generator == ""  # type: ignore[union-attr]


def test_variant_is_telemetry_and_extra_as_written() -> None:
    f = L.parse("0a1b2c3d_qps_500_c_2_1024_v2-sd-full-nullvm_mytag_x_both")
    assert f is not None and f.variant == "v2-sd-full-nullvm_mytag_x"


@pytest.mark.parametrize(
    "label",
    [
        "",
        "direct",  # the servicemesh corpus: a setup name, no mode
        "Sample with errors",
        "both",
        "my_both_test",
        "x_qps_1_c_1_1_sidecar",  # unknown suffix
        "x_qps_1_c_a_1_both",  # conn not a number
        "x_y_qps_1_c_1_1_both",  # run id with "_"
    ],
)
def test_other_labels_are_none(label: str) -> None:
    assert L.parse(label) is None


@pytest.mark.parametrize(
    ("args", "label"),
    [
        (("193ff770", 1000.0, 1, 1024, "both"), "193ff770_qps_1000_c_1_1024_both"),
        (("ab12", 0.0, 4, 1024, "baseline"), "ab12_qps_max_c_4_1024_base"),
        (("ab12", 2.5, 16, 0, "serversidecar"), "ab12_qps_2.5_c_16_0_serveronly"),
        (("ab12", 1234567.25, 1, 1, "clientonly"), "ab12_qps_1234567.25_c_1_1_clientonly"),
    ],
)
def test_format_label(args: tuple, label: str) -> None:  # type: ignore[type-arg]
    assert L.format_label(*args) == label


def test_format_then_parse_round_trip() -> None:
    label = L.format_label("ab12", 1000.0, 8, 64, "ingress", extra="mytag", telemetry="none")
    assert label == "ab12_qps_1000_c_8_64_none_mytag_ingress"
    f = L.parse(label)
    assert f is not None
    assert (f.mode, f.conn, f.qps, f.size, f.telemetry, f.extra) == (
        "ingress",
        8,
        1000.0,
        64,
        "none",
        "mytag",
    )
    for mode in L.MODES:
        back = L.parse(L.format_label("ab12", 1.0, 1, 1, mode))
        assert back is not None and back.mode == mode


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"run_id": "a_b"}, "run id"),
        ({"mode": "sidecar"}, "unknown mode"),
        ({"extra": "a b"}, "extra labels"),
        ({"telemetry": "x/y"}, "telemetry"),
        ({"conn": 0}, "must be"),
    ],
)
def test_format_label_refuses(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    args = {"run_id": "ab12", "qps": 1.0, "conn": 1, "size": 1, "mode": "both", **kwargs}
    with pytest.raises(ValueError, match=message):
        L.format_label(**args)


def test_plan_writes_labels_through_this_module() -> None:
    assert make_label("0badcafe", 2.5, 16, 0, "nomixer", "serversidecar") == (
        "0badcafe_qps_2.5_c_16_0_nomixer_serveronly"
    )


def test_the_runner_modes_are_the_label_modes() -> None:
    from meshperf import platform

    assert platform.MODES == L.MODES
    assert platform.MODE_LABEL == L.MODE_SUFFIX
