"""The matrix plan: value types, mode selection, labels, config keys, time estimate."""

from __future__ import annotations

import argparse

import pytest

from meshperf import plan as P
from meshperf.errors import ConfigError
from meshperf.platform import MODE_LABEL


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", [1]), ("1,4,16", [1, 4, 16]), (" 2, 8 ", [2, 8]), ("4,4,1", [4, 1])],
)
def test_csv_ints_accepts(text: str, expected: list[int]) -> None:
    assert P.csv_ints(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("16,,abc", "invalid connection list '16,,abc': empty item"),
        ("", "invalid connection list '': empty item"),
        ("abc", "invalid connection count 'abc' in 'abc': not an integer"),
        ("-4", "invalid connection count -4 in '-4': must be >= 1"),
        ("0", "invalid connection count 0 in '0': must be >= 1"),
        ("2.5", "invalid connection count '2.5' in '2.5': not an integer"),
    ],
)
def test_csv_ints_rejects(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as e:
        P.csv_ints(text)
    assert str(e.value) == message


def test_csv_floats() -> None:
    assert P.csv_floats("1000,4000") == [1000.0, 4000.0]
    assert P.csv_floats("0,2.5") == [0.0, 2.5]
    for bad in ("-1", "nan", "inf", "1,,2", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            P.csv_floats(bad)
    for bad in ("inf", "nan", "1,-inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a finite number"):
            P.csv_floats(bad)


def test_labels_validation() -> None:
    assert P.label_text("nomixer") == "nomixer"
    assert P.label_text("a.b-c_D9") == "a.b-c_D9"
    assert P.label_text("x" * 63) == "x" * 63
    for bad in ("x" * 64, "a b", "a/b", "$(rm)", "a;b", "é"):
        with pytest.raises(argparse.ArgumentTypeError):
            P.label_text(bad)


def test_no_telemetry_suffix_counts_towards_the_label_limit() -> None:
    assert P.run_labels("") == ""
    assert P.run_labels("", telemetry=False) == "notelemetry"
    assert P.run_labels("nomixer", telemetry=False) == "nomixer_notelemetry"
    assert P.run_labels("x" * 51, telemetry=False) == "x" * 51 + "_notelemetry"  # 63 in all
    assert P.run_labels("x" * 55) == "x" * 55  # without the suffix it fits
    with pytest.raises(argparse.ArgumentTypeError) as e:
        P.run_labels("x" * 52, telemetry=False)
    msg = str(e.value)
    assert repr("x" * 52 + "_notelemetry") in msg  # the label as it would be, not what was typed
    assert "64 characters" in msg and "--no-telemetry adds '_notelemetry'" in msg
    assert "51 characters for --labels" in msg


def test_ingress_address() -> None:
    assert P.ingress_address("10.0.0.7") == "10.0.0.7"
    assert P.ingress_address("gw.example:8080") == "gw.example:8080"
    for bad in ("http://gw/", "gw:0", "gw:70000", "gw:x", "-gw", "a b"):
        with pytest.raises(argparse.ArgumentTypeError):
            P.ingress_address(bad)


def test_run_id() -> None:
    rid = P.new_run_id()
    assert P.run_id_text(rid) == rid
    assert rid != P.new_run_id()
    for bad in ("0123ABCD", "0123abc", "0123abcde", "xyz12345"):
        with pytest.raises(argparse.ArgumentTypeError):
            P.run_id_text(bad)


def test_select_modes_2019_switches() -> None:
    def sel(**kw: object) -> tuple[str, ...]:
        args = {"baseline": None, "serversidecar": None, "clientsidecar": None, "ingress": False}
        args.update(kw)
        return P.select_modes(mesh="istio", **args)  # type: ignore[arg-type]

    assert sel() == ("both",)
    assert sel(baseline=True) == ("baseline", "both")
    assert sel(serversidecar=True, baseline=True) == ("baseline", "serversidecar", "both")
    assert sel(ingress=True) == ("both", "ingress")
    assert sel(clientsidecar=False, baseline=True) == ("baseline",)
    assert sel(baseline=False) == ("both",)
    with pytest.raises(ConfigError, match="no sidecar mode selected"):
        sel(clientsidecar=False)


def test_select_modes_mesh_none() -> None:
    kw = {"baseline": None, "serversidecar": None, "clientsidecar": None, "ingress": False}
    assert P.select_modes(mesh="none", **kw) == ("baseline",)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--serversidecar"):
        P.select_modes(mesh="none", **dict(kw, serversidecar=True))  # type: ignore[arg-type]


def test_label_shape_is_the_2019_one() -> None:
    # The 2019 runner wrote e.g. 193ff770_qps_1000_c_1_1024_both (fixture file's label).
    label_2019 = "193ff770_qps_1000_c_1_1024_both"
    assert P.make_label("193ff770", 1000.0, 1, 1024, "", "both") == label_2019
    assert (
        P.make_label("0badcafe", 2.5, 16, 0, "nomixer", "serversidecar")
        == "0badcafe_qps_2.5_c_16_0_nomixer_serveronly"
    )
    maxed = "0badcafe_qps_max_c_4_1024_base"
    assert P.make_label("0badcafe", 0.0, 4, 1024, "", "baseline") == maxed
    for mode, suffix in MODE_LABEL.items():
        assert P.make_label("0badcafe", 1.0, 1, 1, "", mode).endswith("_" + suffix)


def test_build_plan_order_and_fields() -> None:
    plan = P.build_plan(
        conns=[1, 4],
        qpss=[100.0, 200.0],
        duration=3,
        modes=("baseline", "both"),
        platform="local",
        mesh="istio",
        run_id="0badcafe",
        repeat=2,
        extra_labels="x",
        uniform=True,
        resolution=0.001,
    )
    assert len(plan.tests) == 2 * 2 * 2 * 2
    cells = [(t.repeat, t.conn, t.qps, t.mode) for t in plan.tests]
    assert cells[:4] == [(0, 1, 100.0, "baseline"), (0, 1, 100.0, "both"),
                         (0, 1, 200.0, "baseline"), (0, 1, 200.0, "both")]  # fmt: skip
    assert cells[8:] == [(1, c, q, m) for c, q, m in [(t[1], t[2], t[3]) for t in cells[:8]]]
    t = plan.tests[3]
    assert t.labels == "0badcafe_qps_200_c_1_1024_x_both"
    assert (t.extra_labels, t.run_id, t.size, t.duration) == ("x", "0badcafe", 1024, 3.0)
    assert t.uniform and t.arrival == "uniform" and t.resolution == 0.001


def test_qps_per_connection_multiplies() -> None:
    plan = P.build_plan(
        conns=[4, 16], qpss=[100.0], duration=1, modes=("both",), platform="local",
        mesh="istio", run_id="0badcafe", qps_per_connection=True,
    )  # fmt: skip
    assert [t.qps for t in plan.tests] == [400.0, 1600.0]
    assert plan.tests[1].labels == "0badcafe_qps_1600_c_16_1024_both"


def test_estimate_counts_overhead() -> None:
    plan = P.build_plan(
        conns=[1, 4], qpss=[500.0], duration=3, modes=("baseline", "both"), platform="local",
        mesh="istio", run_id="0badcafe",
    )  # fmt: skip
    per, start = P.PER_TEST_OVERHEAD["local"], P.START_OVERHEAD["local"]
    assert plan.test_seconds == 12
    assert plan.estimated_seconds() == pytest.approx(start + 4 * (3 + per))
    assert plan.estimated_seconds(plan.tests[:1]) == pytest.approx(start + 3 + per)
    assert plan.estimated_seconds([]) == 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("conn", nargs="?", type=P.csv_ints)
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--no-telemetry", action="store_true")
    p.add_argument("--mesh", choices=P.MESHES, default="istio")
    p.add_argument("--ingress", nargs="?", const="", default=None, type=P.ingress_address)
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--config")
    return p


def test_config_defaults_converts_like_the_command_line() -> None:
    d = P.config_defaults(
        _parser(),
        {"conn": [1, 4], "no-baseline": True, "no_telemetry": True, "mesh": "linkerd",
         "ingress": True, "verbose": 2},
    )  # fmt: skip
    assert d == {"conn": [1, 4], "baseline": False, "no_telemetry": True, "mesh": "linkerd",
                 "ingress": "", "verbose": 2}  # fmt: skip
    assert P.config_defaults(_parser(), {"conn": "2,8", "baseline": True, "ingress": "gw:80"}) == {
        "conn": [2, 8], "baseline": True, "ingress": "gw:80",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bogus": 1}, "cfg: unknown option 'bogus'"),
        ({"config": "x.yaml"}, "cfg: unknown option 'config'"),
        ({"mesh": "consul"}, "cfg: mesh: invalid choice 'consul'"),
        ({"conn": "0"}, "cfg: conn: invalid connection count 0"),
        ({"baseline": "yes"}, "cfg: baseline: expected true or false"),
        ({"conn": True}, "cfg: conn: expected a value, not true/false"),
        ({"verbose": -1}, "cfg: verbose: expected a count >= 0"),
    ],
)
def test_config_defaults_rejects(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        P.config_defaults(_parser(), config, "cfg")
    assert str(e.value).startswith(message)


def test_load_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "c.yaml"
    f.write_text("conn: [1, 4]\nno-baseline: true\n")
    assert P.load_config(f) == {"conn": [1, 4], "no-baseline": True}
    f.write_text("")
    assert P.load_config(f) == {}
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        P.load_config(f)
    f.write_text("conn: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        P.load_config(f)
    with pytest.raises(ConfigError, match="cannot read config"):
        P.load_config(tmp_path / "missing.yaml")
