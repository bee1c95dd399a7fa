"""fortio.py's rows: what identifies a test is in the default columns; selecting by instants."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from conftest import load_fortio_cli
from meshperf import collect as col
from meshperf import fortiojson
from meshperf.errors import ExitCode
from meshperf.results import load_dir

cli = load_fortio_cli()


@pytest.fixture(autouse=True)
def _no_prometheus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)


def _write(d: Path, name: str, **kw: Any) -> None:
    start = kw.pop("start", fortio_data.START)
    doc = fortio_data.http_result(start=start, **kw)
    fortio_data.write(d, doc, f"{name}.json")


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_default_columns_say_variant_telemetry_protocol_platform(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    t = fortio_data.START
    # The 2019 Mixer-off variant beside the default one, and an istio/tools label.
    _write(d, "a", labels="ab12_qps_1000_c_1_1024_both", start=t)
    _write(d, "b", labels="ab12_qps_1000_c_1_1024_nomixer_both", start=t + dt.timedelta(1))
    _write(
        d, "c", labels="0a1b2c3d_qps_1000_c_1_1024_v2-sd-full-nullvm_x_no_istio",
        start=t + dt.timedelta(2),
    )  # fmt: skip
    assert cli.main([str(d), "-o", str(tmp_path / "o")]) == ExitCode.OK
    rows = _csv(tmp_path / "o.csv")
    for c in ("platform", "protocol", "extra_labels", "telemetry"):
        assert c in rows[0]
    got = [(r["mode"], r["protocol"], r["extra_labels"], r["telemetry"]) for r in rows]
    assert got == [
        ("both", "http", "", ""),
        ("both", "http", "nomixer", "nomixer"),
        ("baseline", "http", "v2-sd-full-nullvm_x", "v2-sd-full-nullvm"),
    ]


def test_variants_are_not_repeats_of_each_other(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    t = fortio_data.START
    _write(d, "a", labels="ab12_qps_1000_c_1_1024_both", latencies=[0.009] * 5, start=t)
    _write(
        d, "b", labels="cd34_qps_1000_c_1_1024_nomixer_both", latencies=[0.0013] * 5,
        start=t + dt.timedelta(hours=1),
    )  # fmt: skip
    rows = col.aggregate(col.collect(load_dir(d)).rows)
    assert sorted(r["extra_labels"] for r in rows) == ["", "nomixer"]
    assert all(r["repeats"] == 1 for r in rows)


def test_aggregate_keeps_fortio_versions_and_run_types_apart(tmp_path: Path, capsys: Any) -> None:
    d = tmp_path / "r"
    d.mkdir()
    t = fortio_data.START
    # A plain fortio run (no mode) repeated: same Labels, threads and QPS.
    _write(d, "v1a", labels="demo", version="1.3.1", start=t)
    _write(d, "v1b", labels="demo", version="1.3.1", start=t + dt.timedelta(minutes=1))
    _write(d, "v2", labels="demo", version="1.75.2", start=t + dt.timedelta(minutes=2))
    argv = [str(d), "--aggregate", "--csv", "Labels,Version,repeats", "-o", str(tmp_path / "o")]
    code = cli.main(argv)
    out, _ = capsys.readouterr()
    assert code == ExitCode.OK
    rows = _csv(tmp_path / "o.csv")
    assert sorted((r["Version"], r["repeats"]) for r in rows) == [("1.3.1", "2"), ("1.75.2", "1")]
    assert out.splitlines()[-1] == "3 tests read, 3 written as 2 aggregated rows, 0 skipped"
    # KEY_COLUMNS itself: an identity that forgot Version or RunType would merge them.
    assert {"Version", "RunType", "protocol", "telemetry", "extra_labels"} <= set(col.KEY_COLUMNS)


@pytest.mark.parametrize(
    ("selector", "picked"),
    [
        ("^2018-04-03T23", ["pdt"]),  # 16:32:58-07:00 is 23:32:58 UTC
        ("^2018-04-03T16", ["pdt"]),  # the StartTime as written: the 2019 rule still holds
        ("^2018-04-03T23:3", []),  # neither the text as written nor a whole period
        ("^2018-04-03T23:32-07:00", []),  # 23:32 in -07:00 is 06:32 UTC on the 4th
        ("^2018-04-04T06:32-07:00", []),
        ("^2018-04-03T23:32Z", ["pdt"]),
        ("^2018-04-04", ["utc"]),
        ("^2018-04", ["pdt", "utc"]),
    ],
)
def test_selector_compares_instants(tmp_path: Path, selector: str, picked: list[str]) -> None:
    d = tmp_path / "r"
    d.mkdir()
    pdt = dt.timezone(dt.timedelta(hours=-7))
    _write(d, "pdt", labels="pdt", start=dt.datetime(2018, 4, 3, 16, 32, 58, tzinfo=pdt))
    _write(d, "utc", labels="utc", start=dt.datetime(2018, 4, 4, 1, 0, 0, tzinfo=dt.UTC))
    assert fortiojson.go_time(dt.datetime(2018, 4, 3, 16, 32, 58, tzinfo=pdt)).endswith("-07:00")
    rows = col.collect(load_dir(d), selector=selector).rows
    assert sorted(r["Labels"] for r in rows) == picked


def test_since_until(tmp_path: Path, capsys: Any) -> None:
    d = tmp_path / "r"
    d.mkdir()
    for h in range(4):
        _write(d, f"h{h}", labels=f"h{h}", start=dt.datetime(2026, 3, 4, h, 0, tzinfo=dt.UTC))
    pst = ["--since", "2026-03-03T17:00-08:00", "--until", "2026-03-04T03"]  # 01:00 to 03:00 UTC
    code = cli.main([str(d), *pst, "-o", str(tmp_path / "o")])
    out, _ = capsys.readouterr()
    assert code == ExitCode.OK
    assert [r["Labels"] for r in _csv(tmp_path / "o.csv")] == ["h1", "h2"]
    assert out.splitlines()[-1] == "4 tests read, 2 written, 0 skipped, 2 not selected"

    code = cli.main([str(d), "--since", "2027", "-o", str(tmp_path / "p")])
    _, err = capsys.readouterr()
    assert code == ExitCode.ERROR
    assert err.splitlines()[-1] == "fortio.py: error: no test matches --since; nothing written"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday"], "'yesterday' is not a time"),
        (["--since", "2026-03-04", "--until", "2026-03-04"], "--since must be before --until"),
    ],
)
def test_bad_times_are_one_line_errors(
    tmp_path: Path, capsys: Any, argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main([str(tmp_path), *argv])
    _, err = capsys.readouterr()
    assert e.value.code != 0
    assert len(err.strip().splitlines()) == 1 and message in err


def test_time_period() -> None:
    u = dt.UTC
    assert col.time_period("2018-04-03T23") == (
        dt.datetime(2018, 4, 3, 23, tzinfo=u),
        dt.datetime(2018, 4, 4, 0, tzinfo=u),
    )
    assert col.time_period("2018-12") == (
        dt.datetime(2018, 12, 1, tzinfo=u),
        dt.datetime(2019, 1, 1, tzinfo=u),
    )
    assert col.time_period("2018-02-30") is None
    assert col.time_period("direct") is None
