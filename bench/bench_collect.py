"""How fast fortio.py turns result files into JSON + CSV, from a directory and from a fortio
report server on 127.0.0.1 (tests/fake_fortio_server.py, real HTTP, index.tsv listing).

    .venv/bin/python bench/bench_collect.py [--files 2000] [--repeat 3]

Generates copies of a real fortio result (shared/fixtures/fortio/http-istio-tools-1.3.1.json)
with varied labels and start times in a temp dir, then runs ``fortio.py``'s ``main`` on it.
Prints the best of ``--repeat`` runs as files/second.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "runner"), str(REPO / "tests")]

import fortio as fortio_cli  # noqa: E402  (runner/fortio.py)
from fake_fortio_server import FakeFortio  # noqa: E402
from meshperf import fortiojson  # noqa: E402

FIXTURE = REPO.parent / "shared" / "fixtures" / "fortio" / "http-istio-tools-1.3.1.json"
MODES = ("base", "serveronly", "both")


def generate(directory: Path, n: int) -> None:
    base = json.loads(FIXTURE.read_text())
    t0 = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
    for i in range(n):
        doc = dict(base)
        conn = (1, 2, 4, 8, 16, 32, 64)[i % 7]
        mode = MODES[(i // 7) % 3]
        doc["Labels"] = f"run{i // 21:04d}_qps_1000_c_{conn}_1024_{mode}"
        start = t0 + dt.timedelta(seconds=250 * i)
        doc["StartTime"] = fortiojson.go_time(start)
        name = fortiojson.gen_id(start, doc["Labels"]) + ".json"
        (directory / name).write_text(fortiojson.dumps(doc))


@contextlib.contextmanager
def serve_in_subprocess(directory: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fake_fortio_server.py"), str(directory)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"fake fortio server did not start: {url!r}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def timed(fn: Callable[[], int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        sink = io.StringIO()
        t = time.perf_counter()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            code = fn()
        best = min(best, time.perf_counter() - t)
        if code != 0:
            raise SystemExit(f"fortio.py exited {code}: {sink.getvalue()}")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshperf-bench-") as tmp:
        data = Path(tmp) / "results"
        data.mkdir()
        t = time.perf_counter()
        generate(data, args.files)
        print(f"generated {args.files} files in {time.perf_counter() - t:.2f} s")
        out = Path(tmp) / "out"

        def from_dir() -> int:
            return int(fortio_cli.main([str(data), "-o", str(out), "--overwrite"]))

        secs = timed(from_dir, args.repeat)
        print(f"directory:   {secs:.2f} s  {args.files / secs:8.0f} files/s")

        with FakeFortio.from_dir(data) as server:

            def from_server() -> int:
                return int(fortio_cli.main([server.url, "-o", str(out), "--overwrite"]))

            secs = timed(from_server, args.repeat)
        print(f"HTTP server: {secs:.2f} s  {args.files / secs:8.0f} files/s (server in-process)")

        # The same server in its own process, as a real fortio is: no GIL shared with us.
        with serve_in_subprocess(data) as url:

            def from_remote() -> int:
                return int(fortio_cli.main([url, "-o", str(out), "--overwrite"]))

            secs = timed(from_remote, args.repeat)
        print(f"HTTP server: {secs:.2f} s  {args.files / secs:8.0f} files/s (server process)")

        def aggregated() -> int:
            return int(fortio_cli.main([str(data), "-o", str(out), "--overwrite", "--aggregate"]))

        secs = timed(aggregated, args.repeat)
        print(f"--aggregate: {secs:.2f} s  {args.files / secs:8.0f} files/s (directory)")
        rows = json.loads(out.with_suffix(".json").read_text())
        print(f"({len(rows)} aggregated rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
