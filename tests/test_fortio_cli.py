"""``runner/fortio.py`` end to end: real HTTP servers on 127.0.0.1 that serve fortio's listing
formats, results directories, and every kind of bad input.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from conftest import load_fortio_cli
from fake_fortio_server import FakeFortio, SilentServer, free_port_url
from meshperf.errors import ExitCode
from needs import missing

REPO = Path(__file__).resolve().parents[1]
FIXTURES = fortio_data.samples_dir()
ISTIO = FIXTURES / "http-istio-tools.json"


cli = load_fortio_cli()


@pytest.fixture(autouse=True)
def _no_prometheus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's $PROMETHEUS_URL must not leak into these tests.
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return int(code), out, err


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture
def fixture_dir(tmp_path: Path) -> Path:
    d = tmp_path / "results"
    shutil.copytree(FIXTURES, d)
    return d


def test_directory_default_prefix_in_cwd(
    fixture_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = run([str(fixture_dir)], capsys)
    assert code == ExitCode.OK, err
    assert out.splitlines() == [
        "meshperf-results.json",
        "meshperf-results.csv",
        "4 tests read, 4 written, 0 skipped",
    ]
    rows = read_csv(work / "meshperf-results.csv")
    assert list(rows[0]) == [
        "StartTime", "ActualDuration", "Labels", "mode", "mesh", "platform", "NumThreads",
        "conn", "RequestedQPS", "ActualQPS", "size", "protocol", "extra_labels", "telemetry",
        "p50", "p90", "p99", "p999", "errorPercent", "warnings",
    ]  # fmt: skip
    assert len(json.loads((work / "meshperf-results.json").read_text())) == 4
    # Refuses to overwrite, says so in one line, leaves the files alone.
    before = (work / "meshperf-results.csv").read_text()
    code, out, err = run([str(fixture_dir), "--csv", "Labels"], capsys)
    assert code == ExitCode.ERROR
    assert err.count("\n") == 1 and err.startswith("fortio.py: error: ")
    assert "already exists" in err and "--overwrite" in err
    assert (work / "meshperf-results.csv").read_text() == before
    code, _, _ = run([str(fixture_dir), "--csv", "Labels", "--overwrite"], capsys)
    assert code == ExitCode.OK
    assert (work / "meshperf-results.csv").read_text().splitlines()[0] == "Labels"


@pytest.mark.parametrize("listing", ["tsv", "html", "browse"])
@pytest.mark.parametrize("ui_path", ["/fortio/", "/"], ids=["server", "report"])
def test_server_gives_same_csv_as_directory(
    listing: str, ui_path: str, fixture_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    code, _, _ = run([str(fixture_dir), "-o", str(tmp_path / "dir")], capsys)
    assert code == ExitCode.OK
    with FakeFortio.from_dir(FIXTURES, ui_path=ui_path, listing=listing) as server:
        for i, url in enumerate([server.url, server.data_url, server.url + ui_path + "browse"]):
            prefix = tmp_path / f"srv{i}"
            code, out, err = run([url, "-o", str(prefix), "--timeout", "5"], capsys)
            assert code == ExitCode.OK, err
            assert (tmp_path / f"srv{i}.csv").read_text() == (tmp_path / "dir.csv").read_text()
            assert out.splitlines()[-1] == "4 tests read, 4 written, 0 skipped"
        # Each listing format was actually the one used: fallbacks only when needed.
        data, browse = ui_path + "data/", ui_path + "browse"
        asked = set(server.requests)
        assert data + "index.tsv" in asked
        assert (data in asked) == (listing != "tsv")
        # Even the browse URL given as a source is read through the data listings first.
        assert server.requests.count(browse) == (3 if listing == "browse" else 0)


def test_server_faults_keep_good_tests(tmp_path: Path, capsys: Any) -> None:
    files = {p.name: p.read_bytes() for p in FIXTURES.glob("*.json")}
    files["2024-01-01-000000_corrupt.json"] = b'{"RunType": "HTTP", "Labels": '
    with FakeFortio(
        files,
        fail={"grpc-ping.json": 500},
        truncate={"http-defaults.json"},
        tamper={"http-with-errors.json"},
    ) as server:
        code, out, err = run([server.url, "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.TESTS_FAILED
    rows = read_csv(tmp_path / "r.csv")
    assert [r["Labels"] for r in rows] == ["193ff770_qps_1000_c_1_1024_both"]
    lines = err.splitlines()
    assert len(lines) == 4, err
    assert all(line.startswith("fortio.py: skipped ") for line in lines)
    joined = "\n".join(lines)
    size = len(files["http-defaults.json"])
    assert "grpc-ping.json: HTTP 500" in joined
    assert f"http-defaults.json: got {size // 2} bytes, the listing says {size}" in joined
    assert "http-with-errors.json: MD5 differs from the listing's" in joined
    assert "corrupt.json: not valid JSON" in joined
    assert out.splitlines()[-1] == "1 test read, 1 written, 4 skipped"


def test_oversized_file_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from meshperf import sources

    sizes = {p.name: p.stat().st_size for p in FIXTURES.glob("*.json")}
    biggest = max(sizes, key=sizes.__getitem__)
    # A limit one byte under the largest sample: only that one is over it.
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", sizes[biggest] - 1)
    with FakeFortio.from_dir(FIXTURES) as server:
        code, _, err = run([server.url, "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.TESTS_FAILED
    assert err == (
        f"fortio.py: skipped {server.data_url}{biggest}: "
        f"{sizes[biggest]} bytes, more than a result can be\n"
    )
    assert len(read_csv(tmp_path / "r.csv")) == 3


def test_unreachable_source(tmp_path: Path, capsys: Any) -> None:
    url = free_port_url()
    code, out, err = run([url, "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.ERROR
    assert out == ""
    assert "cannot connect" in err and url in err
    assert err.splitlines()[-1] == "fortio.py: error: no test could be read; nothing written"
    assert list(tmp_path.iterdir()) == []


def test_unreachable_source_beside_good_one(fixture_dir: Path, tmp_path: Path, capsys: Any) -> None:
    code, out, err = run([free_port_url(), str(fixture_dir), "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.TESTS_FAILED
    assert len(read_csv(tmp_path / "r.csv")) == 4
    assert err.count("\n") == 1 and "cannot connect" in err


@pytest.mark.timeout(60)  # a hang fails here instead of stalling the suite
def test_server_that_never_answers(tmp_path: Path, capsys: Any) -> None:
    with SilentServer() as silent:
        code, _, err = run([silent.url, "-o", str(tmp_path / "r"), "--timeout", "0.3"], capsys)
    assert code == ExitCode.ERROR
    # The read timeout ended the wait (the server never answers, so nothing else could).
    assert "no answer within 0.3 s" in err


def test_empty_server(tmp_path: Path, capsys: Any) -> None:
    with FakeFortio({}, ui_path="/", listing="browse") as server:
        # Report mode with nothing saved: an empty browse page is a valid, empty listing.
        code, _, err = run([server.url, "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.ERROR
    assert err == "fortio.py: error: no test could be read; nothing written\n"


def test_http_errors_on_every_listing(tmp_path: Path, capsys: Any) -> None:
    with FakeFortio.from_dir(FIXTURES, ui_path="/") as server:
        url = server.url + "/elsewhere/data/"
        code, _, err = run([url, "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.ERROR
    first = err.splitlines()[0]
    assert first == (
        f"fortio.py: skipped {url}: no fortio result listing "
        "(index.tsv: HTTP 404; listing: HTTP 404; browse: HTTP 404)"
    )


def test_corrupt_and_count_zero_in_directory(
    fixture_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    (fixture_dir / "cut.json").write_text(ISTIO.read_text()[:2000])
    zero = json.loads(ISTIO.read_text())
    zero["DurationHistogram"] = {"Count": 0, "Min": 0, "Max": 0, "Sum": 0, "Avg": 0,
                                 "StdDev": 0, "Data": None}  # fmt: skip
    (fixture_dir / "zero.json").write_text(json.dumps(zero))
    code, out, err = run([str(fixture_dir), "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.TESTS_FAILED
    assert len(read_csv(tmp_path / "r.csv")) == 4
    reasons = sorted(err.splitlines())
    assert len(reasons) == 2
    assert reasons[0].startswith("fortio.py: skipped ") and "cut.json: not valid JSON" in reasons[0]
    assert reasons[1].endswith("zero.json: no calls recorded (Count 0)")
    assert out.splitlines()[-1] == "5 tests read, 4 written, 2 skipped"


def test_empty_directory(tmp_path: Path, capsys: Any) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run([str(empty), "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.ERROR
    assert err == "fortio.py: error: no test could be read; nothing written\n"
    assert not (tmp_path / "r.csv").exists()


def test_output_that_cannot_be_written(fixture_dir: Path, tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "r.json").mkdir()  # a directory where the JSON file should go
    code, _, err = run([str(fixture_dir), "-o", str(tmp_path / "r"), "--overwrite"], capsys)
    assert code == ExitCode.ERROR
    assert err.startswith(f"fortio.py: error: {tmp_path / 'r.json'}: cannot write (")
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "results"]  # no temp left
    code, _, err = run([str(fixture_dir), "-o", str(tmp_path / "no" / "r")], capsys)
    assert code == ExitCode.ERROR
    assert err == f"fortio.py: error: {tmp_path / 'no'}: output directory does not exist\n"


def test_unknown_column_before_any_work(tmp_path: Path, capsys: Any) -> None:
    with SilentServer() as silent:  # would hang if the list were checked after fetching
        code, _, err = run([silent.url, "--csv", "p50,p99,latency", "-o", str(tmp_path / "r")],
                           capsys)  # fmt: skip
    assert code == ExitCode.ERROR
    assert err.count("\n") == 1
    assert err.startswith("fortio.py: error: unknown column 'latency'; available: StartTime,")


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("fortioclient:8080", "did you mean http://fortioclient:8080 ?"),
        ("10.0.0.7", "did you mean http://10.0.0.7:8080 ?"),
        ("no/such/dir", None),
        ("ftp://127.0.0.1/x", "only http:// and https:// URLs are read"),
    ],
)
def test_source_neither_url_nor_path(
    source: str, hint: str | None, tmp_path: Path, capsys: Any
) -> None:
    code, _, err = run([source, "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.ERROR
    assert err.startswith(f"fortio.py: error: {source}: not a URL nor an existing file")
    assert err.count("\n") == 1
    assert (f"{hint})" in err) if hint else "hint" not in err


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://", "no host"),
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:99999", "Port out of range"),
    ],
)
def test_malformed_url(url: str, why: str, tmp_path: Path, capsys: Any) -> None:
    code, _, err = run([url, "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.ERROR
    assert err.startswith(f"fortio.py: error: {url}: not a valid URL (") and why in err
    assert err.count("\n") == 1


def test_2019_csv_list_and_selector(fixture_dir: Path, tmp_path: Path, capsys: Any) -> None:
    columns_2019 = (
        "StartTime,ActualDuration,Labels,NumThreads,ActualQPS,p50,p90,p99,"
        "cpu_mili_avg_telemetry_mixer,cpu_mili_max_telemetry_mixer,mem_MB_max_telemetry_mixer,"
        "cpu_mili_avg_fortioserver_deployment_proxy,cpu_mili_max_fortioserver_deployment_proxy,"
        "mem_MB_max_fortioserver_deployment_proxy,cpu_mili_avg_ingressgateway_proxy,"
        "cpu_mili_max_ingressgateway_proxy,mem_MB_max_ingressgateway_proxy"
    )
    code, out, _ = run(
        [str(fixture_dir), "--csv", columns_2019, "--selector", "_both", "-o", str(tmp_path / "r")],
        capsys,
    )
    assert code == ExitCode.OK
    rows = read_csv(tmp_path / "r.csv")
    assert len(rows) == 1 and ",".join(rows[0]) == columns_2019
    assert rows[0]["Labels"] == "193ff770_qps_1000_c_1_1024_both"
    assert rows[0]["cpu_mili_avg_telemetry_mixer"] == ""
    assert "3 not selected" in out
    code, _, err = run([str(fixture_dir), "--selector", "^1999", "-o", str(tmp_path / "s")], capsys)
    assert code == ExitCode.ERROR and "no test matches --selector" in err


def repeats_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rep"
    d.mkdir()
    base = json.loads(ISTIO.read_text())
    for i, (scale, label) in enumerate([(1.0, "aaaa1111"), (1.2, "bbbb2222"), (0.9, "cccc3333")]):
        doc = json.loads(json.dumps(base))
        for b in doc["DurationHistogram"]["Data"]:
            b["Start"] *= scale
            b["End"] *= scale
        h = doc["DurationHistogram"]
        h["Min"], h["Max"] = h["Data"][0]["Start"], h["Data"][-1]["End"]
        doc["Labels"] = f"{label}_qps_1000_c_1_1024_both"
        doc["StartTime"] = f"2019-07-1{i}T17:01:28Z"
        (d / f"r{i}.json").write_text(json.dumps(doc))
    return d


def test_aggregate(tmp_path: Path, capsys: Any) -> None:
    d = repeats_dir(tmp_path)
    code, out, _ = run([str(d), "--aggregate", "-o", str(tmp_path / "agg")], capsys)
    assert code == ExitCode.OK
    rows = read_csv(tmp_path / "agg.csv")
    assert len(rows) == 1
    row = rows[0]
    p50 = 1000.0  # the sample's p50 (1 ms, the first bucket's End); scaled copies around it
    assert float(row["repeats"]) == 3
    assert float(row["p50"]) == pytest.approx(p50, abs=0.002)
    assert float(row["p50_min"]) == pytest.approx(p50 * 0.9, abs=0.002)
    assert float(row["p50_max"]) == pytest.approx(p50 * 1.2, abs=0.002)
    assert float(row["p50_spread"]) == pytest.approx(0.3, rel=1e-5)
    assert row["mode"] == "both" and row["StartTime"] == "2019-07-10T17:01:28Z"
    assert "3 tests read, 3 written as 1 aggregated rows" in out


def test_summary_inside_results_dir_is_not_a_result(tmp_path: Path, capsys: Any) -> None:
    """docs/fortio.md's ``fortio.py results/ --aggregate -o results/summary``, then again."""
    d = repeats_dir(tmp_path)
    code, _, _ = run([str(d), "--aggregate", "-o", str(d / "summary")], capsys)
    assert code == ExitCode.OK and (d / "summary.json").is_file()
    code, out, err = run([str(d), "-o", str(tmp_path / "again")], capsys)
    assert code == ExitCode.OK, err
    assert "skipped" not in err
    assert "3 tests read, 3 written, 0 skipped" in out
    assert len(read_csv(tmp_path / "again.csv")) == 3


