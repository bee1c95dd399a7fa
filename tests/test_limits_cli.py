"""Issue 16 item 19 and issue 10's CLI pieces: one exit-code table and one error line for all
four scripts, the interpreter in "next:" lines, one atomic writer.

The scripts run as a user runs them, in a subprocess with the project's interpreter.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from meshperf import atomic
from meshperf.errors import ExitCode
from meshperf.run import next_steps

ROOT = Path(__file__).resolve().parents[1]


def script(name: str, *argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig"}
    return subprocess.run(
        [sys.executable, str(ROOT / "runner" / name), *argv],
        capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
    )  # fmt: skip


# argparse refuses the command line: exit 2 (USAGE) and one line, never the usage block.
USAGE_ERRORS = [
    ("runner.py", ["1", "10"], "runner.py: error: the following arguments are required: DURATION"),
    ("runner.py", ["1", "10", "1", "--bogus"], "runner.py: error: unrecognized arguments: --bogus"),
    ("fortio.py", [], "fortio.py: error: the following arguments are required: SOURCE"),
    ("fortio.py", ["x", "--bogus"], "fortio.py: error: unrecognized arguments: --bogus"),
    ("graph.py", [], "graph.py: error: the following arguments are required: CSV, METRIC"),
    ("graph.py", ["a.csv", "p99", "--bogus"], "graph.py: error: unrecognized arguments: --bogus"),
    ("loadgen.py", ["load", "-c", "x", "http://127.0.0.1:1/"],
     "loadgen: error: argument -c/--c: 'x' is not an integer"),
    ("loadgen.py", ["server", "-workers", "1000000"],
     "loadgen: error: argument -workers/--workers: -workers 1000000 is above the bound of"),
]  # fmt: skip

# Bad input found after parsing (files, combinations, configuration): exit 1 (ERROR).
INPUT_ERRORS = [
    ("runner.py", ["1", "10", "1", "--mesh", "linkerd", "--platform", "local", "--dry-run"],
     "runner.py: error: --mesh linkerd needs a cluster"),
    ("fortio.py", ["/nonexistent/results"], "fortio.py: error: /nonexistent/results: "),
    ("graph.py", ["/nonexistent/x.csv", "p99"], "graph.py: error: /nonexistent/x.csv: "),
    ("loadgen.py", ["load", "-t", "1s", "ftp://x"], "loadgen: error: unsupported URL scheme"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "argv", "start"), USAGE_ERRORS)
def test_usage_errors_are_one_line_and_exit_2_in_every_script(
    name: str, argv: list[str], start: str
) -> None:
    proc = script(name, *argv)
    assert proc.returncode == ExitCode.USAGE == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # not argparse's usage block
    assert proc.stderr.startswith(start), proc.stderr
    assert proc.stderr.endswith(" (see --help)\n"), proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(("name", "argv", "start"), INPUT_ERRORS)
def test_bad_input_is_one_line_and_exit_1_in_every_script(
    name: str, argv: list[str], start: str
) -> None:
    proc = script(name, *argv)
    assert proc.returncode == ExitCode.ERROR == 1, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(start), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_hint_rides_on_the_error_line() -> None:
    proc = script("runner.py", "1", "10", "1", "--mesh", "linkerd", "--platform", "local")
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.rstrip().endswith(
        " (hint: use --platform kubernetes with a kubeconfig whose cluster runs that mesh)"
    )


def test_the_exit_code_table_is_the_same_in_readme_and_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    docs = (ROOT / "docs" / "runner.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} (`{code.name}`) |" in docs, code
    assert "2 bad command line" in readme and "1 other bad input" in readme
    assert "4 the output dir refused" in readme


# ---- "next:" names the interpreter that works -----------------------------------------------


def test_next_steps_name_the_interpreter_that_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pasted into a shell whose PATH has no project python, the printed lines still work."""
    monkeypatch.chdir(ROOT)
    results = ROOT / "tests" / "data"  # any directory: only the command's shape matters here
    lines = next_steps(results).splitlines()[1:]
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] != "python", line
        assert os.path.samefile(argv[0], sys.executable), line
        if sys.executable.startswith(str(ROOT) + os.sep):
            assert not os.path.isabs(argv[0]), line  # relative to the checkout, as typed
    # The first line really runs from a bare PATH (no venv activated).
    out = tmp_path / "summary"
    argv = shlex.split(lines[0])
    argv[argv.index("--output") + 1] = str(out)
    argv[argv.index("--output") - 1] = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
    assert "is not installed" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("fortio.py: "), proc.stderr  # fortio.py itself answered


# ---- one atomic writer ----------------------------------------------------------------------


def test_atomic_writer_honours_the_umask_and_leaves_no_temp(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        p = atomic.write_atomic(tmp_path / "a.json", "{}\n")
    finally:
        os.umask(old)
    assert p.read_text() == "{}\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o640  # 0666 & ~027, as open() would give
    assert [x.name for x in tmp_path.iterdir()] == ["a.json"]


def test_atomic_writer_refuses_to_clobber_unless_asked(tmp_path: Path) -> None:
    p = tmp_path / "out.csv"
    atomic.write_atomic(p, "one")
    with pytest.raises(FileExistsError):
        atomic.write_atomic(p, "two", overwrite=False)
    assert p.read_text() == "one"
    atomic.write_atomic(p, b"three")
    assert p.read_text() == "three"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.csv"]


def test_atomic_writer_failure_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text("old")
    with pytest.raises(TypeError):
        atomic.write_atomic(p, 12345)  # type: ignore[arg-type]
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_two_writers_never_share_a_temp_name(tmp_path: Path) -> None:
    """The load generator used ``<name>.tmp``: two writers of one file clobbered each other's
    temp file. mkstemp names are unique, so both writes complete whole."""
    import threading

    p = tmp_path / "same.json"
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(50):
                atomic.write_atomic(p, text)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=write, args=(c * 10000,)) for c in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert p.read_text() in ("a" * 10000, "b" * 10000)
    assert [x.name for x in tmp_path.iterdir()] == ["same.json"]
