"""Sources that fight back: stray files, deep JSON, unknown versions, slow and endless servers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from conftest import load_fortio_cli
from meshperf import sources
from meshperf.errors import ExitCode, ResultsError
from meshperf.fortioresult import RESULT_FORMATS, RUN_FORMATS, FortioResult, read_integers
from meshperf.platform import RESULT_FORMAT
from meshperf.run import RUN_FORMAT
from meshperf.sources import load_dir, load_url, read_json

cli = load_fortio_cli()


@pytest.fixture(autouse=True)
def _no_prometheus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)


def _results_dir(tmp_path: Path, n: int = 2) -> Path:
    d = tmp_path / "results"
    d.mkdir()
    for i in range(n):
        fortio_data.write(d, fortio_data.http_result(labels=f"t{i}", threads=i + 1), f"t{i}.json")
    return d


# -- a stray file is named, not counted as a failed test ---------------------------------------


def test_ndjson_beside_results_is_no_failed_test(tmp_path: Path, capsys: Any) -> None:
    d = _results_dir(tmp_path)
    # The 2019 scripts' compiled-results.json: one JSON object per line.
    (d / "compiled-results.json").write_text(
        "".join(json.dumps({"Labels": f"x{i}", "p50": i}) + "\n" for i in range(35))
    )
    code = cli.main([str(d), "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == ExitCode.OK
    assert err == (
        f"fortio.py: ignored {d / 'compiled-results.json'}: not a fortio result: "
        "NDJSON of 35 objects\n"
    )
    assert out.splitlines()[-1] == "2 tests read, 2 written, 0 skipped, 1 file not fortio results"


def test_other_json_is_not_a_result_but_a_cut_result_is_a_failed_test(
    tmp_path: Path, capsys: Any
) -> None:
    d = _results_dir(tmp_path)
    (d / "package.json").write_text('{"name": "x"}')
    (d / "cut.json").write_text((d / "t0.json").read_text()[:300])
    code = cli.main([str(d), "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == ExitCode.TESTS_FAILED  # a half-written result is a test that went missing
    lines = sorted(err.splitlines())
    assert lines[0].startswith(f"fortio.py: ignored {d / 'package.json'}: not a fortio result")
    assert lines[1].startswith(f"fortio.py: skipped {d / 'cut.json'}: not valid JSON")
    assert out.splitlines()[-1] == "2 tests read, 2 written, 1 skipped, 1 file not fortio results"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 5000, "JSON nested too deeply to read"),  # RecursionError in json
        ('{"a": ' * 5000 + "1" + "}" * 5000, "JSON nested too deeply to read"),  # valid, too
        ('{"a": 1}\n{"b": 2}\n', "NDJSON of 2 objects"),
        ("1 2 3", "NDJSON of 3 values"),
    ],
)
def test_read_json_says_what_it_is(text: str, reason: str) -> None:
    with pytest.raises(sources.NotAResult, match=reason):
        read_json(text, "f.json")


def test_deeply_nested_file_does_not_stop_the_good_ones(tmp_path: Path, capsys: Any) -> None:
    d = _results_dir(tmp_path)
    (d / "deep.json").write_text("[" * 5000)
    code = cli.main([str(d), "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == ExitCode.OK
    assert "Traceback" not in err and "RecursionError" not in err
    assert err == (
        f"fortio.py: ignored {d / 'deep.json'}: not a fortio result: "
        "JSON nested too deeply to read\n"
    )
    assert out.splitlines()[-1].startswith("2 tests read, 2 written, 0 skipped")


def test_invalid_json_stays_a_failed_test() -> None:
    with pytest.raises(ResultsError, match="not valid JSON") as e:
        read_json('{"DurationHistogram": ', "f.json")
    assert not isinstance(e.value, sources.NotAResult)


def test_oversized_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _results_dir(tmp_path, 1)
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 1000)
    report = load_dir(d)
    assert report.results == []
    assert [s.reason for s in report.skipped] == ["more than 1000 bytes, more than a result can be"]


def test_endless_local_file_is_read_no_further_than_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 100_000)
    report = sources.load_files(["/dev/zero"])  # no regular file: no size to trust
    assert [s.reason for s in report.skipped] == [
        "more than 100000 bytes, more than a result can be"
    ]


# -- versions of our own blocks -----------------------------------------------------------------


def test_writers_write_a_version_the_readers_accept() -> None:
    assert RESULT_FORMAT in RESULT_FORMATS
    assert RUN_FORMAT in RUN_FORMATS


def test_unknown_result_block_version_is_a_clear_error() -> None:
    doc = fortio_data.http_result(extra={"meshperf": {"format": 99, "mode": "both"}})
    with pytest.raises(ResultsError) as e:
        FortioResult(doc, "r.json")
    assert str(e.value) == (
        "r.json: meshperf format version 99 is not one this meshperf reads (1)"
        " (written by a newer meshperf?)"
    )
    doc["meshperf"]["format"] = "1"
    with pytest.raises(ResultsError, match="is not a version number"):
        FortioResult(doc)
    del doc["meshperf"]["format"]  # before the field existed: version 1
    assert FortioResult(doc).mode == "both"


def test_unknown_run_file_version_keeps_results_without_its_metadata(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    block = {"format": 1, "run_id": "0badcafe", "mode": "both"}
    fortio_data.write(d, fortio_data.http_result(extra={"meshperf": block}), "t.json")
    (d / "run-0badcafe.json").write_text(
        json.dumps({"format": 7, "run_id": "0badcafe", "platform": "local", "tests": []})
    )
    report = load_dir(d)
    assert len(report.results) == 1 and report.runs == {}
    assert report.results[0].platform == ""  # the run file's facts were not taken
    assert [(Path(s.source).name, s.reason, s.test) for s in report.skipped] == [
        (
            "run-0badcafe.json",
            "run file format version 7 is not one this meshperf reads (1)"
            " (written by a newer meshperf?)",
            True,
        )
    ]
    (d / "run-0badcafe.json").write_text(
        json.dumps({"format": 1, "run_id": "0badcafe", "platform": "local", "tests": []})
    )
    assert load_dir(d).results[0].platform == "local"


# -- proto3 JSON (Nighthawk's fortio output) -----------------------------------------------------


def test_integer_strings_are_read_where_fortio_has_integers() -> None:
    doc = fortio_data.http_result([0.001, 0.002, 0.003, 0.004], retcodes={"200": 4})
    hist = doc["DurationHistogram"]
    proto3 = {
        **doc,
        "NumThreads": "4",
        "RetCodes": {"200": "4"},
        "DurationHistogram": {
            **{k: v for k, v in hist.items() if k not in ("Min", "Max")},
            "Count": "4",
            "Data": [{**b, "Count": str(b["Count"])} for b in hist["Data"]],
        },
    }
    r = FortioResult(proto3)
    assert r.count == 4 and r.num_threads == 4 and r.error_count == 0
    assert r.raw["DurationHistogram"]["Min"] == hist["Data"][0]["Start"]
    assert r.raw["DurationHistogram"]["Max"] == hist["Data"][-1]["End"]
    assert r.percentile(50) == FortioResult(doc).percentile(50)
    assert read_integers(doc) is doc  # fortio's own files are left as they are
    proto3["NumThreads"] = "four"
    with pytest.raises(ResultsError, match="NumThreads must be an integer"):
        FortioResult(proto3)


# -- URL sources: a total deadline and a size limit ---------------------------------------------


class _Server:
    """A bad HTTP server on 127.0.0.1: ``behave(conn)`` writes whatever it likes."""

    def __init__(self, behave: Callable[[socket.socket, threading.Event], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.behave = behave
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.behave(conn, self.stop)
            except OSError:
                pass

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


def _dribble_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b"{")
        time.sleep(0.1)


def _dribble_headers(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.is_set():
        conn.sendall(b"a")
        time.sleep(0.1)


def _endless_chunked(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    while not stop.is_set():
        conn.sendall(chunk)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    with _Server(request.param) as s:
        yield s


@pytest.mark.parametrize("server", [_dribble_body, _dribble_headers], indirect=True)
def test_a_slow_server_is_cut_at_the_deadline(server: _Server) -> None:
    url = f"http://127.0.0.1:{server.port}/data/x.json"
    started = time.monotonic()
    with pytest.raises(ResultsError) as e:
        load_url(url, timeout=3.0, deadline=1.0)
    took = time.monotonic() - started
    assert str(e.value) == f"{url}: not read within the 1 s deadline for this source"
    # Every byte arrives within the 3 s timeout: only the deadline can have ended it.
    assert took < 3.0, took


@pytest.mark.parametrize("server", [_endless_chunked], indirect=True)
def test_an_endless_body_is_cut_at_the_size_limit(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 1_000_000)
    url = f"http://127.0.0.1:{server.port}/data/x.json"
    with pytest.raises(ResultsError) as e:
        load_url(url, timeout=3.0, deadline=30.0)
    assert str(e.value) == f"{url}: more than 1000000 bytes, more than a result can be"


@pytest.mark.parametrize("server", [_dribble_body], indirect=True)
def test_fortio_py_deadline_flag(server: _Server, tmp_path: Path, capsys: Any) -> None:
    url = f"http://127.0.0.1:{server.port}/data/x.json"
    code = cli.main([url, "--deadline", "0.5", "-o", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == ExitCode.ERROR
    assert err.splitlines() == [
        f"fortio.py: skipped {url}: not read within the 0.5 s deadline for this source",
        "fortio.py: error: no test could be read; nothing written",
    ]


def test_resume_reader_skips_deeply_nested_files(tmp_path: Path) -> None:
    from meshperf.run import existing_results

    (tmp_path / "deep.json").write_text("[" * 5000)
    (tmp_path / "deep2.json").write_text('{"meshperf": ' * 3000)
    assert existing_results(tmp_path) == {}  # no RecursionError, nothing taken for a result