def test_help_mentions_environment(capsys: Any) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "$PROMETHEUS_URL" in out and "microseconds" in out


def test_bad_timeout_is_usage_error(capsys: Any) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main([str(FIXTURES), "--timeout", "0"])
    assert e.value.code == ExitCode.USAGE
    assert "must be > 0" in capsys.readouterr().err


def test_reader_that_closed_stdout_gets_no_traceback(fixture_dir: Path, tmp_path: Path) -> None:
    """``fortio.py results | head -1`` with head already gone: the files are still written."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_URL"}
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(
            [sys.executable, str(REPO / "runner" / "fortio.py"), str(fixture_dir)],
            cwd=tmp_path, stdout=w, stderr=subprocess.PIPE, text=True, timeout=60, env=env,
            check=False,
        )  # fmt: skip
    finally:
        os.close(w)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.returncode == ExitCode.ERROR
    assert (tmp_path / "meshperf-results.csv").exists()


def test_interpreter_without_requests_is_one_line(fixture_dir: Path, tmp_path: Path) -> None:
    """``python runner/fortio.py`` with a Python that lacks the project's packages (``-S``
    leaves site-packages out, as a system python without them would)."""
    proc = subprocess.run(
        [sys.executable, "-S", str(REPO / "runner" / "fortio.py"), str(fixture_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == ExitCode.ERROR
    assert proc.stderr.startswith("fortio.py: error: Python package ")
    assert proc.stderr.count("\n") == 1 and "make bootstrap" in proc.stderr, proc.stderr


def test_as_a_script(fixture_dir: Path, tmp_path: Path) -> None:
    """The 2019 scripts' way to run it: ``python runner/fortio.py SOURCE``, from any directory."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_URL"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "runner" / "fortio.py"), str(fixture_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "meshperf-results.csv").exists()
    proc = subprocess.run(
        [sys.executable, str(REPO / "runner" / "fortio.py"), "missing-host:8080"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == ExitCode.ERROR
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# -- CPU and memory from a real Prometheus -----------------------------------------------------

SCRAPE_S = 15.0
PROM_T0 = (int(time.time()) - 4 * 3600) // 3600 * 3600  # hours in the past: backfill rules


def prom_dataset() -> Any:
    from promserver import MB, Container, Dataset

    containers = (
        Container("fortioserver-6d5c9-aaaaa", "istio-proxy", cores=((0, 0.25),),
                  mem_mb=((0, 64.0),)),
        Container("fortioclient-7f8d-ccccc", "istio-proxy", cores=((0, 0.5),),
                  mem_mb=((0, 40.0),)),
    )  # fmt: skip
    assert MB == 1024 * 1024
    return Dataset(t0=PROM_T0, duration_s=1800, interval_s=SCRAPE_S, containers=containers)


@pytest.fixture(scope="module")
def prom_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import promserver

    if not promserver.have_prometheus():
        missing("prometheus/promtool missing")
    with promserver.running_prometheus(
        tmp_path_factory.mktemp("prom"), prom_dataset(), scrape_interval="15s"
    ) as url:
        yield url


def prom_results_dir(tmp_path: Path) -> Path:
    """A long test inside the series' span and a 5 s one too short for CPU rates."""
    import datetime as dt

    d = tmp_path / "res"
    d.mkdir()
    for name, offset_s, duration_ns in (("long", 300, 240_001_144_195), ("short", 900, 5 * 10**9)):
        doc = json.loads(ISTIO.read_text())
        start = dt.datetime.fromtimestamp(PROM_T0 + offset_s, tz=dt.UTC)
        # Another zone on purpose: the window must follow the instant, not the wall clock.
        doc["StartTime"] = start.astimezone(dt.timezone(dt.timedelta(hours=-7))).isoformat()
        doc["ActualDuration"] = duration_ns
        doc["RequestedDuration"] = "4m0s" if name == "long" else "5s"
        doc["Labels"] = f"ab12_qps_1000_c_1_1024_{name}_both"
        doc["meshperf"] = {
            "format": 1,
            "resources": {
                "fortioserver_deployment_proxy": {"cpu_mili": {"min": 1.0, "avg": 1.0, "max": 1.0}}
            },
        }
        (d / f"{name}.json").write_text(json.dumps(doc))
    return d


@pytest.mark.prometheus
def test_resources_from_prometheus(prom_url: str, tmp_path: Path, capsys: Any) -> None:
    d = prom_results_dir(tmp_path)
    code, out, err = run([str(d), "--prometheus", prom_url, "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.TESTS_FAILED, err
    rows = {r["Labels"]: r for r in read_csv(tmp_path / "r.csv")}
    long = rows["ab12_qps_1000_c_1_1024_long_both"]
    # Constant series: every statistic is the level itself.
    for stat in ("min", "avg", "max"):
        assert float(long[f"cpu_mili_{stat}_fortioserver_deployment_proxy"]) == pytest.approx(250)
        assert float(long[f"cpu_mili_{stat}_fortio_deployment_proxy"]) == pytest.approx(500)
        assert float(long[f"mem_MB_{stat}_fortioserver_deployment_proxy"]) == pytest.approx(64)
        assert float(long[f"mem_MB_{stat}_fortio_deployment_proxy"]) == pytest.approx(40)
    short = rows["ab12_qps_1000_c_1_1024_short_both"]
    assert short["p50"] == long["p50"]  # kept with its latency
    assert short["cpu_mili_avg_fortio_deployment_proxy"] == ""
    assert err.splitlines() == [
        # Its own samples stand in, and the message says so.
        "fortio.py: ab12_qps_1000_c_1_1024_short_both: CPU/memory from the result's own samples,"
        " not Prometheus (test too short for CPU/memory: 5s < 92s (skip 62s = rate window 60s"
        " + 2s at the start, 30s at the end, for 15s scrapes))"
    ]
    assert out.splitlines()[-1] == (
        "2 tests read, 2 written, 0 skipped, 1 with their own CPU/memory samples, not Prometheus's"
    )


@pytest.mark.prometheus
def test_prometheus_url_from_environment(
    prom_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    d = prom_results_dir(tmp_path)
    (d / "short.json").unlink()
    monkeypatch.setenv("PROMETHEUS_URL", prom_url)
    code, _, err = run([str(d), "-o", str(tmp_path / "env")], capsys)
    assert code == ExitCode.OK, err
    row = read_csv(tmp_path / "env.csv")[0]
    assert float(row["cpu_mili_avg_fortioserver_deployment_proxy"]) == pytest.approx(250)
    # --prometheus '' turns it off: the result's own samples are used.
    code, _, _ = run([str(d), "--prometheus", "", "-o", str(tmp_path / "own")], capsys)
    assert code == ExitCode.OK
    row = read_csv(tmp_path / "own.csv")[0]
    assert float(row["cpu_mili_avg_fortioserver_deployment_proxy"]) == 1.0


@pytest.mark.prometheus
def test_prom_selector(prom_url: str, tmp_path: Path, capsys: Any) -> None:
    d = prom_results_dir(tmp_path)
    (d / "short.json").unlink()
    base = [
        str(d),
        "--prometheus",
        prom_url,
        "--csv",
        "Labels,cpu_mili_avg_fortio_deployment_proxy",
    ]
    code, _, err = run([*base, "--prom-selector", 'namespace="twopods"', "-o", str(tmp_path / "a")],
                       capsys)  # fmt: skip
    assert code == ExitCode.OK, err
    assert float(read_csv(tmp_path / "a.csv")[0]["cpu_mili_avg_fortio_deployment_proxy"]) == (
        pytest.approx(500)
    )
    elsewhere = ["--prom-selector", 'namespace="elsewhere"']
    code, _, err = run([*base, *elsewhere, "-o", str(tmp_path / "b")], capsys)
    assert code == ExitCode.TESTS_FAILED
    assert err == (
        "fortio.py: ab12_qps_1000_c_1_1024_long_both: CPU/memory from the result's own samples,"
        " not Prometheus (Prometheus has no proxy CPU/memory series in the window)\n"
    )
    assert read_csv(tmp_path / "b.csv")[0]["cpu_mili_avg_fortio_deployment_proxy"] == ""


def test_bad_prom_selector(tmp_path: Path, capsys: Any) -> None:
    code, _, err = run([str(FIXTURES), "--prometheus", "http://127.0.0.1:9", "--prom-selector",
                        "namespace=", "-o", str(tmp_path / "r")], capsys)  # fmt: skip
    assert code == ExitCode.ERROR
    assert err.startswith("fortio.py: error: Prometheus: bad selector 'namespace='")
    assert err.count("\n") == 1
    assert not (tmp_path / "r.csv").exists()


def test_prometheus_unreachable_keeps_latency(tmp_path: Path, capsys: Any) -> None:
    d = tmp_path / "many"
    d.mkdir()
    for i in range(5):
        doc = json.loads(ISTIO.read_text())
        doc["Labels"] = f"t{i}"
        (d / f"t{i}.json").write_text(json.dumps(doc))
    doc["Labels"], doc["ActualDuration"] = "a0", 0
    (d / "a0.json").write_text(json.dumps(doc))  # same StartTime: sorted first by name
    url = free_port_url()
    code, out, err = run([str(d), "--prometheus", url, "--timeout", "1", "-o", str(tmp_path / "r")],
                         capsys)  # fmt: skip
    assert code == ExitCode.TESTS_FAILED
    assert len(read_csv(tmp_path / "r.csv")) == 6
    lines = err.splitlines()
    assert len(lines) == 6
    assert lines[0] == "fortio.py: a0: kept with latency only (no ActualDuration recorded)"
    prom_down = "kept with latency only (Prometheus: cannot reach Prometheus"
    assert all(prom_down in x for x in lines[1:4])
    # After three failures in a row the rest are not tried (each would wait for a timeout).
    assert all("Prometheus not queried after 3 failures" in x for x in lines[4:])
    assert out.splitlines()[-1] == "6 tests read, 6 written, 0 skipped, 6 without CPU/memory"


def test_same_tests_from_server_and_directory_count_once(
    fixture_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    with FakeFortio.from_dir(FIXTURES) as server:
        code, out, err = run([server.url, str(fixture_dir), "-o", str(tmp_path / "r")], capsys)
    assert code == ExitCode.OK, err
    rows = read_csv(tmp_path / "r.csv")
    assert len(rows) == 4
    assert out.splitlines()[-1] == "8 tests read, 4 written, 0 skipped, 4 duplicates ignored"
    full = json.loads((tmp_path / "r.json").read_text())
    assert all(row["source"].startswith(server.data_url) for row in full)  # first source wins
